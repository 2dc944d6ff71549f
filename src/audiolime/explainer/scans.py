"""The song scans kept in the object store: explaining a song again (another tag, seed, window or
method parameter) skips tagging every window of it, which for a long song is most of a warm
explanation's time (docs/performance.md).

``scans/<key>.npz`` holds the window starts, the tagger's probabilities per window and what a
window cost when scanned (the engine sizes a first round to a deadline with it). The key is the
SHA-256 of a canonical JSON of what determines the scan: the encoded audio's SHA-256, the tagger's
name, resolved version, rate and window, the hop, the most windows scanned and the batch size (batching changes float
results in the last bits). Only a caller that sent the same audio bytes reaches an entry, and it
holds nothing that caller could not compute. Entries are written by the explainer alone and read
with a size limit; an unreadable one is a miss and is rewritten. Not swept, like ``stems/`` (an
S3 lifecycle rule on the prefix bounds it: docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging

import numpy as np

from audiolime import errors
from audiolime.method.pipeline import SCAN_MAX_WINDOWS, Scan, scan_hop
from audiolime.method.plan import Tagger
from audiolime.server import metrics
from audiolime.store import ObjectStore

log = logging.getLogger(__name__)

SCANS_PREFIX = "scans/"
MAX_SCAN_BYTES = 16 << 20  # at most SCAN_MAX_WINDOWS (64) windows x 100 tags x 4 bytes = 26 KB
KEY_VERSION = 2  # 2: at most SCAN_MAX_WINDOWS windows


def scan_key(tagger: Tagger, audio_sha256: str, hop: int, batch_size: int) -> str:
    fields = {"v": KEY_VERSION, "audio": audio_sha256, "tagger": [tagger.name, tagger.version],
              "rate": tagger.sample_rate, "window": tagger.window_samples, "hop": hop, "batch_size": batch_size,
              "max_windows": SCAN_MAX_WINDOWS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class StoredScan:
    """One song's scan by one tagger in the store (a :class:`~audiolime.method.pipeline.ScanMemo`)."""

    def __init__(self, store: ObjectStore, tagger: Tagger, audio_sha256: str, batch_size: int) -> None:
        self.store, self.model, self.labels = store, tagger.name, len(tagger.labels)
        self.key = f"{SCANS_PREFIX}{scan_key(tagger, audio_sha256, scan_hop(tagger), batch_size)}.npz"

    def load(self) -> Scan | None:
        try:
            data = self.store.get(self.key, limit=MAX_SCAN_BYTES)
        except errors.NotFound:
            metrics.SCAN_CACHE.labels(self.model, "miss").inc()
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                starts, probs, window_s = z["starts"], z["probs"], float(z["window_s"])
            ok = (starts.ndim == 1 and starts.dtype.kind == "i" and len(starts) > 0 and probs.dtype == np.float32
                  and probs.shape == (len(starts), self.labels) and bool(np.isfinite(probs).all())
                  and np.isfinite(window_s) and window_s >= 0)
        except (ValueError, KeyError, OSError, EOFError):
            ok = False
        if not ok:
            log.warning("unreadable song scan, treating as a miss", extra={"key": self.key})
            metrics.SCAN_CACHE.labels(self.model, "miss").inc()
            return None
        metrics.SCAN_CACHE.labels(self.model, "hit").inc()
        return Scan(starts, probs, window_s)

    def save(self, scan: Scan) -> None:
        buf = io.BytesIO()
        np.savez(buf, starts=np.asarray(scan.starts, np.int64), probs=np.asarray(scan.probs, np.float32),
                 window_s=np.float64(scan.window_s))
        self.store.put(self.key, buf.getvalue(), "application/octet-stream")
