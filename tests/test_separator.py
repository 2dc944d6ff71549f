"""Spleeter 2stems (and its 2stems+hpss variant) on real recordings: stems reconstruct the
mixture and separate the voice; HPSS splits the accompaniment exactly and meaningfully."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiolime.audio import decode
from audiolime.errors import InvalidInput, ModelNotFound
from audiolime.method.waveform import resample, to_mono

SONGS = ["Karissa_Hobbs_-_Lets_Go_Fishin.ogg", "Brahms_-_Hungarian_Dance_No5_string_orchestra.ogg",
         "Kevin_MacLeod_-_Vibe_Ace.ogg", "admiralbob77_-_Choice_-_Drum-bass.ogg"]


@pytest.fixture(scope="module")
def separator(models: Path):
    from audiolime.separator.spleeter_separator import SpleeterSeparator

    return SpleeterSeparator(models / "spleeter", "2stems")


def _excerpt(shared: Path, name: str, start_s: float = 10.0, dur_s: float = 8.0):
    audio = decode(shared / "audio" / name)
    a = int(start_s * audio.sample_rate)
    return audio.waveform[:, a:a + int(dur_s * audio.sample_rate)], audio.sample_rate


@pytest.mark.parametrize("song", SONGS)
def test_stems_sum_to_mixture_on_real_music(separator, shared, song):
    """The residual mixture - sum(stems) is tiny on every shared recording (relative RMS < 1e-3)."""
    wav, sr = _excerpt(shared, song)
    sep = separator.separate(wav, sr)
    assert set(sep.stems) == {"vocals", "accompaniment"}
    assert sep.residual_rel_rms < 1e-3
    total = sep.stems["vocals"] + sep.stems["accompaniment"]
    rel = np.sqrt(np.mean((total - wav) ** 2)) / np.sqrt(np.mean(wav ** 2))
    assert rel < 5e-3  # also after resampling back to the input rate


def test_vocals_stem_holds_the_voice(separator, shared):
    """The sung song puts far more energy in the vocals stem than the string orchestra does."""
    def vocal_share(song: str) -> float:
        wav, sr = _excerpt(shared, song, 30.0, 10.0)
        stems = separator.separate(wav, sr).stems
        return float(np.sum(stems["vocals"] ** 2) / np.sum(wav ** 2))

    sung, orchestra = vocal_share(SONGS[0]), vocal_share(SONGS[1])
    assert sung > 0.1 and sung > 5 * orchestra


def test_any_rate_and_channel_count(separator, shared):
    """Mono 22.05 kHz in -> mono stems at 22.05 kHz (or at a requested rate), same length."""
    wav, sr = _excerpt(shared, SONGS[0], 20.0, 4.0)
    mono = resample(to_mono(wav)[None, :], sr, 22050)
    sep = separator.separate(mono, 22050)
    assert {v.shape for v in sep.stems.values()} == {mono.shape}
    assert sep.sample_rate == 22050
    sep16 = separator.separate(mono, 22050, out_rate=16000)
    assert {v.shape for v in sep16.stems.values()} == {(1, 4 * 16000)}


def test_vocal_stem_alone_is_tagged_female_vocalists(separator, shared, models):
    """musicnn on the separated vocal stem alone still tops 'female vocalists' (stems are meaningful)."""
    from audiolime.models import load_tagger

    tagger = load_tagger(models, "musicnn-msd")
    wav, sr = _excerpt(shared, SONGS[0], 60.0, 12.0)
    vocals = separator.separate(wav, sr, out_rate=16000).stems["vocals"]
    mono = to_mono(vocals)
    windows = np.stack([mono[i:i + 48000] for i in range(0, len(mono) - 48000 + 1, 48000)])
    probs = tagger.predict(windows).mean(axis=0)
    assert tagger.labels[int(np.argmax(probs))] == "female vocalists"


def test_bad_inputs(separator, models):
    """Unknown models list what is installed; malformed waveforms are refused."""
    from audiolime.separator.spleeter_separator import SpleeterSeparator

    with pytest.raises(ModelNotFound, match="installed: 2stems"):
        SpleeterSeparator(models / "spleeter", "4stems")
    with pytest.raises(InvalidInput):
        separator.separate(np.zeros((3, 1000), np.float32), 44100)
    with pytest.raises(InvalidInput):
        separator.separate(np.zeros((2, 0), np.float32), 44100)
    with pytest.raises(InvalidInput):
        separator.separate(np.zeros((2, 1000), np.float32), 0)


@pytest.fixture(scope="module")
def hpss(separator):
    from audiolime.separator.hpss import HpssVariant

    return HpssVariant("2stems+hpss", separator, "accompaniment")


def test_hpss_variant_splits_the_accompaniment_exactly(hpss, separator, shared):
    """2stems+hpss: vocals as 2stems, harmonic + percussive = 2stems' accompaniment (so the three
    stems still sum to the mixture), at the input's rate and channels."""
    wav, sr = _excerpt(shared, SONGS[3], 5.0, 6.0)
    two, three = separator.separate(wav, sr), hpss.separate(wav, sr)
    assert list(three.stems) == ["vocals", "harmonic", "percussive"] and three.model == "2stems+hpss"
    np.testing.assert_allclose(three.stems["vocals"], two.stems["vocals"], atol=1e-6)
    acc = two.stems["accompaniment"]
    split = three.stems["harmonic"] + three.stems["percussive"]
    assert np.sqrt(np.mean((split - acc) ** 2)) < 1e-5 * np.sqrt(np.mean(acc ** 2)) + 1e-9
    assert three.residual_rel_rms == two.residual_rel_rms < 1e-3
    assert {v.shape for v in three.stems.values()} == {wav.shape}
    assert "hpss" in three.timings_s


def test_hpss_puts_drums_in_percussive_and_strings_in_harmonic(hpss, shared):
    """The drum-and-bass excerpt has a far larger percussive share than the string orchestra."""
    def share(song: str) -> float:
        wav, sr = _excerpt(shared, song, 5.0, 6.0)
        st = hpss.separate(wav, sr).stems
        return float(np.sum(st["percussive"] ** 2) / (np.sum(st["percussive"] ** 2) + np.sum(st["harmonic"] ** 2)))

    drums, strings = share(SONGS[3]), share(SONGS[1])
    assert drums > 0.2 and drums > 2 * strings, (drums, strings)  # measured 0.28 vs 0.08 (bass is harmonic)


def test_variants_share_their_spleeter_model(models):
    """Loading 2stems and 2stems+hpss builds one Spleeter graph; unknown variants are refused."""
    from audiolime.separator.hpss import load_separators

    seps = load_separators(models / "spleeter", ["2stems", "2stems+hpss"], warmup=False)
    assert seps["2stems+hpss"].base is seps["2stems"]
    assert seps["2stems+hpss"].stems_names == ["vocals", "harmonic", "percussive"]
    with pytest.raises(ModelNotFound, match="installed: 2stems"):
        load_separators(models / "spleeter", ["5stems"], warmup=False)
    seps["2stems"].close()
