"""FCN (MSD) PyTorch -> TF SavedModel conversion: equivalence on real music, signatures, checksums;
the other published PyTorch taggers (FCN MTAT/MTG-Jamendo, CRNN MTAT/MTG-Jamendo/MSD) the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # the dev set-up installs it (it converts and verifies the FCN; never serves)

from conftest import shared_dir  # noqa: E402

SHARED = shared_dir()
PTH = SHARED / "models" / "fcn-msd" / "best_model.pth"
AUDIO = SHARED / "audio"

from audiolime import modelstore  # noqa: E402
from audiolime.commands import fcn_convert  # noqa: E402
from audiolime.modelstore import sha256_file  # noqa: E402
from audiolime.tagger.fcn_export import load_state_dict  # noqa: E402
from audiolime.tagger.fcn_graph import SAMPLE_RATE, WINDOW_SAMPLES  # noqa: E402
from audiolime.tagger.labels import MSD_LABELS  # noqa: E402
from reference.fcn_torch import build_torch, build_torch_fcn  # noqa: E402

pytestmark = pytest.mark.slow

SONGS = {
    "brahms": "Brahms_-_Hungarian_Dance_No5_string_orchestra.ogg",
    "karissa": "Karissa_Hobbs_-_Lets_Go_Fishin.ogg",
    "vibe_ace": "Kevin_MacLeod_-_Vibe_Ace.ogg",
    "drum_bass": "admiralbob77_-_Choice_-_Drum-bass.ogg",  # 25 s: zero-padded to 29 s
}


def _window(path: Path) -> np.ndarray:
    """Middle 29 s of a song as 16 kHz mono float32 (zero-padded when shorter)."""
    import soundfile as sf
    import soxr

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(axis=1), sr, SAMPLE_RATE).astype(np.float32)
    n = WINDOW_SAMPLES
    if len(audio) < n:
        return np.pad(audio, (0, n - len(audio)))
    start = (len(audio) - n) // 2
    return audio[start:start + n]


@pytest.fixture(scope="module")
def state_dict():
    return load_state_dict(PTH)


@pytest.fixture(scope="module")
def torch_model(state_dict):
    return build_torch_fcn(state_dict)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("model_base")
    assert fcn_convert.main(["--pth", str(PTH), "--model-base", str(base)]) == 0
    return base / "fcn-msd" / "1"


@pytest.fixture(scope="module")
def saved(export_dir):
    import tensorflow as tf

    return tf.saved_model.load(str(export_dir))


@pytest.fixture(scope="module")
def waveforms():
    return {k: _window(AUDIO / v) for k, v in SONGS.items()}


@pytest.fixture(scope="module")
def batch(waveforms):
    return np.stack(list(waveforms.values()))


@pytest.fixture(scope="module")
def torch_probs(torch_model, batch):
    with torch.no_grad():
        return torch_model(torch.from_numpy(batch)).numpy()


def _call(saved, signature, **inputs):
    import tensorflow as tf

    out = saved.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _top(probs: np.ndarray, k: int = 5) -> list[str]:
    return [MSD_LABELS[i] for i in np.argsort(-probs)[:k]]


def test_savedmodel_layout_and_assets(export_dir, saved):
    """The version dir has the TF Serving layout, all signatures and the audiolime assets."""
    assert (export_dir / "saved_model.pb").is_file()
    assert not [p for p in export_dir.parent.iterdir() if p.name != "1"], "temp dirs left behind"
    assert set(saved.signatures) == {"serving_default", "spectrogram", "from_spectrogram", "labels"}
    meta = json.loads((export_dir / "assets" / "audiolime.json").read_text())
    assert meta["name"] == "fcn-msd" and meta["sample_rate"] == 16000
    assert meta["window_samples"] == 464000 and meta["spectrogram_shape"] == [1813, 96]
    assert meta["labels"] == MSD_LABELS and modelstore.FCN_PTH_SHA256 in meta["source"]
    assert (export_dir / "assets" / "labels.txt").read_text().splitlines() == MSD_LABELS
    out = _call(saved, "labels")
    assert [s.decode() for s in out["labels"]] == MSD_LABELS and len(MSD_LABELS) == 50
    assert out["sample_rate"] == 16000 and out["sample_rate"].dtype == np.int32


def test_savedmodel_matches_pytorch_on_real_music(saved, batch, torch_probs):
    """serving_default equals the PyTorch FCN on 29 s windows of 4 songs: max |dp| <= 1e-6 (the
    README publishes 6.3e-7)."""
    probs = _call(saved, "serving_default", waveform=batch)["probabilities"]
    assert probs.shape == (len(SONGS), 50) and probs.dtype == np.float32
    diff = float(np.abs(probs - torch_probs).max())
    print(f"max |dp| torch vs SavedModel: {diff:.3g}")
    assert diff <= 1e-6


def test_spectrogram_signature_matches_torch_front_end(saved, torch_model, batch):
    """spectrogram() equals the torch mel/dB front end; from_spectrogram(spectrogram(x)) == serve(x)."""
    spec = _call(saved, "spectrogram", waveform=batch)["spectrogram"]
    assert spec.shape == (len(SONGS), 1813, 96)
    with torch.no_grad():
        ref = torch_model.spectrogram(torch.from_numpy(batch)).numpy().transpose(0, 2, 1)
    diff = np.abs(spec - ref)
    print(f"spectrogram |d dB|: max {diff.max():.3g}, mean {diff.mean():.3g}, "
          f"max where > -60 dB {diff[ref > -60].max():.3g}")
    assert diff.max() < 0.1  # the worst bins sit ~80 dB below the frame peak
    assert diff[ref > -60].max() < 0.01
    assert diff.mean() < 1e-4
    via_spec = _call(saved, "from_spectrogram", spectrogram=spec)["probabilities"]
    direct = _call(saved, "serving_default", waveform=batch)["probabilities"]
    np.testing.assert_allclose(via_spec, direct, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch_from_spec = torch_model.from_spectrogram(
            torch.from_numpy(spec.transpose(0, 2, 1).copy())).numpy()
    np.testing.assert_allclose(via_spec, torch_from_spec, rtol=0, atol=1e-5)


def test_predictions_are_musically_sane(saved, batch):
    """Tags fit the songs (a mis-transposed conv predicts 'electronic' for everything)."""
    probs = dict(zip(SONGS, _call(saved, "serving_default", waveform=batch)["probabilities"]))
    for name, p in probs.items():
        print(name, [(t, round(float(p[MSD_LABELS.index(t)]), 3)) for t in _top(p)])
    idx = MSD_LABELS.index
    assert _top(probs["brahms"], 1) == ["instrumental"]
    assert probs["brahms"][idx("electronic")] < 0.1
    assert _top(probs["karissa"], 1)[0] in {"pop", "folk", "female vocalists", "country", "acoustic"}
    assert "female vocalists" in _top(probs["karissa"], 3)
    assert _top(probs["vibe_ace"], 1) == ["jazz"]
    assert len({_top(p, 1)[0] for p in probs.values()}) >= 3
    mat = np.stack(list(probs.values()))
    assert np.abs(mat[:, None] - mat[None]).sum(-1).max() > 1.0


def test_loads_with_local_tagger(export_dir, batch, torch_probs):
    """The export follows the tagger SavedModel convention read by savedmodel.LocalTagger."""
    from audiolime.tagger import savedmodel

    tagger = savedmodel.LocalTagger.load(export_dir.parents[1], "fcn-msd")
    assert tagger.labels == MSD_LABELS and tagger.sample_rate == 16000
    np.testing.assert_allclose(tagger.predict(batch[:2]), torch_probs[:2], rtol=0, atol=1e-6)
    assert tagger.spectrogram(batch[:1]).shape == (1, 1813, 96)


def test_wrong_checksum_is_a_clear_error(tmp_path, capsys):
    """A file with the wrong sha256 is refused with a one-line error (exit 2, no traceback)."""
    bad = tmp_path / "best_model.pth"
    bad.write_bytes(PTH.read_bytes()[:-1] + b"\0")
    with pytest.raises(modelstore.ChecksumError, match="checksum mismatch"):
        modelstore.verify_fcn_weights(bad)
    base = tmp_path / "base"
    assert fcn_convert.main(["--pth", str(bad), "--model-base", str(base)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checksum mismatch") and "\n" not in err
    assert not (base / "fcn-msd" / "1").exists()
    assert fcn_convert.main(["--pth", str(tmp_path / "missing.pth"), "--model-base", str(base)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no such weights file") and "\n" not in err


def test_fetch_verifies_checksum(tmp_path):
    """modelstore.fetch_fcn_weights keeps a download only if its sha256 matches (file:// URL offline)."""
    dest = tmp_path / "cache" / "best_model.pth"
    got = modelstore.fetch_fcn_weights(dest, url=PTH.as_uri())
    assert got == dest and sha256_file(dest) == modelstore.FCN_PTH_SHA256
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(modelstore.ChecksumError):
        modelstore.fetch_fcn_weights(other, url=PTH.as_uri(), sha256="0" * 64)
    assert list(other.iterdir()) == []  # no partial file left


def test_fcn_weights_prefer_a_verified_local_copy(tmp_path, monkeypatch):
    """modelstore.fcn_weights takes $AUDIOLIME_FCN_PTH before any download, and only if its sha256 matches."""
    monkeypatch.setenv("AUDIOLIME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUDIOLIME_FCN_PTH", str(PTH))
    assert modelstore.fcn_weights() == PTH
    bad = tmp_path / "best_model.pth"
    bad.write_bytes(PTH.read_bytes()[:-1] + b"\0")
    monkeypatch.setenv("AUDIOLIME_FCN_PTH", str(bad))
    with pytest.raises(modelstore.ChecksumError):
        modelstore.fcn_weights()
    assert not (tmp_path / "cache").exists()


def test_tagger_does_not_import_torch():
    """Importing the converter, the exporter or the tagger server never imports torch."""
    code = ("import sys, audiolime.commands.fcn_convert, audiolime.tagger.fcn_export, audiolime.tagger.server; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the rest of the catalog: FCN on MagnaTagATune and MTG-Jamendo, CRNN on all three, Musicnn ---------
# What each must say of the four songs (its top tags, from listening: strings, a singer with guitar, a
# jazzy piano tune, drums and bass); a wrong output order (e.g. MTG-Jamendo's tags unsorted) or a
# mis-wired GRU fails these. The CRNN reads its GRU's last step, which for drum_bass (25 s) is the
# window's 4 s of zero padding: weaker there. crnn-mtat hears no voice in Karissa's middle 29 s
# (guitar 0.21, slow 0.21, ...) and crnn-msd calls Brahms "jazz, instrumental": what they say. The
# Musicnn models hear the middle 3 s of each window.
FAMILY = {
    "fcn-mtat": {"brahms": ({"classical"}, 1), "karissa": ({"vocal", "female", "singing", "woman"}, 3),
                 "drum_bass": ({"drums"}, 2)},
    "fcn-jamendo": {"brahms": ({"genre---classical"}, 1), "karissa": ({"genre---pop", "genre---popfolk"}, 3),
                    "drum_bass": ({"instrument---drums"}, 2)},
    "crnn-mtat": {"brahms": ({"classical"}, 1), "karissa": ({"guitar"}, 1), "vibe_ace": ({"drums", "beat"}, 2),
                  "drum_bass": ({"drums"}, 3)},
    "crnn-jamendo": {"brahms": ({"genre---classical"}, 1), "karissa": ({"genre---pop", "genre---popfolk"}, 1),
                     "drum_bass": ({"instrument---drums", "instrument---bass"}, 3)},
    "crnn-msd": {"brahms": ({"instrumental"}, 2), "karissa": ({"female vocalists"}, 1), "vibe_ace": ({"jazz"}, 1)},
    "musicnn-mtat": {"brahms": ({"classical"}, 1), "karissa": ({"female", "woman", "vocal"}, 1),
                     "drum_bass": ({"drums"}, 2)},
    "musicnn-jamendo": {"brahms": ({"genre---classical"}, 1), "karissa": ({"genre---pop", "genre---popfolk"}, 1),
                        "drum_bass": ({"instrument---drums", "instrument---bass"}, 4)},
}
# max |dp| against the PyTorch original on the 4 songs, measured (TF 2.12, torch 2.13 CPU): fcn-mtat
# 7.3e-7, fcn-jamendo 2.4e-7, crnn-mtat 3.0e-7, crnn-jamendo 5.4e-7, crnn-msd 6.3e-7, musicnn-mtat
# 8.3e-7, musicnn-jamendo 1.1e-6. Tolerance per architecture: the FCN's 1e-6 as before; the CRNN's
# and the Musicnn's 10x their worst (the GRU's 36 recurrent steps; the Musicnn's 129-tap convs).
TOLERANCE = {"fcn": 1e-6, "crnn": 6e-6, "musicnn": 1e-5}
SPECTROGRAM_SHAPE = {"fcn": [1813, 96], "crnn": [1813, 96], "musicnn": [188, 96]}


def _model_input(arch: str, batch: np.ndarray) -> np.ndarray:
    """The 29 s windows, or their middle 3 s for the Musicnn."""
    if arch != "musicnn":
        return batch
    n = 48_000
    start = (WINDOW_SAMPLES - n) // 2
    return np.ascontiguousarray(batch[:, start:start + n])


@pytest.fixture(scope="module", params=sorted(FAMILY))
def family(request, tmp_path_factory):
    """(name, installed SavedModel dir, its PyTorch original) via modelstore.install_fcn (the copy in
    ../shared/models/sota-tagging, sha256-verified)."""
    name = request.param
    spec = modelstore.fcn_spec(name)
    model_dir = tmp_path_factory.mktemp(name)
    path = modelstore.install_fcn(model_dir, name)
    return name, path, build_torch(spec.arch, load_state_dict(modelstore.fcn_weights(spec)))


def test_family_matches_pytorch_and_names_what_is_playing(family, batch):
    """Each converted tagger equals its PyTorch original on the 4 songs (max |dp| within TOLERANCE),
    carries its own 50 labels (assets, labels signature, audiolime.json) and tags the songs as a
    listener would."""
    from audiolime.tagger import savedmodel

    name, path, torch_model = family
    spec = modelstore.fcn_spec(name)
    tagger = savedmodel.LocalTagger.load(path.parents[1], name)
    assert tagger.labels == list(spec.labels) and len(spec.labels) == 50 and tagger.sample_rate == 16000
    batch = _model_input(spec.arch, batch)
    assert tagger.window_samples == batch.shape[1]
    meta = json.loads((path / "assets" / "audiolime.json").read_text())
    assert meta["name"] == name and spec.sha256 in meta["source"] and meta["labels"] == list(spec.labels)
    assert meta["architecture"] == spec.arch and meta["spectrogram_shape"] == SPECTROGRAM_SHAPE[spec.arch]
    assert meta["window_samples"] == tagger.window_samples
    probs = tagger.predict(batch)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(batch)).numpy()
    diff = float(np.abs(probs - ref).max())
    print(f"{name}: max |dp| torch vs SavedModel {diff:.3g}")
    assert diff <= TOLERANCE[spec.arch]
    for song, (expected, k) in FAMILY[name].items():
        row = probs[list(SONGS).index(song)]
        top = [spec.labels[i] for i in np.argsort(-row)[:k]]
        assert expected & set(top), (song, top)
    if spec.arch != "fcn":  # from_spectrogram equals the original's body on the same spectrogram
        spec_db = tagger.spectrogram(batch[:2])
        with torch.no_grad():
            ref2 = torch_model.from_spectrogram(torch.from_numpy(spec_db.transpose(0, 2, 1).copy())).numpy()
        np.testing.assert_allclose(tagger.predict_spectrogram(spec_db), ref2, rtol=0, atol=TOLERANCE[spec.arch])


def test_unknown_fcn_tagger_is_a_clear_error(tmp_path):
    from audiolime.errors import ModelNotFound

    with pytest.raises(ModelNotFound, match="unknown PyTorch tagger 'fcn-gtzan' \\(known: fcn-msd, fcn-mtat, "
                                            "fcn-jamendo, crnn-mtat, crnn-jamendo, crnn-msd, musicnn-mtat, musicnn-jamendo\\)"):
        modelstore.setup_all(tmp_path, taggers=("fcn-gtzan",))
    assert not list(tmp_path.iterdir())  # refused before anything was fetched
