"""The explanation cache: a finished explanation is found again by a key of everything that
determines it, so the same request is answered from the store with fresh presigned URLs.

The key (:func:`cache_key`, its one definition) is the SHA-256 of a canonical JSON of the checked
:class:`~audiolime.method.plan.Plan` (every field of the request it carries, the targets, the
tagger's rate and window: a new plan field is in the key without anyone remembering it), the
tagger's name and resolved version, the SHA-256 of the encoded audio bytes and their file name (the
document names it), the explainer's batch size and the package version. A hit therefore needs the
same audio bytes: a caller only ever gets an explanation of audio it sent itself
(docs/security.md).

An entry is a small pointer, ``cache/<key>.json``: the explanation id, when its objects are deleted
(the result's expiry) and whether its stems came from the separator's cache. It is written after
the explanation's manifest and after its expiry is scheduled, and is deleted with it. A hit is a new
result: its deletion is postponed to the job TTL from now (never before its fresh URLs expire), the
new expiry marker written before the old one goes and before the pointer is updated
(:meth:`audiolime.explainer.core.ExplainerCore`). A pointer whose explanation is gone, or is
deleted within :data:`MIN_LEFT_S`, is a miss (the explanation is computed again and the pointer
replaced).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import audiolime
from audiolime import errors
from audiolime.method.plan import Plan, Tagger
from audiolime.store import ObjectStore

CACHE_PREFIX = "cache/"
MIN_LEFT_S = 120.0  # an entry this close to its deletion is a miss (the sweep runs at least every 60 s)
KEY_VERSION = 1  # bump when what the key covers changes meaning


# Request fields that do not determine the answer kept: an explanation the time budget cut short
# is never kept (the service gives it no key), and one it did not cut is the answer without it.
NOT_IN_KEY: dict[str, Any] = {"time_budget_s": 0.0}


def key_fields(plan: Plan, tagger: Tagger, audio_sha256: str, audio_name: str, batch_size: int) -> dict:
    """Everything that determines an explanation, as JSON-able values (request fields in
    :data:`NOT_IN_KEY` at their defaults)."""
    plan = dataclasses.replace(plan, request=dataclasses.replace(plan.request, **NOT_IN_KEY))
    return {"v": KEY_VERSION, "audiolime": audiolime.__version__, "plan": dataclasses.asdict(plan),
            "tagger": {"name": tagger.name, "version": tagger.version},
            "audio": {"sha256": audio_sha256, "name": audio_name}, "batch_size": batch_size}


def cache_key(plan: Plan, tagger: Tagger, audio_sha256: str, audio_name: str, batch_size: int) -> str:
    """The cache key of an explanation: hex SHA-256 of the canonical JSON of :func:`key_fields`."""
    canonical = json.dumps(key_fields(plan, tagger, audio_sha256, audio_name, batch_size), sort_keys=True,
                           separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def entry_key(key: str) -> str:
    return f"{CACHE_PREFIX}{key}.json"


@dataclass(frozen=True)
class Entry:
    explanation_id: str
    deleted_at: float  # unix time the explanation's objects are deleted
    separator_cache_hit: bool


class ExplanationCache:
    """The pointers in the object store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def lookup(self, key: str, now: float) -> Entry | None:
        """The entry, unless its explanation is deleted within :data:`MIN_LEFT_S` (then the caller
        could not postpone the deletion in time)."""
        try:
            d = json.loads(self.store.get(entry_key(key), limit=4096))
            entry = Entry(str(d["explanation_id"]), float(d["deleted_at"]), bool(d["separator_cache_hit"]))
        except errors.NotFound:
            return None
        return entry if entry.deleted_at - now >= MIN_LEFT_S else None

    def remember(self, key: str, entry: Entry) -> None:
        self.store.put(entry_key(key), json.dumps(dataclasses.asdict(entry)).encode(), "application/json")
