"""Write an FCN tagger as a TF Serving SavedModel (signatures, assets) from its PyTorch checkpoint.

``export_fcn`` writes ``<model_base>/<name>/<version>/`` (fcn-msd, fcn-mtat, fcn-jamendo: the
catalog is ``audiolime.modelstore.FCN_TAGGERS``) with the signatures

* ``serving_default``: ``waveform`` float32 ``[batch, 464000]`` -> ``probabilities`` float32 ``[batch, tags]``
* ``spectrogram``: ``waveform`` -> ``spectrogram`` float32 ``[batch, 1813, 96]`` (frames x mel bands,
  the dB mel spectrogram the network sees, before its input batch norm)
* ``from_spectrogram``: ``spectrogram`` ``[batch, 1813, 96]`` -> ``probabilities``
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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from audiolime.modelcopy import make_readable
from audiolime.tagger.fcn_graph import N_FRAMES, N_MELS, SAMPLE_RATE, WINDOW_SAMPLES, build_fcn_module
from audiolime.tagger.labels import MSD_LABELS

MODEL_NAME = "fcn-msd"  # the paper's; the default name


def load_state_dict(pth: Path) -> dict[str, np.ndarray]:
    """Read the (legacy-serialized) PyTorch state_dict of ``pth`` into numpy arrays."""
    try:
        import torch  # noqa: PLC0415  (lazy: serving never needs torch)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PyTorch is needed to read the FCN checkpoint: pip install 'audiolime[convert]'"
        ) from e
    sd = torch.load(str(pth), map_location="cpu")
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def metadata(source: str, name: str = MODEL_NAME, labels: Sequence[str] = MSD_LABELS) -> dict:
    """The ``audiolime.json`` asset; ``source`` names the weights (e.g. their sha256)."""
    return {
        "name": name,
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW_SAMPLES,
        "spectrogram_shape": [N_FRAMES, N_MELS],
        "spectrogram_layout": "frames_mels",
        "spectrogram_unit": "dB power (10*log10(max(mel, 1e-10)))",
        "labels": list(labels),
        "signatures": ["serving_default", "spectrogram", "from_spectrogram", "labels"],
        "source": source,
        "licence": "MIT, Copyright (c) 2020 Music Technology Group, Universitat Pompeu Fabra",
    }


def export_fcn(state_dict: Mapping[str, np.ndarray], export_dir: Path, *, source: str,
               overwrite: bool = False, name: str = MODEL_NAME, labels: Sequence[str] = MSD_LABELS) -> Path:
    """Write the FCN as a TF SavedModel to ``export_dir`` (e.g. ``<model_base>/fcn-msd/1``);
    ``name`` and ``labels`` (output order) are the checkpoint's.

    ``source`` names the weights in the metadata asset. The SavedModel is written to a temporary
    directory beside ``export_dir`` and renamed into place, so a model server watching the parent
    never sees a half-written version.
    """
    import tensorflow as tf  # noqa: PLC0415

    export_dir = Path(export_dir)
    if export_dir.exists() and not overwrite:
        raise FileExistsError(f"{export_dir} exists (pass overwrite=True / --overwrite)")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{export_dir.name}-", dir=export_dir.parent))
    try:
        asset_src = tmp / "_asset_src"
        asset_src.mkdir()
        (asset_src / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (asset_src / "audiolime.json").write_text(json.dumps(metadata(source, name, labels), indent=2) + "\n",
                                                  encoding="utf-8")
        module = build_fcn_module(state_dict, labels)
        module.labels_asset = tf.saved_model.Asset(str(asset_src / "labels.txt"))
        module.meta_asset = tf.saved_model.Asset(str(asset_src / "audiolime.json"))
        saved = tmp / "model"
        tf.saved_model.save(module, str(saved), signatures={
            "serving_default": module.serve,
            "spectrogram": module.spectrogram,
            "from_spectrogram": module.from_spectrogram,
            "labels": module.labels,
        })
        for name in ("labels.txt", "audiolime.json"):  # Asset copies them; make sure
            if not (saved / "assets" / name).is_file():
                (saved / "assets").mkdir(exist_ok=True)
                shutil.copy2(asset_src / name, saved / "assets" / name)
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
