"""Where a request's audio comes from when it is given by URI: an object of the service's own
store, or any ``s3://bucket/key`` through the service's own S3 credentials and endpoint. One reader
for every service; store failures become domain errors (never an INTERNAL traceback)."""

from __future__ import annotations

from urllib.parse import urlparse

from audiolime.errors import InvalidInput, NotFound, Unavailable
from audiolime.store import ObjectStore, S3Store


class InputReader:
    """Reads ``AudioInput.uri``: URIs of the configured store, or any ``s3://bucket/key`` through
    the service's own S3 credentials and endpoint."""

    def __init__(self, store: ObjectStore, s3_endpoint: str | None = None, s3_region: str | None = None) -> None:
        self.store = store
        self.s3_endpoint = s3_endpoint
        self.s3_region = s3_region

    def __call__(self, uri: str) -> bytes:
        try:
            key = self.store.parse_uri(uri)
        except InvalidInput:
            key = None
        if key is not None:
            return self._read(self.store, key, uri)
        u = urlparse(uri)
        if u.scheme != "s3" or not u.netloc or not u.path.strip("/"):
            raise InvalidInput(f"unsupported audio URI {uri!r}: expected s3://bucket/key or a URI of the object store")
        store = S3Store(u.netloc, "", endpoint_url=self.s3_endpoint, region=self.s3_region)
        return self._read(store, u.path.lstrip("/"), uri)

    @staticmethod
    def _read(store: ObjectStore, key: str, uri: str) -> bytes:
        """The object's bytes; S3 failures become domain errors (never an INTERNAL traceback)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return store.get(key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
                raise NotFound(f"audio {uri} does not exist") from None
            raise InvalidInput(f"cannot read audio {uri}: {code}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"cannot reach the object store for {uri}: {exc}") from None
