"""The CRNN music tagger (Choi et al. 2017) of ``minzwon/sota-music-tagging-models`` (MIT licence)
as a TensorFlow module, built from a numpy state dict (``models/<dataset>/crnn/best_model.pth``:
MagnaTagATune, MTG-Jamendo or the Million Song Dataset, 50 tags each).

Our reading of the repository's ``CRNN`` (``training/model.py``): the shared log-mel front end and
input batch norm (``fcn_graph``) on 29 s windows, four conv 3x3 + BatchNorm + ReLU + max-pool
blocks (pools (2,2), (3,3), (4,4), (4,4): 96 mels x 1813 frames -> 1 x 18, 128 channels), a
2-layer GRU (32 units, batch first) over the 18 steps, its last output -> dense -> sigmoid.

The GRU is unrolled with PyTorch's own equations and gate layout (rows of ``weight_ih_l<k>`` /
``weight_hh_l<k>`` are the reset, update and new gates r, z, n; separate input and hidden biases,
the hidden one of n inside the reset product)::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h = (1 - z) * n + z * h

so no re-ordering into Keras' (z, r, h) layout is needed. TensorFlow is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from audiolime.tagger.fcn_graph import WINDOW_SAMPLES, build_tagger_module, check_state_dict, folded_conv
from audiolime.tagger.labels import MTAT_LABELS

POOLS = ((2, 2), (3, 3), (4, 4), (4, 4))  # (mel, time) per conv block
GRU_LAYERS = 2


def build_crnn_module(state_dict: Mapping[str, np.ndarray], labels: Sequence[str] = MTAT_LABELS,
                      name: str = "crnn"):
    """The CRNN as the shared tagger ``tf.Module`` (``fcn_graph.build_tagger_module``: 29 s windows,
    spectrogram ``[batch, 1813, 96]``). Raises KeyError when ``state_dict`` is not a CRNN state dict,
    ValueError when ``labels`` do not fit its dense layer."""
    import tensorflow as tf  # noqa: PLC0415

    sd = state_dict
    check_state_dict(sd, labels, "CRNN", ("dense.weight", "layer5.weight_ih_l0", "layer5.weight_hh_l1",
                                          *(f"layer{i + 1}.conv.weight" for i in range(len(POOLS)))),
                     "dense.weight")
    convs = [folded_conv(sd, f"layer{i + 1}") for i in range(len(POOLS))]
    kernels = [tf.constant(w) for w, _ in convs]
    biases = [tf.constant(b) for _, b in convs]
    gru = []
    for k in range(GRU_LAYERS):
        w_ih = np.asarray(sd[f"layer5.weight_ih_l{k}"], np.float32)  # [3H, in]: rows r, z, n
        w_hh = np.asarray(sd[f"layer5.weight_hh_l{k}"], np.float32)  # [3H, H]
        gru.append(tuple(tf.constant(a) for a in (
            w_ih.T, w_hh.T, np.asarray(sd[f"layer5.bias_ih_l{k}"], np.float32),
            np.asarray(sd[f"layer5.bias_hh_l{k}"], np.float32))))
    units = int(np.asarray(sd["layer5.weight_hh_l0"]).shape[1])
    dense_w = tf.constant(np.asarray(sd["dense.weight"], np.float32).T)  # [32, tags]
    dense_b = tf.constant(np.asarray(sd["dense.bias"], np.float32))

    def gru_layer(seq, w_ih, w_hh, b_ih, b_hh):
        """One GRU layer over ``seq`` (a list of [B, in] steps) from h0 = 0; the list of outputs."""
        h = tf.zeros([tf.shape(seq[0])[0], units], seq[0].dtype)
        out = []
        for x in seq:  # 18 steps: unrolled
            gi = tf.linalg.matmul(x, w_ih) + b_ih
            gh = tf.linalg.matmul(h, w_hh) + b_hh
            i_r, i_z, i_n = tf.split(gi, 3, axis=-1)
            h_r, h_z, h_n = tf.split(gh, 3, axis=-1)
            r = tf.math.sigmoid(i_r + h_r)
            z = tf.math.sigmoid(i_z + h_z)
            n = tf.math.tanh(i_n + r * h_n)
            h = (1.0 - z) * n + z * h
            out.append(h)
        return out

    def body(x):
        for k, b, (ph, pw) in zip(kernels, biases, POOLS):
            x = tf.nn.conv2d(x, k, strides=1, padding="SAME") + b
            x = tf.nn.relu(x)
            x = tf.nn.max_pool2d(x, ksize=[ph, pw], strides=[ph, pw], padding="VALID")
        x = x[:, 0]  # [B, 1 mel, T, C] -> [B, T, C]: torch's squeeze(2).permute(0, 2, 1)
        seq = tf.unstack(x, axis=1)  # static T (18 for 29 s)
        for weights in gru:
            seq = gru_layer(seq, *weights)
        return tf.math.sigmoid(tf.linalg.matmul(seq[-1], dense_w) + dense_b)

    return build_tagger_module(sd, labels, name=name, window_samples=WINDOW_SAMPLES, body=body)
