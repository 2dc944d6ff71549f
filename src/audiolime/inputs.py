"""A request's audio (:class:`AudioSource`: encoded bytes or a URI), and where it comes from when
it is given by URI: ``s3://bucket/key`` in an allowed input location (``--input-buckets``), read
through the service's own S3 credentials and endpoint (or ``file:///dir/...`` when the allow-list
names a ``file://`` directory: local set-ups). One reader for every service.

Without ``--input-buckets`` no URI is accepted. Whatever the allow-list says, a URI never reaches
the store's own prefixes (:data:`RESERVED_PREFIXES`: other callers' uploads, jobs, leases, the
queue, the stem cache, results): an allow-list naming the store's bucket allows the rest of it.

Order of checks, each before the next costs anything: the URI's form (INVALID_ARGUMENT), the
allow-list and the reserved prefixes (PERMISSION_DENIED, one message for every refusal, before
the store is asked anything, so a refusal says nothing about whether the object exists), the
object's size from its metadata (INVALID_ARGUMENT over ``--max-bytes``), then a read of at most
``--max-bytes``. Store failures become domain errors (never an INTERNAL traceback).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlparse

from audiolime.errors import InvalidInput, NotFound, PermissionDenied, Unavailable
from audiolime.method.limits import DEFAULT, MAX_URI_CHARS, Limits, check_name
from audiolime.server import metrics
from audiolime.store import LocalStore, ObjectStore, S3Store, clean_key


@dataclass(frozen=True)
class AudioSource:
    """The audio of a request: encoded bytes, or an object-store URI (exactly one)."""

    content: bytes | None = None
    uri: str | None = None
    filename: str = ""

    @property
    def name(self) -> str:
        return self.filename or (self.uri.rsplit("/", 1)[-1] if self.uri else "") or "audio"

    def check(self) -> AudioSource:
        if (self.content is None) == (self.uri is None):
            raise InvalidInput("audio: give exactly one of content (bytes) or uri")
        check_name("audio.filename", self.filename)
        if self.uri is not None:
            check_name("audio.uri", self.uri, MAX_URI_CHARS)
        return self


BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3 bucket naming rules
# The store's own objects (explainer: jobs, separator: stems); never an input, whatever the allow-list.
RESERVED_PREFIXES = ("inputs/", "jobs/", "claims/", "queue/", "stems/", "explanations/", "expiry/", "cache/",
                     "scans/")


@dataclass(frozen=True)
class Location:
    """An allowed input location: a bucket, or a bucket and a key prefix ending at a ``/``; or,
    with ``bucket`` empty, a local directory (``prefix`` its absolute path ending at a ``/``)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Location:
        """``bucket`` or ``bucket/prefix`` (an ``s3://`` in front is accepted), or ``file:///dir``."""
        if text.strip().startswith("file://"):
            path = Path(unquote(urlparse(text.strip()).path))
            if not path.is_absolute():
                raise InvalidInput(f"--input-buckets: {text!r} is not an absolute file:// directory")
            return cls("", str(path.resolve()).rstrip("/") + "/")
        t = text.strip().removeprefix("s3://").strip("/")
        bucket, _, prefix = t.partition("/")
        try:
            if not BUCKET.fullmatch(bucket):
                raise InvalidInput(bucket)
            return cls(bucket, clean_key(prefix) + "/" if prefix else "")
        except InvalidInput:
            raise InvalidInput(f"--input-buckets: {text!r} is not a bucket or bucket/prefix") from None

    def allows(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


def parse_locations(text: str | None) -> tuple[Location, ...] | None:
    """``--input-buckets`` (comma-separated); None or empty: no URI inputs at all."""
    items = [x for x in (text or "").split(",") if x.strip()]
    return tuple(Location.parse(x) for x in items) or None


class InputReader:
    """Reads ``AudioInput.uri`` for a service: the URI's form, the allow-list, the store's reserved
    prefixes, the size, the bytes. ``allowed`` None: every URI is PERMISSION_DENIED."""

    def __init__(self, store: ObjectStore, s3_endpoint: str | None = None, s3_region: str | None = None,
                 allowed: Sequence[Location] | None = None, limits: Limits = DEFAULT) -> None:
        self.store = store
        self.s3_endpoint = s3_endpoint
        self.s3_region = s3_region
        self.allowed = tuple(allowed) if allowed else ()
        self.limits = limits

    def __call__(self, uri: str) -> bytes:
        store, key = self._locate(uri)
        return self._read(store, key, uri)

    def _locate(self, uri: str) -> tuple[ObjectStore, str]:
        """The store and key to read ``uri`` from, once it is well-formed and allowed."""
        u = urlparse(uri)
        if u.scheme == "s3" and u.netloc and u.path.strip("/"):
            key = clean_key(u.path)
            if self._reserved("s3", u.netloc, key) or not any(loc.allows(u.netloc, key) for loc in self.allowed):
                self._refuse(uri)
            return S3Store(u.netloc, "", endpoint_url=self.s3_endpoint, region=self.s3_region), key
        if u.scheme == "file" and u.path.startswith("/"):
            clean_key(unquote(u.path))  # no "..", empty or "." segments
            path = str(Path(unquote(u.path)).resolve())
            for loc in self.allowed:
                if not loc.bucket and path.startswith(loc.prefix) and not self._reserved("file", "", path):
                    return LocalStore(Path(loc.prefix)), path[len(loc.prefix):]
            self._refuse(uri)
        raise InvalidInput(f"unsupported audio URI {uri!r}: expected s3://bucket/key")

    def _reserved(self, scheme: str, bucket: str, key: str) -> bool:
        """Whether ``key`` (an S3 key of ``bucket``, or a resolved local path) is one of the store's own."""
        if isinstance(self.store, S3Store):
            if scheme != "s3" or bucket != self.store.bucket:
                return False
            base = f"{self.store.prefix}/" if self.store.prefix else ""
        elif isinstance(self.store, LocalStore):
            if scheme != "file":
                return False
            base = str(self.store.root).rstrip("/") + "/"
        else:
            return False
        return key.startswith(base) and key[len(base):].startswith(RESERVED_PREFIXES)

    @staticmethod
    def _refuse(uri: str) -> NoReturn:
        metrics.REFUSED.labels("input_location").inc()
        raise PermissionDenied(f"audio uri {uri!r} is not in an allowed input location (--input-buckets)")

    def _read(self, store: ObjectStore, key: str, uri: str) -> bytes:
        """The object's bytes, its size checked first; S3 failures become domain errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        label = f"audio {uri}"
        try:
            self.limits.check_size(store.size(key), label)
            data = store.get(key, limit=self.limits.max_bytes + 1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
                raise NotFound(f"audio {uri} does not exist") from None
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
                raise PermissionDenied(f"audio {uri} is not readable by this service") from None
            raise InvalidInput(f"cannot read audio {uri}: {code}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"cannot reach the object store for {uri}: {exc}") from None
        except NotFound:
            raise NotFound(f"audio {uri} does not exist") from None
        self.limits.check_size(len(data), label)  # it grew between the size and the read
        return data
