"""Regenerate the Python stubs in ``src/audiolime/v1`` from ``proto/`` (``make proto``).

The output is committed; ``tests/test_proto.py`` regenerates into a temporary directory and
fails when the committed stubs drift from the ``.proto`` sources. Never edit the stubs by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
OUT_ROOT = REPO / "src"


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(root.glob("audiolime/*/*.proto"))


def generate(out_root: Path = OUT_ROOT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc (grpcio-tools) for every proto file; returns the generated files."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = proto_files(proto_root)
    # In a subprocess: protoc's bundled protobuf library must not share a process with TensorFlow's.
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", f"-I{include}",
            f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}",
            *[str(f.relative_to(proto_root)) for f in files]]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed: {proc.stderr.strip()}")
    return sorted((out_root / "audiolime").glob("*/*_pb2*.py*"))


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(REPO))
    sys.exit(0)
