"""The one stem source: a window's stems from a range of chunks equal the same window of a whole-song
run (what the separator service caches), so every door ranks the same components (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from audiolime.method.stems import STEM_RATE, ChunkPlan, LocalSeparation, separate_chunked, stem_rate_region, window_stems
from audiolime.method.waveform import Audio, resample

PLAN = ChunkPlan(chunk=4000, overlap=1000)  # hop 3000: small enough to test many chunk boundaries


class ContextSeparator:
    """A separator whose output depends on the whole chunk it sees (like Spleeter's), so any
    difference in chunking shows up in the numbers."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(chunk.shape[1])
        gain = 0.5 + 0.4 * np.tanh(float(np.mean(np.abs(chunk))) * 10)
        return {"vocals": chunk * gain, "accompaniment": chunk * (1 - gain)}


def _song(n: int, channels: int = 2, seed: int = 0, rate: int = STEM_RATE) -> np.ndarray:
    """Tones well inside every rate's band (so resampling round trips are near lossless) whose
    loudness changes over time (so chunks differ)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    env = 0.1 + 0.4 * (1 + np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    tones = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 1375, 4100))
    return np.stack([env * tones * (1 + 0.1 * c) for c in range(channels)]).astype(np.float32)


def _collect(sep, x, plan, start=0, end=None):
    parts, offsets = {}, []

    def sink(offset, mix, stems):
        offsets.append((offset, mix.shape[1]))
        for k, v in stems.items():
            parts.setdefault(k, []).append(v)

    separate_chunked(lambda a, b: sep(x[:, a:b]), x, plan, sink, start, end)
    return {k: np.concatenate(v, 1) for k, v in parts.items()}, offsets


@pytest.mark.parametrize("start,end", [(0, 100), (2990, 3010), (3000, 4000), (5999, 6001), (100, 13999),
                                       (11000, 14000), (13999, 14000), (0, 14000)])
def test_a_range_of_chunks_equals_the_whole_song_run(start, end):
    """Parts cover exactly [start, end) consecutively and equal the whole-song run bit for bit."""
    x = _song(14000)
    whole, _ = _collect(ContextSeparator(), x, PLAN)
    part, offsets = _collect(ContextSeparator(), x, PLAN, start, end)
    assert offsets[0][0] == start and sum(n for _, n in offsets) == end - start
    assert all(a + n == b for (a, n), (b, _) in zip(offsets, offsets[1:]))
    for k in whole:
        np.testing.assert_array_equal(part[k], whole[k][:, start:end])


def test_only_the_covering_chunks_run():
    """A window inside one chunk's own part runs that chunk only; inside a cross-fade, two."""
    x = _song(30000)
    sep = ContextSeparator()
    _collect(sep, x, PLAN, 4200, 5000)  # chunk 1 contributes [3000, 6000), cross-fade [3000, 4000)
    assert len(sep.calls) == 1
    sep.calls.clear()
    _collect(sep, x, PLAN, 3100, 3200)
    assert len(sep.calls) == 2


@pytest.mark.parametrize("rate", [44100, 48000, 22050])
def test_local_window_equals_the_services_crop_of_whole_song_stems(rate):
    """LocalSeparation's window stems equal window_stems() over whole-song stems (the service's path)."""
    n = 3 * rate
    audio = Audio(_song(n, seed=rate, rate=rate), rate)
    plan = ChunkPlan(chunk=40000, overlap=10000)
    mixture = resample(audio.waveform, rate, STEM_RATE)
    whole, _ = _collect(ContextSeparator(), mixture, plan)  # what the separator service stores
    start, end = int(1.1 * rate), int(1.1 * rate) + rate
    a, b = stem_rate_region(rate, start, end, mixture.shape[1])
    service = window_stems({k: v[:, a:b] for k, v in whole.items()}, a, audio, start, end)
    local = LocalSeparation(ContextSeparator(), "fake", plan).window(audio, start, end)
    assert local.sample_rate == rate and set(local.stems) == {"vocals", "accompaniment"}
    for k in service:
        assert local.stems[k].shape == (2, end - start)
        np.testing.assert_array_equal(local.stems[k], service[k])
    # and the stems still sum to the window of the mixture (resampling round trip aside)
    total = sum(local.stems.values())
    err = np.sqrt(np.mean((total - audio.waveform[:, start:end]) ** 2)) / np.sqrt(np.mean(audio.waveform ** 2))
    assert err < (1e-6 if rate == STEM_RATE else 1e-3), err


def test_region_starts_on_a_shared_sample():
    """For another rate, the region starts where both rates have a sample (exact offsets)."""
    a, b = stem_rate_region(48000, 48000, 96000, 10 ** 6)
    assert a % 147 == 0 and a * 48000 % 44100 == 0 and a <= 44100 and b >= 88200


def test_chunk_cache_reuses_separations_across_windows():
    """With cache_chunks, a second window in the same chunks of the same song separates nothing new."""
    audio = Audio(_song(60000), STEM_RATE)
    sep = ContextSeparator()
    src = LocalSeparation(sep, "fake", PLAN, cache_chunks=8)
    first = src.window(audio, 10000, 12000)
    calls = len(sep.calls)
    again = src.window(audio, 10500, 11500)
    assert len(sep.calls) == calls
    np.testing.assert_array_equal(again.stems["vocals"], first.stems["vocals"][:, 500:1500])
