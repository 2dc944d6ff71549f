"""musicnn (MSD) SavedModel export and LocalTagger: equivalence with the original on real music."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audiolime.tagger.labels import MSD_LABELS
from audiolime.tagger.musicnn_export import MODEL_NAME, export_musicnn
from audiolime.tagger.musicnn_graph import N_FRAMES, N_MELS, SR, WINDOW_SAMPLES
from audiolime.tagger.savedmodel import LocalTagger, ModelNotFoundError, list_versions
from conftest import model_dir
from reference.musicnn_original import MusicnnReference, reference_spectrogram

MODEL_DIR = model_dir()
CHECKPOINT = MODEL_DIR / "checkpoints" / "MSD_musicnn"
KARISSA = "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"
EQUIVALENCE_SONGS = [
    "Brahms_-_Hungarian_Dance_No5_string_orchestra.ogg",  # quiet passages (RMS ~0.006)
    KARISSA,
    "Kevin_MacLeod_-_Vibe_Ace.ogg",
    "admiralbob77_-_Choice_-_Drum-bass.ogg",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audio_dir(shared: Path) -> Path:
    return shared / "audio"


def _windows(path: Path) -> np.ndarray:
    """All consecutive 3 s windows of a song, 16 kHz mono float32: ``[n, WINDOW_SAMPLES]``."""
    import soundfile as sf
    import soxr

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(axis=1), sr, SR).astype(np.float32)
    n = len(audio) // WINDOW_SAMPLES
    return audio[:n * WINDOW_SAMPLES].reshape(n, WINDOW_SAMPLES)


@pytest.fixture(scope="module")
def savedmodel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    existing = MODEL_DIR / "serving" / MODEL_NAME / "1"
    if (existing / "saved_model.pb").is_file():
        return existing
    return export_musicnn(CHECKPOINT, tmp_path_factory.mktemp("serving") / MODEL_NAME / "1")


@pytest.fixture(scope="module")
def tagger(savedmodel_dir: Path) -> LocalTagger:
    return LocalTagger.load(savedmodel_dir.parents[1], MODEL_NAME, 1)


@pytest.fixture(scope="module")
def reference():
    with MusicnnReference(CHECKPOINT) as ref:
        yield ref


@pytest.fixture(scope="module")
def test_windows(audio_dir: Path) -> np.ndarray:
    """First, quietest, middle and loudest windows of each song, plus -40 dB and silent windows."""
    picked = []
    for song in EQUIVALENCE_SONGS:
        windows = _windows(audio_dir / song)
        rms = np.sqrt(np.mean(windows ** 2, axis=1))
        idx = sorted({0, int(rms.argmin()), len(windows) // 2, int(rms.argmax())})
        picked.append(windows[idx])
    picked.append(picked[0][-1:] * 0.01)
    picked.append(np.zeros((1, WINDOW_SAMPLES), np.float32))
    return np.concatenate(picked)


def test_equivalent_to_original_musicnn(tagger: LocalTagger, reference: MusicnnReference,
                                        test_windows: np.ndarray) -> None:
    """The SavedModel matches librosa features + the TF1 checkpoint on real music windows."""
    assert len(test_windows) >= 3 * 3
    spec = tagger.spectrogram(test_windows)
    spec_ref = reference_spectrogram(test_windows)
    assert spec.shape == spec_ref.shape == (len(test_windows), N_FRAMES, N_MELS)
    # float32 round-off may flip musicnn's float16 rounding: at most one float16 step (~4.2e-4)
    np.testing.assert_allclose(spec, spec_ref, rtol=0, atol=5e-4)
    assert np.mean(np.abs(spec - spec_ref)) < 1e-5

    probs = tagger.predict(test_windows)
    probs_ref = reference.predict(test_windows)
    assert probs.dtype == np.float32 and probs.shape == (len(test_windows), len(MSD_LABELS))
    assert np.max(np.abs(probs - probs_ref)) <= 1.1e-5  # the README's published figure (measured: 8.4e-6)
    np.testing.assert_allclose(reference.predict_spectrogram(spec), probs, rtol=0, atol=1e-6)  # measured: 0


def test_karissa_female_vocalists(tagger: LocalTagger, audio_dir: Path) -> None:
    """Karissa Hobbs' song is tagged 'female vocalists' among the top 3 (mean over windows)."""
    mean = tagger.predict(_windows(audio_dir / KARISSA)).mean(axis=0)
    top3 = [tagger.labels[i] for i in np.argsort(-mean)[:3]]
    assert "female vocalists" in top3, top3


