"""The FCN music tagger (Choi et al. 2016) as a TensorFlow module, built from a numpy state dict.

The weights are those of ``models/<dataset>/fcn/best_model.pth`` in
``minzwon/sota-music-tagging-models`` (MIT licence): the Million Song Dataset top-50 tags (``msd``,
the model the audioLIME paper explains), MagnaTagATune's (``mtat``) or MTG-Jamendo's (``jamendo``);
one architecture on 29 s windows (464,000 samples at 16 kHz mono). The state dict keeps PyTorch's
parameter names and layouts; this module only needs numpy arrays (reading the ``.pth`` is in
``fcn_export``).
TensorFlow is imported lazily, so the constants are usable without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from audiolime.tagger.labels import MSD_LABELS

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 464_000  # 29 s at 16 kHz, as in the original evaluation code
N_FFT = 512
HOP = 256
N_MELS = 96
N_FRAMES = 1 + WINDOW_SAMPLES // HOP  # center=True -> 1813
AMIN = 1e-10
DB_MULTIPLIER = 10.0
BN_EPS = 1e-5
POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))  # (mel, time) per layer


def _folded_conv(sd: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights [out, in, kh, kw] (NCHW) -> HWIO with the eval-mode BatchNorm folded in."""
    w = np.asarray(sd[f"{name}.conv.weight"], np.float64)
    b = np.asarray(sd[f"{name}.conv.bias"], np.float64)
    gamma = np.asarray(sd[f"{name}.bn.weight"], np.float64)
    beta = np.asarray(sd[f"{name}.bn.bias"], np.float64)
    mean = np.asarray(sd[f"{name}.bn.running_mean"], np.float64)
    var = np.asarray(sd[f"{name}.bn.running_var"], np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    w = w * scale[:, None, None, None]
    b = (b - mean) * scale + beta
    # torch cross-correlates like tf.nn.conv2d; only the layout changes: OIHW -> HWIO.
    return np.transpose(w, (2, 3, 1, 0)).astype(np.float32), b.astype(np.float32)


def build_fcn_module(state_dict: Mapping[str, np.ndarray], labels: Sequence[str] = MSD_LABELS):
    """The FCN as a ``tf.Module`` with the tf.functions ``serve`` (waveform -> probabilities),
    ``spectrogram`` (waveform -> dB mel spectrogram ``[batch, 1813, 96]``, frames x mels, before
    the input batch norm), ``from_spectrogram`` (spectrogram -> probabilities) and ``labels``.

    ``labels``: the checkpoint's tags in output order (one per output of its dense layer). Raises
    KeyError when ``state_dict`` is not an FCN state dict, ValueError when ``labels`` do not fit it.
    """
    import tensorflow as tf  # noqa: PLC0415

    sd = state_dict
    missing = [k for k in ("spec.spectrogram.window", "spec.mel_scale.fb", "dense.weight")
               if k not in sd]
    if missing:
        raise KeyError(f"not an FCN state_dict (missing {', '.join(missing)})")
    if len(labels) != sd["dense.weight"].shape[0]:
        raise ValueError(f"{len(labels)} labels for an FCN with {sd['dense.weight'].shape[0]} outputs")

    class FCNModule(tf.Module):
        def __init__(self):
            super().__init__(name="fcn")
            self.window = tf.constant(np.asarray(sd["spec.spectrogram.window"], np.float32))
            self.mel_fb = tf.constant(np.asarray(sd["spec.mel_scale.fb"], np.float32))
            bn = {k: np.asarray(sd[f"spec_bn.{k}"], np.float64)[0]
                  for k in ("weight", "bias", "running_mean", "running_var")}
            in_scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
            self.in_scale = tf.constant(np.float32(in_scale))
            self.in_shift = tf.constant(np.float32(bn["bias"] - bn["running_mean"] * in_scale))
            self.kernels, self.biases = [], []
            for i in range(len(POOLS)):
                w, b = _folded_conv(sd, f"layer{i + 1}")
                self.kernels.append(tf.constant(w))
                self.biases.append(tf.constant(b))
            self.dense_w = tf.constant(np.asarray(sd["dense.weight"], np.float32).T)  # [64, tags]
            self.dense_b = tf.constant(np.asarray(sd["dense.bias"], np.float32))
            self.label_values = tf.constant(list(labels))

        def _spectrogram(self, waveform):
            x = tf.pad(waveform, [[0, 0], [N_FFT // 2, N_FFT // 2]], mode="REFLECT")
            frames = tf.signal.frame(x, N_FFT, HOP, axis=-1) * self.window  # [B, T, 512]
            # TF's float32 FFT loses ~1 dB on bins 80 dB below the frame's peak (torch's keeps
            # ~0.02 dB): transform in float64, then continue in float32.
            stft = tf.signal.rfft(tf.cast(frames, tf.float64), fft_length=[N_FFT])  # [B, T, 257]
            power = tf.cast(
                tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft)),
                tf.float32)
            mel = tf.linalg.matmul(power, self.mel_fb)  # [B, T, 96]
            return DB_MULTIPLIER * (tf.math.log(tf.maximum(mel, AMIN)) / np.log(10.0))

        def _from_spectrogram(self, spec):
            # [B, T, mel] -> NHWC [B, mel, T, 1]: height = mel, width = time as in torch's NCHW.
            x = tf.transpose(spec, [0, 2, 1])[..., tf.newaxis]
            x = x * self.in_scale + self.in_shift
            for k, b, (ph, pw) in zip(self.kernels, self.biases, POOLS):
                x = tf.nn.conv2d(x, k, strides=1, padding="SAME") + b
                x = tf.nn.relu(x)
                x = tf.nn.max_pool2d(x, ksize=[ph, pw], strides=[ph, pw], padding="VALID")
            x = tf.reshape(x, [-1, 64])  # final map is 1 x 1 x 64
            return tf.math.sigmoid(tf.linalg.matmul(x, self.dense_w) + self.dense_b)

        @tf.function(input_signature=[
            tf.TensorSpec([None, WINDOW_SAMPLES], tf.float32, name="waveform")])
        def serve(self, waveform):
            return {"probabilities": self._from_spectrogram(self._spectrogram(waveform))}

        @tf.function(input_signature=[
            tf.TensorSpec([None, WINDOW_SAMPLES], tf.float32, name="waveform")])
        def spectrogram(self, waveform):
            return {"spectrogram": self._spectrogram(waveform)}

        @tf.function(input_signature=[
            tf.TensorSpec([None, N_FRAMES, N_MELS], tf.float32, name="spectrogram")])
        def from_spectrogram(self, spectrogram):
            return {"probabilities": self._from_spectrogram(spectrogram)}

        @tf.function(input_signature=[])
        def labels(self):
            return {"labels": self.label_values,
                    "sample_rate": tf.constant(SAMPLE_RATE, tf.int32)}

    return FCNModule()
