"""The resumable checkpoint of an evaluation run, in its output directory: ``config.json`` (the
settings every method shares; a run with other shared settings is refused, never mixed in) and
``items.jsonl`` (one finished (song, tagger, window, method) result per line, with the method's
own settings, appended and fsynced; a torn last line from an interrupted run is skipped).

Adding a variant to a run only computes that variant; changing a variant's settings under the
same name is refused (results would be mixed)."""

from __future__ import annotations

import json
from pathlib import Path

from audiolime import jsonl
from audiolime.errors import InvalidInput
from audiolime.evaluation.config import FORMAT, EvalConfig

CHECKPOINT = "items.jsonl"
CONFIG = "config.json"

Key = tuple[str, str, int, str]  # (song, tagger, window, method)


def load_checkpoint(out: Path) -> dict[Key, dict]:
    return {(rec["song"], rec["tagger"], int(rec["window"]), rec["method"]): rec
            for rec in jsonl.read(out / CHECKPOINT)}


def check_methods(items: dict[Key, dict], cfg: EvalConfig) -> None:
    """Refuse a checkpoint whose results of a method were made with other settings for it."""
    keys = {m: cfg.method_key(m) for m in cfg.methods}
    for (*_, method), rec in items.items():
        if method in keys and rec["key"] != keys[method]:
            raise InvalidInput(f"the checkpoint holds {method!r} results made with other settings "
                               f"({rec['key']} != {keys[method]}); rename the variant or use another --out")


def append_checkpoint(out: Path, rec: dict) -> None:
    jsonl.append(out / CHECKPOINT, [rec])


def check_config(out: Path, cfg: EvalConfig) -> None:
    """Write ``config.json`` into a new ``out``; refuse an ``out`` holding another configuration."""
    path = out / CONFIG
    key = cfg.result_key()
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("format") != FORMAT:
            raise InvalidInput(f"{out} holds results of an older evaluation format; use another --out")
        diff = [f"{k} {old.get(k)!r} != {v!r}" for k, v in key.items() if old.get(k) != v]
        if diff:
            raise InvalidInput(f"{out} holds results of a different configuration ({'; '.join(diff)}); "
                               f"use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(key, indent=2) + "\n")
