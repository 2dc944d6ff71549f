"""musicnn's original pipeline (librosa features, TF1 session), the reference for the musicnn export.

Features are computed with librosa exactly as ``musicnn.extractor.batch_data`` does (mel
spectrogram, float16, ``log10(10000 x + 1)``), per 3 s window, keeping musicnn's first
``n_frames`` frames; the network is built as in ``musicnn.extractor.extractor`` (graph mode,
``is_training`` placeholder fed False) and the TF1 checkpoint restored with a ``Saver``.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import tensorflow as tf

from audiolime.tagger.labels import MSD_LABELS
from audiolime.tagger.musicnn_graph import (
    FFT_HOP,
    FFT_SIZE,
    N_FRAMES,
    N_MELS,
    SR,
    WINDOW_SAMPLES,
    build_musicnn,
    checkpoint_prefix,
)


def reference_spectrogram(waveforms: np.ndarray) -> np.ndarray:
    """musicnn's librosa log-mel of each window: ``[batch, N_FRAMES, N_MELS]``."""
    out = []
    for y in np.asarray(waveforms, dtype=np.float32):
        audio_rep = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=FFT_HOP,
                                                   n_fft=FFT_SIZE, n_mels=N_MELS).T
        audio_rep = audio_rep.astype(np.float16)
        audio_rep = np.log10(10000 * audio_rep + 1)
        out.append(audio_rep[:N_FRAMES])
    return np.stack(out).astype(np.float32)


class MusicnnReference:
    """The MSD_musicnn checkpoint in its own graph and session."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self._graph = tf.Graph()
        with self._graph.as_default(), tf.name_scope("model"):
            self._x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS])
            self._is_training = tf.compat.v1.placeholder(tf.bool)
            logits = build_musicnn(self._x, self._is_training, len(MSD_LABELS))
            self._y = tf.nn.sigmoid(logits)
            self._sess = tf.compat.v1.Session(graph=self._graph)
            tf.compat.v1.train.Saver().restore(self._sess, checkpoint_prefix(Path(checkpoint_dir)))
        self.labels = list(MSD_LABELS)

    def predict_spectrogram(self, spectrograms: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities ``[batch, 50]`` of model-input spectrograms."""
        return self._sess.run(self._y, feed_dict={self._x: spectrograms, self._is_training: False})

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities ``[batch, 50]`` of 16 kHz ``[batch, WINDOW_SAMPLES]`` windows."""
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"waveforms must have shape [batch, {WINDOW_SAMPLES}], "
                             f"got {list(waveforms.shape)}")
        return self.predict_spectrogram(reference_spectrogram(waveforms))

    def close(self) -> None:
        self._sess.close()

    def __enter__(self) -> MusicnnReference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
