"""The tagger model server core: TF Serving's model/version/signature semantics over numpy, no gRPC.

:class:`ModelServer` holds every served model version (a :class:`ServedVersion`: a
:class:`~audiolime.tagger.savedmodel.LocalTagger` plus the SavedModel's ``SignatureDef`` map and,
with batching on, one :class:`~audiolime.tagger.batching.Batcher` per batchable signature).
It resolves ``(name, version | version_label)`` like TF Serving (newest served version when
none is given), validates inputs against the signature (names, dtype, shape) and raises
:mod:`audiolime.errors` exceptions that the gRPC front maps to status codes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from audiolime import errors
from audiolime.server import metrics
from audiolime.tagger.batching import Batcher
from audiolime.tagger.config import BatchingOptions, ConfigError, ModelConfig, select_versions
from audiolime.tagger.savedmodel import DEFAULT_SIGNATURE, LocalTagger, list_versions

log = logging.getLogger(__name__)

AVAILABLE, END = "AVAILABLE", "END"  # tensorflow.serving.ModelVersionStatus.State names


def dtype_name(dtype: np.dtype) -> str:
    """``float32 (DT_FLOAT)``-style name of a numpy dtype."""
    try:
        enum = tf.dtypes.as_dtype(dtype).as_datatype_enum
        return f"{np.dtype(dtype).name} ({types_pb2.DataType.Name(enum)})"
    except TypeError:
        return str(dtype)


@dataclass(frozen=True)
class TensorSpec:
    dtype: np.dtype
    shape: tuple[int, ...] | None  # -1 = any size; None = unknown rank

    @classmethod
    def of(cls, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        dtype = np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
        shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
        return cls(dtype, shape)

    def describe(self) -> str:
        return "any shape" if self.shape is None else str(list(self.shape))


@dataclass(frozen=True)
class SignatureSpec:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def batchable(self) -> bool:
        """Every input and output is ``[batch, ...]``, so requests can be concatenated."""
        specs = [*self.inputs.values(), *self.outputs.values()]
        return bool(self.inputs) and all(s.shape and s.shape[0] == -1 for s in specs)

    def validate(self, inputs: Mapping[str, np.ndarray]) -> None:
        """InvalidInput unless ``inputs`` has exactly this signature's names, dtypes and shapes."""
        if set(inputs) != set(self.inputs):
            missing, extra = sorted(set(self.inputs) - set(inputs)), sorted(set(inputs) - set(self.inputs))
            raise errors.InvalidInput(
                f"input names {sorted(inputs)} do not match signature {self.name!r} inputs {sorted(self.inputs)}"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else ""))
        batch = set()
        for key, spec in self.inputs.items():
            x = inputs[key]
            if x.dtype != spec.dtype:
                raise errors.InvalidInput(f"input {key!r} of signature {self.name!r} must be "
                                          f"{dtype_name(spec.dtype)}, got {dtype_name(x.dtype)}")
            if spec.shape is not None and (x.ndim != len(spec.shape) or any(
                    want not in (-1, got) for want, got in zip(spec.shape, x.shape))):
                raise errors.InvalidInput(f"input {key!r} of signature {self.name!r} must have shape "
                                          f"{spec.describe()} (-1: any size), got {list(x.shape)}")
            if x.ndim:
                batch.add(x.shape[0])
        if self.batchable and len(batch) > 1:
            raise errors.InvalidInput(f"inputs of signature {self.name!r} have different batch sizes {sorted(batch)}")
        if self.batchable and batch == {0}:
            raise errors.InvalidInput(f"the request to signature {self.name!r} has an empty batch (0 rows)")

    def check_outputs(self, output_filter: Sequence[str]) -> None:
        unknown = sorted(set(output_filter) - set(self.outputs))
        if unknown:
            raise errors.InvalidInput(f"output_filter names {unknown} are not outputs of signature "
                                      f"{self.name!r} (outputs: {sorted(self.outputs)})")


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The ``serve`` MetaGraphDef's SignatureDef map, as TF Serving's GetModelMetadata returns it."""
    sm = saved_model_pb2.SavedModel.FromString((Path(path) / "saved_model.pb").read_bytes())
    for mg in sm.meta_graphs:
        if tf.saved_model.SERVING in mg.meta_info_def.tags:
            return dict(mg.signature_def)
    raise ConfigError(f"{path}: SavedModel has no MetaGraph tagged {tf.saved_model.SERVING!r}")


class ServedVersion:
    """One loaded model version: signature functions, their specs and (optionally) batchers."""

    def __init__(self, name: str, version: int, path: Path, batching: BatchingOptions | None) -> None:
        self.name = name
        self.version = version
        self.path = Path(path)
        self.tagger = LocalTagger(self.path, name, version)
        self.signature_defs = read_signature_defs(self.path)
        self._fns = self.tagger.signatures
        self.signatures = {k: SignatureSpec(k, {n: TensorSpec.of(i) for n, i in d.inputs.items()},
                                            {n: TensorSpec.of(o) for n, o in d.outputs.items()})
                           for k, d in self.signature_defs.items() if k in self._fns}
        self._batch_size = metrics.TAGGER_BATCH_SIZE.labels(name)
        self._batchers: dict[str, Batcher] = {}
        if batching is not None:
            self._batchers = {k: Batcher(self._runner(k), batching, name, k)
                              for k, s in self.signatures.items() if s.batchable}

    def _runner(self, signature: str):
        fn = self._fns[signature]

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in out.items()}
        return run

    def signature(self, name: str) -> SignatureSpec:
        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise errors.InvalidInput(f"serving signature key {key!r} not found in model {self.name!r} "
                                      f"(signatures: {', '.join(sorted(self.signatures))})")
        return self.signatures[key]

    def predict(self, signature: str, inputs: Mapping[str, np.ndarray],
                output_filter: Sequence[str] = ()) -> tuple[str, dict[str, np.ndarray]]:
        """``(resolved signature name, outputs)``; batched when the signature allows it."""
        spec = self.signature(signature)
        spec.validate(inputs)
        spec.check_outputs(output_filter)
        batcher = self._batchers.get(spec.name)
        if batcher is not None:
            outputs = batcher.run(inputs)
        else:
            if spec.batchable:
                self._batch_size.observe(next(iter(inputs.values())).shape[0])
            outputs = self._runner(spec.name)(dict(inputs))
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return spec.name, outputs

    def warmup(self) -> float:
        """Run every signature once on zeros (graph tracing, allocations); seconds taken."""
        start = time.perf_counter()
        for spec in self.signatures.values():
            inputs = {k: np.zeros([1 if d == -1 else d for d in (s.shape or (1,))], s.dtype)
                      for k, s in spec.inputs.items()}
            self._runner(spec.name)(inputs)
        return time.perf_counter() - start

    def close(self) -> None:
        for b in self._batchers.values():
            b.close()


@dataclass
class ModelEntry:
    config: ModelConfig
    found: list[int]  # every complete version on disk
    served: dict[int, ServedVersion]


class ModelServer:
    """Every configured model: resolve versions, predict, metadata, status (TF Serving semantics)."""

    def __init__(self, entries: dict[str, ModelEntry]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, configs: Sequence[ModelConfig], batching: BatchingOptions | None,
             warmup: bool = True) -> ModelServer:
        """Load (and warm up) the versions each config's policy selects; ConfigError if none."""
        entries: dict[str, ModelEntry] = {}
        for c in configs:
            if not c.base_path.is_dir():
                raise ConfigError(f"model {c.name!r}: base path {c.base_path} is not a directory")
            found = list_versions(c.base_path.parent, c.base_path.name)
            if not found:
                raise ConfigError(f"model {c.name!r}: no version directory <n>/saved_model.pb under {c.base_path}")
            versions = select_versions(found, c.policy)
            if c.policy[0] == "specific" and len(versions) != len(c.policy) - 1:
                missing = sorted(set(c.policy[1:]) - set(found))
                raise ConfigError(f"model {c.name!r}: versions {missing} not found under {c.base_path} "
                                  f"(found: {found})")
            bad_labels = {k: v for k, v in c.version_labels.items() if v not in versions}
            if bad_labels:
                raise ConfigError(f"model {c.name!r}: version_labels {bad_labels} point to versions not served "
                                  f"({versions})")
            served = {}
            for v in versions:
                sv = ServedVersion(c.name, v, c.base_path / str(v), batching)
                if warmup:
                    log.info("warmed up", extra={"model": c.name, "version": v, "seconds": round(sv.warmup(), 3)})
                served[v] = sv
            entries[c.name] = ModelEntry(c, found, served)
        return cls(entries)

    def _entry(self, name: str) -> ModelEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise errors.ModelNotFound(f"Servable not found for request: model {name!r} is not served "
                                       f"(models: {', '.join(sorted(self.entries))})")
        return entry

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> ServedVersion:
        """The served version asked for: ``version``, ``label`` or else the newest."""
        entry = self._entry(name)
        if label:
            if label not in entry.config.version_labels:
                raise errors.ModelNotFound(f"Servable not found for request: model {name!r} has no version label "
                                           f"{label!r}")
            version = entry.config.version_labels[label]
        if version is None:
            return entry.served[max(entry.served)]
        if version not in entry.served:
            raise errors.ModelNotFound(f"Servable not found for request: Specific({name}, {version}); "
                                       f"served versions: {', '.join(map(str, sorted(entry.served)))}")
        return entry.served[version]

    def predict(self, name: str, version: int | None, label: str | None, signature: str,
                inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
                ) -> tuple[ServedVersion, str, dict[str, np.ndarray]]:
        served = self.resolve(name, version, label)
        sig, outputs = served.predict(signature, inputs, output_filter)
        return served, sig, outputs

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[tuple[int, str]]:
        """``(version, state)`` of every version found on disk (AVAILABLE if served, else END),
        or of the one asked for."""
        entry = self._entry(name)
        if version is None and not label:
            return [(v, AVAILABLE if v in entry.served else END) for v in entry.found]
        served = self.resolve(name, version, label)
        return [(served.version, AVAILABLE)]

    def close(self) -> None:
        for entry in self.entries.values():
            for sv in entry.served.values():
                sv.close()