def test_signatures_labels_and_assets(tagger: LocalTagger, savedmodel_dir: Path) -> None:
    """Signatures, shapes, labels and assets follow the contract; the signatures compose."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((savedmodel_dir / "saved_model.pb").read_bytes())
    sigs = saved.meta_graphs[0].signature_def

    def io(sig: str, which: str) -> dict[str, tuple[int, list[int]]]:
        infos = getattr(sigs[sig], which)
        return {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in infos.items()}

    float32, string, int32 = 1, 7, 3  # tensorflow DataType enum values
    assert set(sigs) == {"serving_default", "from_spectrogram", "spectrogram", "labels"}
    assert all(s.method_name == "tensorflow/serving/predict" for s in sigs.values())
    assert io("serving_default", "inputs") == {"waveform": (float32, [-1, WINDOW_SAMPLES])}
    assert io("serving_default", "outputs") == {"probabilities": (float32, [-1, 50])}
    assert io("from_spectrogram", "inputs") == {"spectrogram": (float32, [-1, N_FRAMES, N_MELS])}
    assert io("from_spectrogram", "outputs") == {"probabilities": (float32, [-1, 50])}
    assert io("spectrogram", "inputs") == {"waveform": (float32, [-1, WINDOW_SAMPLES])}
    assert io("spectrogram", "outputs") == {"spectrogram": (float32, [-1, N_FRAMES, N_MELS])}
    assert io("labels", "inputs") == {}
    assert io("labels", "outputs") == {"labels": (string, [50]), "sample_rate": (int32, [])}

    assert tagger.labels == MSD_LABELS
    assert (tagger.sample_rate, tagger.window_samples) == (SR, WINDOW_SAMPLES)
    assets = savedmodel_dir / "assets"
    assert (assets / "labels.txt").read_text(encoding="utf-8").splitlines() == MSD_LABELS
    assert json.loads((assets / "audiolime.json").read_text(encoding="utf-8")) == {
        "name": "musicnn-msd", "sample_rate": 16000, "window_samples": 48000,
        "spectrogram_shape": [187, 96], "labels": MSD_LABELS,
        "source": "musicnn==0.1.0 MSD_musicnn",
    }

    x = np.random.default_rng(0).uniform(-0.3, 0.3, (3, WINDOW_SAMPLES)).astype(np.float32)
    probs = tagger.predict(x)
    assert probs.shape == (3, 50) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    spec = tagger.spectrogram(x)
    assert spec.shape == (3, N_FRAMES, N_MELS) and spec.dtype == np.float32
    np.testing.assert_allclose(tagger.predict_spectrogram(spec), probs, rtol=0, atol=1e-6)


def test_local_tagger_errors_and_versions(tagger: LocalTagger, savedmodel_dir: Path,
                                          tmp_path: Path) -> None:
    """Unknown models/versions and wrong shapes raise clear errors; the newest version is loaded."""
    base = tmp_path / "serving"
    for version in ("1", "2"):
        (base / MODEL_NAME).mkdir(parents=True, exist_ok=True)
        (base / MODEL_NAME / version).symlink_to(savedmodel_dir.resolve(), target_is_directory=True)
    (base / MODEL_NAME / "3").mkdir()  # incomplete export: ignored
    (base / MODEL_NAME / ".4.tmp").mkdir()  # staging directory: ignored
    assert list_versions(base, MODEL_NAME) == [1, 2]
    assert list_versions(base, "nope") == []

    with pytest.raises(ModelNotFoundError, match="available models: musicnn-msd"):
        LocalTagger.load(base, "nope")
    with pytest.raises(LookupError, match="available versions: 1, 2"):
        LocalTagger.load(base, MODEL_NAME, version=3)

    newest = LocalTagger.load(base, MODEL_NAME)
    assert (newest.name, newest.version) == (MODEL_NAME, 2)

    for bad in (np.zeros(WINDOW_SAMPLES), np.zeros((2, WINDOW_SAMPLES - 1)),
                np.zeros((1, 1, WINDOW_SAMPLES))):
        with pytest.raises(ValueError, match=r"\[batch, 48000\]"):
            tagger.predict(bad)
    with pytest.raises(ValueError, match=r"\[batch, 187, 96\]"):
        tagger.predict_spectrogram(np.zeros((2, 96, N_FRAMES)))
    assert tagger.predict(np.zeros((0, WINDOW_SAMPLES))).shape == (0, 50)
