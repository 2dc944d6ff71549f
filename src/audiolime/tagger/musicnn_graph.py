"""The musicnn MSD network and its log-mel front end as TensorFlow graph code.

The network-building code is adapted from musicnn 0.1.0 (``musicnn/models.py``,
https://github.com/jordipons/musicnn, (c) Jordi Pons, ISC license), reduced to the
``MSD_musicnn`` configuration. Variable names must stay as in the original so the checkpoint
restores: the layers are created in the same order with ``tf.compat.v1.layers`` default names.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import librosa
import numpy as np
import tensorflow as tf

# musicnn/configuration.py
SR = 16000
FFT_HOP = 256
FFT_SIZE = 512
N_MELS = 96
# musicnn's n_frames for 3 s inputs:
# librosa.time_to_frames(3, sr=SR, n_fft=FFT_SIZE, hop_length=FFT_HOP) + 1
N_FRAMES = 187
WINDOW_SAMPLES = 3 * SR


def checkpoint_prefix(checkpoint_dir: Path) -> str:
    """musicnn's checkpoint prefix: the directory itself (files ``.index``, ``.meta``, ...)."""
    prefix = str(checkpoint_dir).rstrip("/") + "/"
    if not Path(prefix + ".index").is_file():
        raise FileNotFoundError(f"no musicnn checkpoint (.index) in {checkpoint_dir}")
    return prefix


# --- front end -------------------------------------------------------------------------------

def mel_basis() -> np.ndarray:
    """librosa's (Slaney) mel filterbank as used by musicnn, ``[N_MELS, FFT_SIZE // 2 + 1]``."""
    return librosa.filters.mel(sr=SR, n_fft=FFT_SIZE, n_mels=N_MELS).astype(np.float32)


def log_mel_spectrogram(waveform: tf.Tensor) -> tf.Tensor:
    """In-graph musicnn features: ``[batch, WINDOW_SAMPLES]`` -> ``[batch, N_FRAMES, N_MELS]``.

    Reproduces ``librosa.feature.melspectrogram(y, sr=16000, hop_length=256, n_fft=512, n_mels=96)``
    (center=True with librosa>=0.10's zero padding, periodic Hann, power 2), musicnn's float16 cast
    and ``log10(10000 * mel + 1)``, keeping the first ``N_FRAMES`` frames. Only the samples those
    frames cover are framed: 256 zeros on the left, and the tail beyond frame 187 is dropped.
    """
    half = FFT_SIZE // 2
    covered = (N_FRAMES - 1) * FFT_HOP + FFT_SIZE - half
    padded = tf.pad(waveform[:, :covered], [[0, 0], [half, 0]])
    frames = tf.signal.frame(padded, FFT_SIZE, FFT_HOP)  # [batch, N_FRAMES, FFT_SIZE]
    window = tf.signal.hann_window(FFT_SIZE, periodic=True, dtype=tf.float32)
    spectrum = tf.signal.rfft(frames * window)
    power = tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))
    mel = tf.tensordot(power, tf.constant(mel_basis().T, name="mel_basis"), axes=1)
    # musicnn stores the mel spectrogram as float16 before the log compression.
    mel = tf.cast(tf.cast(mel, tf.float16), tf.float32)
    log_mel = tf.math.log(10000.0 * mel + 1.0) / np.log(10.0).astype(np.float32)
    return tf.ensure_shape(log_mel, [None, N_FRAMES, N_MELS])


# --- network (adapted from musicnn/models.py) --------------------------------------------------

def build_musicnn(x: tf.Tensor, is_training: bool | tf.Tensor, num_classes: int,
                  num_filt_midend: int = 64, num_units_backend: int = 200) -> tf.Tensor:
    """musicnn (front end '7774timbraltemporal', dense mid end, global pooling back end): logits."""
    with warnings.catch_warnings():
        # tf.compat.v1.layers are deprecated, but they give the checkpoint's variable names.
        warnings.filterwarnings("ignore", message=r"`tf\.layers\.", category=UserWarning)
        frontend_features = tf.concat(_frontend(x, is_training, N_MELS, num_filt=1.6), 2)
        midend_features = tf.concat(_midend(frontend_features, is_training, num_filt_midend), 2)
        return _backend(midend_features, is_training, num_classes, num_units_backend)


def _frontend(x: tf.Tensor, is_training: bool | tf.Tensor, y_input: int,
              num_filt: float) -> list[tf.Tensor]:
    expand_input = tf.expand_dims(x, 3)
    normalized_input = tf.compat.v1.layers.batch_normalization(expand_input, training=is_training)
    # padding only the time domain for an efficient 'same' (frequency is pooled away afterwards)
    input_pad_7 = tf.pad(normalized_input, [[0, 0], [3, 3], [0, 0], [0, 0]], "CONSTANT")
    f74 = _timbral_block(input_pad_7, int(num_filt * 128), [7, int(0.4 * y_input)], is_training)
    f77 = _timbral_block(input_pad_7, int(num_filt * 128), [7, int(0.7 * y_input)], is_training)
    s1 = _tempo_block(normalized_input, int(num_filt * 32), [128, 1], is_training)
    s2 = _tempo_block(normalized_input, int(num_filt * 32), [64, 1], is_training)
    s3 = _tempo_block(normalized_input, int(num_filt * 32), [32, 1], is_training)
    return [f74, f77, s1, s2, s3]


