"""The explanation's one schema: its record dataclasses (:mod:`audiolime.explanation.document`),
whose fields and field metadata drive both ``explanation.json`` and the gRPC ``Explanation``.

Field metadata (``field(metadata=meta(...))``): ``json`` is the field's key in the document, dotted for a nested
object (``window.start_s``); ``proto`` its field name in the message, when it differs;
``items`` turns a ``dict`` into repeated ``(key, value)`` messages. Optional fields (a default)
may be missing when reading, which is how older documents still load. Adding a field: one
dataclass field (and its ``.proto`` field; ``tests/test_proto.py`` fails until both agree).

No protobuf import here: :func:`to_proto`/:func:`from_proto` work on the messages they are given.
"""

from __future__ import annotations

import dataclasses
import json as _json
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

T = TypeVar("T")


def meta(json: str | None = None, proto: str | None = None, items: tuple[str, str] | None = None) -> dict:
    """A field's names in the document and in the message: ``field(metadata=meta(...))``."""
    return {k: v for k, v in (("json", json), ("proto", proto), ("items", items)) if v is not None}


def json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("json", f.name)


def proto_name(f: dataclasses.Field) -> str:
    return f.metadata.get("proto", f.name)


def _optional(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


# -- JSON -----------------------------------------------------------------------------------------
def to_json(value: Any) -> Any:
    """A record (or a value inside one) as JSON-ready Python objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            *parents, last = json_key(f).split(".")
            node = out
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = to_json(getattr(value, f.name))
        return out
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], data: Any) -> T:
    """The record ``cls`` from :func:`to_json`'s layout; a missing required key is ``KeyError``,
    a value of the wrong shape ``TypeError``/``ValueError``/``AttributeError``."""
    return cast(T, _read(cls, data))


def _read(tp: Any, data: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, Mapping):
            raise TypeError(f"expected an object for {getattr(tp, '__name__', tp)}, got {type(data).__name__}")
        hints = get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            node: Any = data
            for part in json_key(f).split("."):
                if not isinstance(node, Mapping) or part not in node:
                    node = dataclasses.MISSING
                    break
                node = node[part]
            if node is dataclasses.MISSING:
                if _optional(f):
                    continue
                raise KeyError(json_key(f))
            kwargs[f.name] = _read(hints[f.name], node)
        return cast(Any, tp)(**kwargs)
    if origin is tuple:
        if not isinstance(data, (list, tuple)):
            raise TypeError(f"expected a list, got {type(data).__name__}")
        return tuple(_read(args[0], v) for v in data)
    if origin is dict:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return {str(k): _read(args[1], v) for k, v in data.items()}
    return data


# -- the gRPC message -------------------------------------------------------------------------------
def load_document(data: bytes | str, build: Callable[[dict], T], reads: tuple[int, ...], what: str,
                  versioned: str, kind: str | None = None) -> T:
    """Parse a JSON document: an object (of ``kind``, when documents carry one) whose ``version`` is
    in ``reads``, built by ``build``; anything else is ``InvalidInput`` naming ``what`` ("an
    explanation") or, for the version, ``versioned`` ("document") and saying what is wrong."""
    from audiolime.errors import InvalidInput

    try:
        d = _json.loads(data)
        if not isinstance(d, dict) or (kind is not None and d.get("kind") != kind):
            raise InvalidInput(f"not {what} document: expected a JSON object"
                               + (f" of kind {kind!r}" if kind is not None else ""))
        if d.get("version") not in reads:
            raise InvalidInput(f"{versioned} version {d.get('version')!r} is not one this audiolime reads "
                               f"({', '.join(map(str, reads))})")
        return build(d)
    except InvalidInput:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc).split("\n")[0]
        raise InvalidInput(f"not {what} document: {why}") from None


def to_proto(record: Any, message: Any) -> Any:
    """Fill ``message`` (a protobuf message) from ``record``; returns it. None leaves a field unset."""
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None:
            continue
        name = proto_name(f)
        if dataclasses.is_dataclass(value):
            sub = getattr(message, name)
            sub.SetInParent()
            to_proto(value, sub)
        elif "items" in f.metadata:
            key, val = f.metadata["items"]
            for k, v in value.items():
                getattr(message, name).add(**{key: k, val: v})
        elif isinstance(value, Mapping):
            getattr(message, name).update(value)
        elif isinstance(value, tuple):
            if value and dataclasses.is_dataclass(value[0]):
                for v in value:
                    to_proto(v, getattr(message, name).add())
            else:
                getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def from_proto(cls: type[T], message: Any) -> T:
    """The record ``cls`` from a message :func:`to_proto` filled (an unset optional message and an
    empty optional string are None)."""
    return cast(T, _unproto(cls, message))


def _unproto(tp: Any, message: Any) -> Any:
    hints = get_type_hints(tp)
    kwargs = {}
    for f in dataclasses.fields(tp):
        ftp, name = hints[f.name], proto_name(f)
        optional = get_origin(ftp) in (Union, types.UnionType) and type(None) in get_args(ftp)
        if optional:
            (ftp,) = [a for a in get_args(ftp) if a is not type(None)]
        value = getattr(message, name)
        if dataclasses.is_dataclass(ftp):
            kwargs[f.name] = None if optional and not message.HasField(name) else _unproto(ftp, value)
        elif "items" in f.metadata:
            key, val = f.metadata["items"]
            kwargs[f.name] = {getattr(m, key): getattr(m, val) for m in value}
        elif get_origin(ftp) is dict:
            kwargs[f.name] = dict(value)
        elif get_origin(ftp) is tuple:
            (item,) = get_args(ftp)[:1]
            kwargs[f.name] = tuple(_unproto(item, v) if dataclasses.is_dataclass(item) else v for v in value)
        else:
            kwargs[f.name] = None if optional and value == "" else value
    return tp(**kwargs)


def wire_names(cls: type) -> set[str]:
    """The message field names a record fills (for the test that keeps both in step)."""
    return {proto_name(f) for f in dataclasses.fields(cls)}
