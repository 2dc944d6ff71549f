"""Write a PyTorch tagger of ``minzwon/sota-music-tagging-models`` (FCN, CRNN, Musicnn) as a TF Serving
SavedModel (signatures, assets) from its checkpoint.

``export_tagger`` writes ``<model_base>/<name>/<version>/`` (fcn-msd, fcn-mtat, fcn-jamendo,
crnn-mtat, crnn-jamendo, crnn-msd, musicnn-mtat, musicnn-jamendo: the catalog is ``audiolime.modelstore.TORCH_TAGGERS``; its
``arch`` picks the body, :data:`ARCHITECTURES`) with the signatures

* ``serving_default``: ``waveform`` float32 ``[batch, window]`` (464000 for the 29 s FCN and CRNN,
  48000 for the 3 s Musicnn)
  -> ``probabilities`` float32 ``[batch, tags]``
* ``spectrogram``: ``waveform`` -> ``spectrogram`` float32 ``[batch, frames, 96]`` (1813 frames for
  29 s, 188 for 3 s; frames x mel bands, the dB mel spectrogram the network sees, before its input batch norm)
* ``from_spectrogram``: ``spectrogram`` ``[batch, frames, 96]`` -> ``probabilities``
* ``labels``: no inputs -> ``labels`` string ``[tags]``, ``sample_rate`` int32 scalar

and the assets ``labels.txt`` and ``audiolime.json``. PyTorch is needed only to read the checkpoint
(``pip install 'audiolime[convert]'``); it is imported lazily so serving never needs it. Fetching
and verifying the checkpoint is ``audiolime.modelstore``'s job.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from audiolime.modelcopy import make_readable
from audiolime.tagger.crnn_graph import build_crnn_module
from audiolime.tagger.fcn_graph import N_MELS, SAMPLE_RATE, WINDOW_SAMPLES, build_fcn_module, n_frames
from audiolime.tagger.labels import MSD_LABELS
from audiolime.tagger.musicnn_pt_graph import WINDOW_SAMPLES as MUSICNN_WINDOW_SAMPLES
from audiolime.tagger.musicnn_pt_graph import build_musicnn_pt_module

MODEL_NAME = "fcn-msd"  # the paper's; the default name

# arch -> (builder(state_dict, labels, name) -> tf.Module, window in samples at 16 kHz)
ARCHITECTURES: dict[str, tuple[Callable, int]] = {
    "fcn": (build_fcn_module, WINDOW_SAMPLES),
    "crnn": (build_crnn_module, WINDOW_SAMPLES),
    "musicnn": (build_musicnn_pt_module, MUSICNN_WINDOW_SAMPLES),  # 3 s: 48000 samples, 188 frames
}


def load_state_dict(pth: Path) -> dict[str, np.ndarray]:
    """Read the (legacy-serialized) PyTorch state_dict of ``pth`` into numpy arrays."""
    try:
        import torch  # noqa: PLC0415  (lazy: serving never needs torch)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PyTorch is needed to read the tagger's checkpoint: pip install 'audiolime[convert]'"
        ) from e
    sd = torch.load(str(pth), map_location="cpu")  # weights_only (torch's default) reads these state dicts
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def metadata(source: str, name: str = MODEL_NAME, labels: Sequence[str] = MSD_LABELS, arch: str = "fcn") -> dict:
    """The ``audiolime.json`` asset; ``source`` names the weights (e.g. their sha256)."""
    window = ARCHITECTURES[arch][1]
    return {
        "name": name,
        "architecture": arch,
        "sample_rate": SAMPLE_RATE,
        "window_samples": window,
        "spectrogram_shape": [n_frames(window), N_MELS],
        "spectrogram_layout": "frames_mels",
        "spectrogram_unit": "dB power (10*log10(max(mel, 1e-10)))",
        "labels": list(labels),
        "signatures": ["serving_default", "spectrogram", "from_spectrogram", "labels"],
        "source": source,
        "licence": "MIT, Copyright (c) 2020 Music Technology Group, Universitat Pompeu Fabra",
    }


def export_tagger(state_dict: Mapping[str, np.ndarray], export_dir: Path, *, source: str,
                  overwrite: bool = False, name: str = MODEL_NAME, labels: Sequence[str] = MSD_LABELS,
                  arch: str = "fcn") -> Path:
    """Write the tagger (architecture ``arch`` of :data:`ARCHITECTURES`) as a TF SavedModel to
    ``export_dir`` (e.g. ``<model_base>/fcn-msd/1``); ``name`` and ``labels`` (output order) are
    the checkpoint's.

    ``source`` names the weights in the metadata asset. The SavedModel is written to a temporary
    directory beside ``export_dir`` and renamed into place, so a model server watching the parent
    never sees a half-written version.
    """
    import tensorflow as tf  # noqa: PLC0415

    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown tagger architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    build = ARCHITECTURES[arch][0]
    export_dir = Path(export_dir)
    if export_dir.exists() and not overwrite:
        raise FileExistsError(f"{export_dir} exists (pass overwrite=True / --overwrite)")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{export_dir.name}-", dir=export_dir.parent))
    try:
        asset_src = tmp / "_asset_src"
        asset_src.mkdir()
        (asset_src / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (asset_src / "audiolime.json").write_text(json.dumps(metadata(source, name, labels, arch), indent=2) + "\n",
                                                  encoding="utf-8")
        module = build(state_dict, labels, name=arch)
        module.labels_asset = tf.saved_model.Asset(str(asset_src / "labels.txt"))
        module.meta_asset = tf.saved_model.Asset(str(asset_src / "audiolime.json"))
        saved = tmp / "model"
        tf.saved_model.save(module, str(saved), signatures={
            "serving_default": module.serve,
            "spectrogram": module.spectrogram,
            "from_spectrogram": module.from_spectrogram,
            "labels": module.labels,
        })
        for asset in ("labels.txt", "audiolime.json"):  # Asset copies them; make sure
            if not (saved / "assets" / asset).is_file():
                (saved / "assets").mkdir(exist_ok=True)
                shutil.copy2(asset_src / asset, saved / "assets" / asset)
        make_readable(saved)
        old = None
        if export_dir.exists():
            old = export_dir.parent / f".old-{export_dir.name}-{os.getpid()}"
            os.rename(export_dir, old)
        os.rename(saved, export_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


def export_fcn(state_dict: Mapping[str, np.ndarray], export_dir: Path, *, source: str,
               overwrite: bool = False, name: str = MODEL_NAME, labels: Sequence[str] = MSD_LABELS) -> Path:
    """:func:`export_tagger` of an FCN (the name the FCN conversion has always had)."""
    return export_tagger(state_dict, export_dir, source=source, overwrite=overwrite, name=name, labels=labels,
                         arch="fcn")
