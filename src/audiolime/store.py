"""Object store abstraction shared by the separator (stem cache) and the explainer (results).

Keys are ``/``-separated relative paths (``stems/2stems/<sha>/vocals.flac``). Two backends:

* ``S3Store``: any S3 API (AWS, MinIO, moto server); presigned GET URLs from boto3.
* ``LocalStore``: files under a directory, written atomically (temp file + rename); presigned
  URLs point at an HTTP server (the explainer's, ``{public_url}/o/{key}?expires=..&sig=..``) and
  are checked with :func:`verify` (HMAC-SHA256 over ``key NUL expires``).

Conditional creation (:meth:`ObjectStore.put_if_absent`) is what durable jobs build their leases
and their exactly-once publishing on: S3 ``PutObject`` with ``If-None-Match: *`` (AWS S3 since
August 2024, MinIO, moto) and ``link(2)`` of a complete temporary file on the local store (atomic
on local filesystems and on NFS). :func:`check_conditional_writes` tells whether a store honours it.

``open_store("s3://bucket/prefix")`` / ``open_store("file:///path")`` picks one from a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from audiolime.errors import InvalidInput, NotFound


def is_outage(exc: BaseException) -> bool:
    """A failure of the object store itself (S3 unreachable or refusing, a full or missing disk),
    which a later attempt may not meet; not a bug."""
    from audiolime.errors import Unavailable

    if isinstance(exc, (OSError, Unavailable)):
        return True
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no boto3: no S3 store either
        return False
    return isinstance(exc, (BotoCoreError, ClientError))


def clean_key(key: str) -> str:
    """Reject keys that could escape the store (absolute, ``..``, empty segments)."""
    k = key.strip("/")
    parts = k.split("/")
    if not k or any(p in ("", ".", "..") for p in parts) or "\\" in k or "\x00" in k:
        raise InvalidInput(f"invalid object key {key!r}")
    return k


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key (relative to the store), size and last modification (unix time,
    the store's clock: S3's LastModified, the file's mtime)."""

    key: str
    size: int
    modified: float


class ObjectStore(ABC):
    """Blobs by key; ``uri`` names a blob durably, ``presign`` gives a time-limited HTTP URL."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` (replacing any previous object, atomically for readers)."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Create ``key`` only if no object has that key; True if this call created it. Of any
        number of concurrent callers (processes, hosts) exactly one gets True, and readers only
        ever see the complete object."""

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a plain string prefix), sorted by key."""

    @abstractmethod
    def get(self, key: str, limit: int | None = None) -> bytes:
        """The object's bytes (at most the first ``limit``); raises ``audiolime.errors.NotFound``
        when it does not exist."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes, without reading it; ``NotFound`` when it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object (no error if it does not exist)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Delete every object whose key starts with ``prefix`` (no error if none)."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """A durable URI of the object (``s3://bucket/prefix/key`` or ``file:///root/key``)."""

    @abstractmethod
    def presign(self, key: str, ttl_s: int = 3600) -> str:
        """An HTTP(S) URL that allows a GET of ``key`` for ``ttl_s`` seconds."""

    @abstractmethod
    def parse_uri(self, uri: str) -> str:
        """The key of a URI produced by ``uri`` (``InvalidInput`` if it is not in this store)."""


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix/`` through boto3 (works with MinIO and moto)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, client=None) -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise InvalidInput("S3 store needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._client = client or boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None,
            config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"},
                          s3={"addressing_style": "path"} if endpoint_url else None))

    def _full(self, key: str) -> str:
        k = clean_key(key)
        return f"{self.prefix}/{k}" if self.prefix else k

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type)

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type,
                                    IfNoneMatch="*")
            return True
        except ClientError as exc:
            # 412: the object exists; 409: a concurrent conditional write to the same key is in progress
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") \
                    or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise

    def list(self, prefix: str) -> list[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        skip = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            out += [ObjectInfo(o["Key"][skip:], int(o["Size"]), o["LastModified"].timestamp())
                    for o in page.get("Contents", [])]
        return sorted(out, key=lambda o: o.key)

    def get(self, key: str, limit: int | None = None) -> bytes:
        from botocore.exceptions import ClientError

        extra = {} if limit is None else {"Range": f"bytes=0-{max(limit, 1) - 1}"}
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._full(key), **extra)["Body"]
            return body.read() if limit is None else body.read(limit)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"object {clean_key(key)!r} does not exist in the store") from None
            raise

    def size(self, key: str) -> int:
        from botocore.exceptions import ClientError

        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=self._full(key))["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"object {clean_key(key)!r} does not exist in the store") from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def delete_prefix(self, prefix: str) -> None:
        full = self._full(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objs:
                self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objs, "Quiet": True})

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def presign(self, key: str, ttl_s: int = 3600) -> str:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=int(ttl_s))

    def parse_uri(self, uri: str) -> str:
        u = urlparse(uri)
        path = u.path.lstrip("/")
        if u.scheme != "s3" or u.netloc != self.bucket:
            raise InvalidInput(f"{uri!r} is not in this store (s3://{self.bucket}/{self.prefix})")
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                raise InvalidInput(f"{uri!r} is not under s3://{self.bucket}/{self.prefix}/")
            path = path[len(self.prefix) + 1:]
        return clean_key(path)