def _conv_bn_pool(inputs: tf.Tensor, filters: int, kernel_size: list[int],
                  is_training: bool | tf.Tensor, padding: str) -> tf.Tensor:
    conv = tf.compat.v1.layers.conv2d(inputs=inputs, filters=filters, kernel_size=kernel_size,
                                      padding=padding, activation=tf.nn.relu)
    bn_conv = tf.compat.v1.layers.batch_normalization(conv, training=is_training)
    pool = tf.compat.v1.layers.max_pooling2d(inputs=bn_conv, pool_size=[1, bn_conv.shape[2]],
                                             strides=[1, bn_conv.shape[2]])
    return tf.squeeze(pool, [2])


def _timbral_block(inputs: tf.Tensor, filters: int, kernel_size: list[int],
                   is_training: bool | tf.Tensor) -> tf.Tensor:
    return _conv_bn_pool(inputs, filters, kernel_size, is_training, padding="valid")


def _tempo_block(inputs: tf.Tensor, filters: int, kernel_size: list[int],
                 is_training: bool | tf.Tensor) -> tf.Tensor:
    return _conv_bn_pool(inputs, filters, kernel_size, is_training, padding="same")


def _midend(front_end_output: tf.Tensor, is_training: bool | tf.Tensor,
            num_filt: int) -> list[tf.Tensor]:
    front_end_output = tf.expand_dims(front_end_output, 3)

    # conv layer 1 - adapting dimensions
    front_end_pad = tf.pad(front_end_output, [[0, 0], [3, 3], [0, 0], [0, 0]], "CONSTANT")
    conv1 = tf.compat.v1.layers.conv2d(inputs=front_end_pad, filters=num_filt,
                                       kernel_size=[7, front_end_pad.shape[2]],
                                       padding="valid", activation=tf.nn.relu)
    bn_conv1 = tf.compat.v1.layers.batch_normalization(conv1, training=is_training)
    bn_conv1_t = tf.transpose(bn_conv1, [0, 1, 3, 2])

    # conv layer 2 - residual connection
    bn_conv1_pad = tf.pad(bn_conv1_t, [[0, 0], [3, 3], [0, 0], [0, 0]], "CONSTANT")
    conv2 = tf.compat.v1.layers.conv2d(inputs=bn_conv1_pad, filters=num_filt,
                                       kernel_size=[7, bn_conv1_pad.shape[2]],
                                       padding="valid", activation=tf.nn.relu)
    bn_conv2 = tf.compat.v1.layers.batch_normalization(conv2, training=is_training)
    conv2 = tf.transpose(bn_conv2, [0, 1, 3, 2])
    res_conv2 = tf.add(conv2, bn_conv1_t)

    # conv layer 3 - residual connection
    bn_conv2_pad = tf.pad(res_conv2, [[0, 0], [3, 3], [0, 0], [0, 0]], "CONSTANT")
    conv3 = tf.compat.v1.layers.conv2d(inputs=bn_conv2_pad, filters=num_filt,
                                       kernel_size=[7, bn_conv2_pad.shape[2]],
                                       padding="valid", activation=tf.nn.relu)
    bn_conv3 = tf.compat.v1.layers.batch_normalization(conv3, training=is_training)
    conv3 = tf.transpose(bn_conv3, [0, 1, 3, 2])
    res_conv3 = tf.add(conv3, res_conv2)

    return [front_end_output, bn_conv1_t, res_conv2, res_conv3]


def _backend(feature_map: tf.Tensor, is_training: bool | tf.Tensor, num_classes: int,
             output_units: int) -> tf.Tensor:
    # temporal pooling
    max_pool = tf.reduce_max(feature_map, axis=1)
    mean_pool, _ = tf.nn.moments(feature_map, axes=[1])
    tmp_pool = tf.concat([max_pool, mean_pool], 2)

    # penultimate dense layer
    flat_pool = tf.compat.v1.layers.flatten(tmp_pool)
    flat_pool = tf.compat.v1.layers.batch_normalization(flat_pool, training=is_training)
    flat_pool_dropout = tf.compat.v1.layers.dropout(flat_pool, rate=0.5, training=is_training)
    dense = tf.compat.v1.layers.dense(inputs=flat_pool_dropout, units=output_units,
                                      activation=tf.nn.relu)
    bn_dense = tf.compat.v1.layers.batch_normalization(dense, training=is_training)
    dense_dropout = tf.compat.v1.layers.dropout(bn_dense, rate=0.5, training=is_training)

    # output dense layer
    return tf.compat.v1.layers.dense(inputs=dense_dropout, activation=None, units=num_classes)
