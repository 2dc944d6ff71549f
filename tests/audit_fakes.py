"""Fakes for catalog audits whose cause is known (tests/test_audit.py, and the subprocess a SIGKILL
test runs): songs of a gated 1 kHz tone (the "vocals"), a constant 3 kHz tone and a little noise (the
"accompaniment"); a separator that puts a narrow band around 1 kHz into vocals and the rest into the
accompaniment; and two taggers of one vocabulary: ``tone-1k`` hears 'voice' in the 950-1050 Hz band
(so its 'voice' is carried by the vocals, except in a song whose tone is at 1030 Hz, which the
separator leaves in the accompaniment), ``tone-3k`` in the 2950-3050 Hz band (carried by the
accompaniment)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

RATE = 8000
SONG_S = 4.0


class BandTagger:
    """1 s windows at 8 kHz; 'voice' = tanh(5 x the amplitude in ``band`` Hz), 'noise' = a little
    plus the loudness. Counts the windows it is given; ``delay_s`` per call (a slow model)."""

    labels = ["noise", "voice"]
    sample_rate = window_samples = RATE

    def __init__(self, name: str, band: tuple[float, float], version: int = 1, delay_s: float = 0.0) -> None:
        self.name, self.version, self.band, self.delay_s = name, version, band, delay_s
        self.windows = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.windows += len(x)
        if self.delay_s:
            time.sleep(self.delay_s)
        spec = np.fft.rfft(x, axis=1)
        f = np.fft.rfftfreq(x.shape[1], 1 / RATE)
        sel = (f >= self.band[0]) & (f <= self.band[1])
        amp = 2 / x.shape[1] * np.sqrt((np.abs(spec[:, sel]) ** 2).sum(axis=1))
        rms = np.sqrt(np.mean(x ** 2, axis=1))
        return np.stack([0.02 + 0.3 * np.tanh(rms), np.tanh(5 * amp)], axis=1).astype(np.float32)


def tone_1k(**kw) -> BandTagger:
    return BandTagger("tone-1k", (950.0, 1050.0), **kw)


def tone_3k(**kw) -> BandTagger:
    return BandTagger("tone-3k", (2950.0, 3050.0), **kw)


class BandSeparator:
    """'vocals': the bins within 15 Hz of 1 kHz; 'accompaniment': everything else (sums to the mix)."""

    name = "band"

    def separate(self, wave: np.ndarray, rate: int):
        spec = np.fft.rfft(wave, axis=-1)
        f = np.fft.rfftfreq(wave.shape[-1], 1 / rate)
        keep = np.abs(f - 1000.0) <= 15.0
        vocals = np.fft.irfft(spec * keep, n=wave.shape[-1], axis=-1).astype(np.float32)
        return type("Separated", (), {"stems": {"vocals": vocals, "accompaniment": (wave - vocals).astype(np.float32)}})


def song(voice: tuple[float, float], hz: float = 1000.0, seed: int = 0) -> np.ndarray:
    """A mono song: the tone at ``hz`` during ``voice`` seconds, 3 kHz throughout, a little noise."""
    t = np.arange(int(SONG_S * RATE)) / RATE
    vocals = np.where((t >= voice[0]) & (t < voice[1]), 0.3 * np.sin(2 * np.pi * hz * t), 0.0)
    acc = 0.1 * np.sin(2 * np.pi * 3000.0 * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (vocals + acc).astype(np.float32)


def write_songs(folder: Path, count: int = 4, odd: bool = True) -> list[Path]:
    """``count`` songs as WAV files (the last at 1030 Hz when ``odd``: its 'voice' is in the accompaniment)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        hz = 1030.0 if odd and i == count - 1 else 1000.0
        p = folder / f"song{i}.wav"
        sf.write(p, song((0.5 if i % 2 == 0 else 1.0, 2.5 + 0.25 * i), hz, seed=i), RATE, subtype="FLOAT")
        paths.append(p)
    return paths


def install(monkeypatch_or_module, taggers: dict[str, BandTagger]) -> None:
    """Make ``audiolime.models`` load these fakes (``monkeypatch``, or None to set them directly)."""
    import audiolime.models as models

    def load_tagger(model_dir, name, version=None):
        return taggers[name]

    def load_separator(model_dir, name):
        return BandSeparator()

    def quiet() -> None:
        return None

    for attr, value in (("load_tagger", load_tagger), ("load_separator", load_separator),
                        ("quiet_tensorflow", quiet)):
        if monkeypatch_or_module is None:
            setattr(models, attr, value)
        else:
            monkeypatch_or_module.setattr(models, attr, value)