def sign(secret: bytes, key: str, expires: int) -> str:
    """HMAC-SHA256 (hex) of ``key NUL expires`` — the local store's URL signature. The separator
    keeps key and expiry apart (``key`` + ``"1"`` + ``"23"`` and ``key1`` + ``"23"`` were one string)."""
    return hmac.new(secret, f"{key}\0{int(expires)}".encode(), hashlib.sha256).hexdigest()


def verify(key: str, expires: int | str, sig: str, secret: bytes, now: float | None = None) -> bool:
    """Whether a local signed URL's ``sig`` is valid for ``key`` and not expired."""
    try:
        exp = int(expires)
    except (TypeError, ValueError):
        return False
    if exp < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(sign(secret, key, exp), str(sig))


def umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status; else set and restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class LocalStore(ObjectStore):
    """Objects as files under ``root``; presigned URLs are served by an HTTP server at ``public_url``."""

    def __init__(self, root: Path, public_url: str | None = None, secret: bytes | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.secret = secret

    def path(self, key: str) -> Path:
        return self.root / clean_key(key)

    def _staged(self, key: str, data: bytes) -> tuple[Path, str]:
        """``data`` written and fsynced to a temporary file beside ``key``'s path: (dest, tmp)."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            os.fchmod(fd, 0o666 & ~umask())  # as open() would create it (mkstemp makes 0600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest, tmp

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        dest, tmp = self._staged(key, data)
        try:
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        dest, tmp = self._staged(key, data)
        try:
            os.link(tmp, dest)  # atomic, fails if dest exists; the object is complete when it appears
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[ObjectInfo]:
        head = prefix.rpartition("/")[0]
        base = self.path(head) if head.strip("/") else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):  # a write in progress
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = path.stat()
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                    out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def get(self, key: str, limit: int | None = None) -> bytes:
        try:
            with open(self.path(key), "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"object {clean_key(key)!r} does not exist in the store") from None

    def size(self, key: str) -> int:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"object {clean_key(key)!r} does not exist in the store")
        return path.stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        p = self.path(prefix)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file():
            p.unlink(missing_ok=True)
        else:  # a partial name: delete siblings that start with it
            parent = p.parent
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.name.startswith(p.name):
                        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def presign(self, key: str, ttl_s: int = 3600) -> str:
        if not self.public_url or not self.secret:
            raise InvalidInput("local store has no public URL / URL secret configured; cannot sign URLs")
        k = clean_key(key)
        expires = int(time.time()) + int(ttl_s)
        return f"{self.public_url}/o/{quote(k)}?expires={expires}&sig={sign(self.secret, k, expires)}"

    def verify(self, key: str, expires: int | str, sig: str) -> bool:
        """Check a signed URL's parameters against this store's secret."""
        return self.secret is not None and verify(clean_key(key), expires, sig, self.secret)

    def parse_uri(self, uri: str) -> str:
        u = urlparse(uri)
        if u.scheme != "file":
            raise InvalidInput(f"{uri!r} is not a file:// URI of this store ({self.root.as_uri()})")
        path = Path(unquote(u.path)).resolve()  # uri() percent-encodes (Path.as_uri), e.g. "+" in "2stems+hpss"
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            raise InvalidInput(f"{uri!r} is not under {self.root.as_uri()}") from None
        return clean_key(rel.as_posix())


def check_conditional_writes(store: ObjectStore, prefix: str = "jobs/") -> bool:
    """Whether ``store`` honours :meth:`ObjectStore.put_if_absent` (a second create of the same
    key must be refused). Some S3-compatible servers ignore ``If-None-Match``."""
    key = f"{prefix}.conditional-write-probe-{uuid.uuid4().hex}"
    try:
        return store.put_if_absent(key, b"1") and not store.put_if_absent(key, b"2")
    finally:
        store.delete(key)


def open_store(url: str, **opts) -> ObjectStore:
    """``s3://bucket/prefix`` (opts: ``endpoint_url``, ``region``) or ``file:///path``
    (opts: ``public_url``, ``secret``) or a plain directory path."""
    u = urlparse(url)
    if u.scheme == "s3":
        return S3Store(u.netloc, u.path, endpoint_url=opts.get("endpoint_url"), region=opts.get("region"))
    if u.scheme == "file":
        return LocalStore(Path(u.path), public_url=opts.get("public_url"), secret=_secret(opts.get("secret")))
    if u.scheme == "":
        return LocalStore(Path(url), public_url=opts.get("public_url"), secret=_secret(opts.get("secret")))
    raise InvalidInput(f"unsupported store URL {url!r} (use s3://bucket/prefix or file:///path)")


def _secret(value: bytes | str | None) -> bytes | None:
    if value is None or value == "":
        return None
    return value.encode() if isinstance(value, str) else value
