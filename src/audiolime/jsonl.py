"""Append-only JSON-lines files that survive a killed writer: the evaluation's checkpoint, an
audit's checkpoint and its job journal. One definition of how they are written (appended, flushed
and fsynced; a fresh line after a torn one) and read (a torn or unparsable line is skipped)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def append(path: Path, items: Iterable[dict]) -> None:
    """Append one JSON line per item and fsync, starting a fresh line after a torn one."""
    torn = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in items)
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + text)
        f.flush()
        os.fsync(f.fileno())


def read(path: Path) -> Iterator[dict]:
    """Every parsable JSON object line of ``path`` in order (none if it does not exist); a torn or
    unparsable line, from an interrupted writer, is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(d, dict):
                yield d
