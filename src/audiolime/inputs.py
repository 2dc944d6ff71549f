"""Where a request's audio comes from when it is given by URI: an object of the service's own
store, or ``s3://bucket/key`` in an allowed input location, read through the service's own S3
credentials and endpoint. One reader for every service.

Order of checks, each before the next costs anything: the URI's form (INVALID_ARGUMENT), the
allow-list (PERMISSION_DENIED, before the store is asked anything, so a refusal says nothing
about whether the object exists), the object's size from its metadata (INVALID_ARGUMENT over
``--max-bytes``), then a read of at most ``--max-bytes``. Store failures become domain errors
(never an INTERNAL traceback).
"""

from __future__ import annotations

from collections.abc import Sequence
import re
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlparse

from audiolime.errors import InvalidInput, NotFound, PermissionDenied, Unavailable
from audiolime.explain.limits import DEFAULT, Limits
from audiolime.server import metrics
from audiolime.store import LocalStore, ObjectStore, S3Store, clean_key


BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3 bucket naming rules


@dataclass(frozen=True)
class Location:
    """An allowed input location: a bucket, or a bucket and a key prefix ending at a ``/``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Location:
        """``bucket`` or ``bucket/prefix`` (an ``s3://`` in front is accepted)."""
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
    """``--input-buckets`` (comma-separated); None or empty: only the service's own store."""
    items = [x for x in (text or "").split(",") if x.strip()]
    return tuple(Location.parse(x) for x in items) or None


class InputReader:
    """Reads ``AudioInput.uri`` for a service: the URI's form, the allow-list, the size, the bytes.

    ``allowed`` None: only URIs of ``store`` itself. Otherwise only ``s3://`` objects in one of
    the ``allowed`` locations (the store's own objects included only if listed)."""

    def __init__(self, store: ObjectStore, s3_endpoint: str | None = None, s3_region: str | None = None,
                 allowed: Sequence[Location] | None = None, limits: Limits = DEFAULT) -> None:
        self.store = store
        self.s3_endpoint = s3_endpoint
        self.s3_region = s3_region
        self.allowed = tuple(allowed) if allowed else None
        self.limits = limits

    def __call__(self, uri: str) -> bytes:
        store, key = self._locate(uri)
        return self._read(store, key, uri)

    def _locate(self, uri: str) -> tuple[ObjectStore, str]:
        """The store and key to read ``uri`` from, once it is well-formed and allowed."""
        u = urlparse(uri)
        if u.scheme == "s3" and u.netloc and u.path.strip("/"):
            key = clean_key(u.path)
            if self.allowed is None:  # only the store's own objects
                try:
                    return self.store, self.store.parse_uri(uri)
                except InvalidInput:
                    self._refuse(uri)
            if any(loc.allows(u.netloc, key) for loc in self.allowed):
                return S3Store(u.netloc, "", endpoint_url=self.s3_endpoint, region=self.s3_region), key
            self._refuse(uri)
        if u.scheme == "file" and isinstance(self.store, LocalStore):
            if self.allowed is not None:  # an allow-list names S3 locations only
                self._refuse(uri)
            try:
                return self.store, self.store.parse_uri(uri)
            except InvalidInput:
                pass  # a path outside the store: no arbitrary file reads
        raise InvalidInput(f"unsupported audio URI {uri!r}: expected s3://bucket/key or a URI of the object store")

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


def add_flags(p, env) -> None:
    """``--input-buckets`` (with its environment fallback through ``env(name, default)``)."""
    p.add_argument("--input-buckets", default=env("AUDIOLIME_INPUT_BUCKETS", None),
                   help="comma-separated bucket or bucket/prefix locations s3:// audio URIs may name; anything "
                        "else is PERMISSION_DENIED (default: only the service's own --store) "
                        "($AUDIOLIME_INPUT_BUCKETS)")
