"""Install a prepared model directory into a model volume, without any network: the door of the
``audiolime-models`` image (deploy/models/Dockerfile), whose init container copies the models the
image carries into the pod's (or a shared claim's) model volume.

Standard library only: the image ships this one file, not the audiolime package.

* ``manifest DIR``: make the tree readable by everyone (directories 0755, files 0644: the image's
  files belong to root and its user is 10001) and write ``DIR/MODELS.json`` (size and sha256 of
  every file, plus an id over them). Run once when the image is built.
* ``install --from SRC --to DST``: copy every file of SRC's manifest into DST, each through a
  temporary file verified against its sha256 and renamed into place, then write the marker
  ``DST/.audiolime-models.json`` last. A second run with the same manifest finds the marker and
  copies nothing. Several pods on one shared claim may run it at once: every file is replaced
  atomically with identical bytes, so readers never see a partial file. Files not in the manifest
  (e.g. a model converted into the claim out of band) are left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

MANIFEST = "MODELS.json"
MARKER = ".audiolime-models.json"


class ModelCopyError(RuntimeError):
    """The source is not a verified model directory, or a copy does not match its manifest."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_readable(root: Path) -> Path:
    """Directories 0755 and regular files 0644 under ``root`` (``root`` included; links untouched).

    A model tree is read by a server running as another user than the one who wrote it (the models
    image's files belong to root, the chart runs every container as 10001); a tree made in a
    ``mkdtemp`` directory (mode 0700) or under a strict umask would otherwise be unreadable."""
    root = Path(root)
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, 0o755)
        elif path.is_file():
            os.chmod(path, 0o644)
    return root


def build_manifest(root: Path) -> dict:
    """``{"id": ..., "files": {relpath: {"size": n, "sha256": hex}}}`` of every file under ``root``."""
    files = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name not in (MANIFEST, MARKER)):
        files[path.relative_to(root).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    if not files:
        raise ModelCopyError(f"{root}: no files")
    ident = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"id": ident, "files": files}


def write_manifest(root: Path) -> dict:
    make_readable(root)
    manifest = build_manifest(root)
    path = Path(root) / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.chmod(path, 0o644)
    return manifest


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        ident = manifest["id"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelCopyError(f"{path}: not a model manifest ({type(exc).__name__}: {exc})") from None
    for rel in files:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ModelCopyError(f"{path}: unsafe path {rel!r}")
    return {"id": ident, "files": files}


def installed(dst: Path, manifest: dict) -> bool:
    """Whether ``dst`` already holds this manifest's files (marker written last, sizes match)."""
    try:
        marker = json.loads((Path(dst) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("id") != manifest["id"]:
        return False
    for rel, meta in manifest["files"].items():
        path = Path(dst) / rel
        if not path.is_file() or path.stat().st_size != meta["size"]:
            return False
    return True


def _copy_verified(src: Path, dst: Path, sha256: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
        actual = sha256_file(tmp)
        if actual != sha256:
            raise ModelCopyError(f"{src}: sha256 {actual} does not match the manifest's {sha256}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def install(src: Path, dst: Path) -> int:
    """Copy the models of ``src`` into ``dst``; returns how many files were written (0: up to date)."""
    src, dst = Path(src), Path(dst)
    manifest = read_manifest(src)
    if installed(dst, manifest):
        return 0
    written = 0
    for rel, meta in manifest["files"].items():
        target = dst / rel
        if target.is_file() and target.stat().st_size == meta["size"] and sha256_file(target) == meta["sha256"]:
            continue
        source = src / rel
        if not source.is_file():
            raise ModelCopyError(f"{source}: listed in {MANIFEST} but missing")
        _copy_verified(source, target, meta["sha256"])
        written += 1
    fd, tmp_name = tempfile.mkstemp(prefix=f"{MARKER}.", suffix=".part", dir=dst)
    with os.fdopen(fd, "w") as f:
        json.dump({"id": manifest["id"], "files": len(manifest["files"])}, f)
    os.chmod(tmp_name, 0o644)
    os.replace(tmp_name, dst / MARKER)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install_models",
                                     description="Copy the models an audiolime-models image carries into a model volume.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifest", help="write DIR/MODELS.json (at image build)")
    m.add_argument("dir", type=Path)
    i = sub.add_parser("install", help="copy the models of --from into --to (idempotent, atomic per file)")
    i.add_argument("--from", dest="src", type=Path, required=True)
    i.add_argument("--to", dest="dst", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "manifest":
            manifest = write_manifest(args.dir)
            print(f"{args.dir / MANIFEST}: {len(manifest['files'])} files, id {manifest['id'][:16]}")
        else:
            if not args.dst.is_dir():
                raise ModelCopyError(f"{args.dst}: not a directory (mount the model volume there)")
            written = install(args.src, args.dst)
            print(f"{args.dst}: {'up to date' if written == 0 else f'{written} files installed'}")
    except (ModelCopyError, OSError) as exc:
        print(f"install_models: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
