"""The PyTorch Musicnn (Pons et al. 2017, as re-implemented in ``minzwon/sota-music-tagging-models``,
MIT licence) as a TensorFlow module, built from a numpy state dict
(``models/<dataset>/musicnn/best_model.pth``: MagnaTagATune or MTG-Jamendo, 50 tags each). Not the
TF1 ``musicnn`` package's model (``musicnn_graph``, musicnn-msd): its own weights and front end.

Our reading of the repository's ``Musicnn`` (``training/model.py``, ``Conv_V``/``Conv_H``/``Conv_1d``
of ``training/modules.py``) on 3 s windows (48,000 samples, 188 frames): the shared log-mel front
end and input batch norm (``fcn_graph``); five parallel front-end branches on the 96 x 188 dB mel
spectrogram: two vertical convs (204 filters of 67 x 7 and 38 x 7 mel x time, time padding 3, BN,
ReLU, max over mel) and three horizontal ones (mean over mel, then 51 filters of 129, 65, 33 frames,
padding k // 2, BN, ReLU), concatenated to 561 channels; a back end of three 1-d convs (7 frames,
BN, ReLU; 64 channels), the 2nd and 3rd residual; [front, res1, res2, res3] max- and mean-pooled
over time (1506 features), dense (200) + BN + ReLU, dense (50), sigmoid. TensorFlow is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from audiolime.tagger.fcn_graph import bn_affine, build_tagger_module, check_state_dict, folded_conv
from audiolime.tagger.labels import MTAT_LABELS

WINDOW_SAMPLES = 48_000  # 3 s at 16 kHz, the repository's input_length for Musicnn
VERTICAL = (0, 1)  # layers.<i>: Conv_V (mel x time kernels)
HORIZONTAL = (2, 3, 4)  # layers.<i>: Conv_H (time kernels on the mel-mean)
BACKEND = 3


def build_musicnn_pt_module(state_dict: Mapping[str, np.ndarray], labels: Sequence[str] = MTAT_LABELS,
                            name: str = "musicnn"):
    """The PyTorch Musicnn as the shared tagger ``tf.Module`` (``fcn_graph.build_tagger_module``:
    3 s windows, spectrogram ``[batch, 188, 96]``). Raises KeyError when ``state_dict`` is not such
    a Musicnn state dict, ValueError when ``labels`` do not fit its output layer."""
    import tensorflow as tf  # noqa: PLC0415

    sd = state_dict
    check_state_dict(sd, labels, "Musicnn", ("dense1.weight", "dense2.weight", "bn.running_var",
                                             *(f"layers.{i}.conv.weight" for i in VERTICAL + HORIZONTAL),
                                             *(f"layer{i + 1}.conv.weight" for i in range(BACKEND))),
                     "dense2.weight")
    front = []
    for i in VERTICAL + HORIZONTAL:
        w, b = folded_conv(sd, f"layers.{i}")  # HWIO (vertical) or WIO (horizontal)
        front.append((i in VERTICAL, tf.constant(w), tf.constant(b), w.shape[-3 if i in VERTICAL else 0]))
    back = [tuple(tf.constant(a) for a in folded_conv(sd, f"layer{i + 1}")) for i in range(BACKEND)]
    dense1_w = tf.constant(np.asarray(sd["dense1.weight"], np.float32).T)  # [1506, 200]
    dense1_b = tf.constant(np.asarray(sd["dense1.bias"], np.float32))
    scale, shift = bn_affine(sd, "bn")
    bn_scale, bn_shift = tf.constant(np.float32(scale)), tf.constant(np.float32(shift))
    dense2_w = tf.constant(np.asarray(sd["dense2.weight"], np.float32).T)  # [200, tags]
    dense2_b = tf.constant(np.asarray(sd["dense2.bias"], np.float32))

    def conv1d_same(x, w, b):
        """torch Conv1d(padding=k // 2), odd k, stride 1, on [B, T, C]."""
        k = int(w.shape[0])
        x = tf.pad(x, [[0, 0], [k // 2, k // 2], [0, 0]])
        return tf.nn.conv1d(x, w, stride=1, padding="VALID") + b

    def body(x):  # [B, 96 mel, T, 1]
        outs = []
        for vertical, w, b, width in front:
            if vertical:  # torch padding (0, kw // 2): time only, the mel axis is "valid"
                y = tf.pad(x, [[0, 0], [0, 0], [width // 2, width // 2], [0, 0]])
                y = tf.nn.relu(tf.nn.conv2d(y, w, strides=1, padding="VALID") + b)
                outs.append(tf.reduce_max(y, axis=1))  # max over the remaining mel rows -> [B, T, C]
            else:
                outs.append(tf.nn.relu(conv1d_same(tf.reduce_mean(x, axis=1), w, b)))  # mel-mean [B, T, 1]
        out = tf.concat(outs, axis=-1)  # [B, T, 561], torch's channel order
        res1 = tf.nn.relu(conv1d_same(out, *back[0]))
        res2 = tf.nn.relu(conv1d_same(res1, *back[1])) + res1
        res3 = tf.nn.relu(conv1d_same(res2, *back[2])) + res2
        feats = tf.concat([out, res1, res2, res3], axis=-1)  # [B, T, 753]
        pooled = tf.concat([tf.reduce_max(feats, axis=1), tf.reduce_mean(feats, axis=1)], axis=-1)  # [B, 1506]
        h = tf.nn.relu((tf.linalg.matmul(pooled, dense1_w) + dense1_b) * bn_scale + bn_shift)
        return tf.math.sigmoid(tf.linalg.matmul(h, dense2_w) + dense2_b)

    return build_tagger_module(sd, labels, name=name, window_samples=WINDOW_SAMPLES, body=body)
