"""Export musicnn's MSD TF1 checkpoint as a TF Serving SavedModel, log-mel front end included.

Signatures of the exported model (all ``tensorflow/serving/predict``):

* ``serving_default``: ``waveform`` float32 ``[batch, 48000]`` -> ``probabilities`` ``[batch, 50]``
* ``from_spectrogram``: ``spectrogram`` float32 ``[batch, 187, 96]`` -> ``probabilities``
* ``spectrogram``: ``waveform`` -> ``spectrogram`` ``[batch, 187, 96]`` (the model input)
* ``labels``: no inputs -> ``labels`` string ``[50]``, ``sample_rate`` int32 scalar

The graph itself (front end and network) is ``musicnn_graph``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef

from audiolime.modelcopy import make_readable
from audiolime.tagger.labels import MSD_LABELS
from audiolime.tagger.musicnn_graph import (
    N_FRAMES,
    N_MELS,
    SR,
    WINDOW_SAMPLES,
    build_musicnn,
    checkpoint_prefix,
    log_mel_spectrogram,
)

log = logging.getLogger(__name__)

MODEL_NAME = "musicnn-msd"
SOURCE = "musicnn==0.1.0 MSD_musicnn"


def _write_assets(directory: Path) -> list[Path]:
    directory.mkdir(parents=True)
    labels_txt = directory / "labels.txt"
    labels_txt.write_text("\n".join(MSD_LABELS) + "\n", encoding="utf-8")
    meta = directory / "audiolime.json"
    meta.write_text(json.dumps({
        "name": MODEL_NAME,
        "sample_rate": SR,
        "window_samples": WINDOW_SAMPLES,
        "spectrogram_shape": [N_FRAMES, N_MELS],
        "labels": MSD_LABELS,
        "source": SOURCE,
    }, indent=2) + "\n", encoding="utf-8")
    return [labels_txt, meta]


def _predict_signature(inputs: dict[str, tf.Tensor],
                       outputs: dict[str, tf.Tensor]) -> SignatureDef:
    info = tf.compat.v1.saved_model.build_tensor_info
    return tf.compat.v1.saved_model.build_signature_def(
        inputs={k: info(v) for k, v in inputs.items()},
        outputs={k: info(v) for k, v in outputs.items()},
        method_name=tf.compat.v1.saved_model.PREDICT_METHOD_NAME,
    )


def _build_and_save(prefix: str, asset_files: list[Path], staged: Path) -> None:
    graph = tf.Graph()
    with graph.as_default():
        waveform = tf.compat.v1.placeholder(tf.float32, [None, WINDOW_SAMPLES], name="waveform")
        spectrogram = tf.identity(log_mel_spectrogram(waveform), name="spectrogram")
        # Fed directly by `from_spectrogram`; computed from the waveform otherwise.
        model_input = tf.compat.v1.placeholder_with_default(
            spectrogram, [None, N_FRAMES, N_MELS], name="model_input")
        logits = build_musicnn(model_input, is_training=False, num_classes=len(MSD_LABELS))
        probabilities = tf.nn.sigmoid(logits, name="probabilities")
        labels = tf.constant(MSD_LABELS, dtype=tf.string, name="labels")
        sample_rate = tf.constant(SR, dtype=tf.int32, name="sample_rate")
        assets = [tf.constant(str(p), name=f"asset_{p.stem}") for p in asset_files]
        for asset in assets:
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, asset)

        signatures = {
            tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: _predict_signature(
                {"waveform": waveform}, {"probabilities": probabilities}),
            "from_spectrogram": _predict_signature(
                {"spectrogram": model_input}, {"probabilities": probabilities}),
            "spectrogram": _predict_signature({"waveform": waveform}, {"spectrogram": spectrogram}),
            "labels": _predict_signature({}, {"labels": labels, "sample_rate": sample_rate}),
        }
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, prefix)
            builder = tf.compat.v1.saved_model.Builder(str(staged))
            builder.add_meta_graph_and_variables(
                sess, [tf.saved_model.SERVING], signature_def_map=signatures,
                assets_collection=assets, strip_default_attrs=True)
            builder.save()


def export_musicnn(checkpoint_dir: Path, export_dir: Path) -> Path:
    """Export the musicnn MSD checkpoint in ``checkpoint_dir`` as a SavedModel at ``export_dir``.

    ``export_dir`` is a TF Serving version directory (``<model_base>/musicnn-msd/<version>``).
    The model is built in a hidden temporary directory next to it and renamed into place, so a
    watching model server never sees a partial export; an existing export is replaced.
    """
    checkpoint_dir, export_dir = Path(checkpoint_dir), Path(export_dir)
    prefix = checkpoint_prefix(checkpoint_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.", dir=export_dir.parent))
    try:
        staged = tmp / "model"
        _build_and_save(prefix, _write_assets(tmp / "assets"), staged)
        make_readable(staged)
        if export_dir.exists():
            export_dir.rename(tmp / "replaced")
        staged.rename(export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s from %s to %s", MODEL_NAME, checkpoint_dir, export_dir)
    return export_dir
