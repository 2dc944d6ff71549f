"""The FCN music tagger (Choi et al. 2016) as a TensorFlow module, built from a numpy state dict,
and what every tagger of ``minzwon/sota-music-tagging-models`` shares (FCN, CRNN, Musicnn): the
log-mel front end, the eval-mode batch-norm folding and the ``tf.Module`` with our signatures.

The weights are those of ``models/<dataset>/fcn/best_model.pth`` in
``minzwon/sota-music-tagging-models`` (MIT licence): the Million Song Dataset top-50 tags (``msd``,
the model the audioLIME paper explains), MagnaTagATune's (``mtat``) or MTG-Jamendo's (``jamendo``);
one architecture on 29 s windows (464,000 samples at 16 kHz mono). The state dict keeps PyTorch's
parameter names and layouts; this module only needs numpy arrays (reading the ``.pth`` is in
``fcn_export``). The CRNN and the PyTorch Musicnn bodies are in ``crnn_graph`` and ``musicnn_pt_graph``.
TensorFlow is imported lazily, so the constants are usable without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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


def n_frames(window_samples: int) -> int:
    """Spectrogram frames of a window (torch.stft, center=True): 1813 for 29 s, 188 for 3 s."""
    return 1 + window_samples // HOP


def bn_affine(sd: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """An eval-mode BatchNorm ``name`` as ``x * scale + shift`` (float64 per channel)."""
    gamma = np.asarray(sd[f"{name}.weight"], np.float64)
    beta = np.asarray(sd[f"{name}.bias"], np.float64)
    mean = np.asarray(sd[f"{name}.running_mean"], np.float64)
    var = np.asarray(sd[f"{name}.running_var"], np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    return scale, beta - mean * scale


def folded_conv(sd: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """``<name>.conv`` followed by the eval-mode BatchNorm ``<name>.bn``, folded into one conv:
    weights [out, in, kh, kw] (Conv2d) -> HWIO, or [out, in, k] (Conv1d) -> WIO, and the bias."""
    w = np.asarray(sd[f"{name}.conv.weight"], np.float64)
    b = np.asarray(sd[f"{name}.conv.bias"], np.float64)
    scale, shift = bn_affine(sd, f"{name}.bn")
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = b * scale + shift
    # torch cross-correlates like tf.nn.conv1d/conv2d; only the layout changes: OI... -> ...IO.
    perm = tuple(range(2, w.ndim)) + (1, 0)
    return np.transpose(w, perm).astype(np.float32), b.astype(np.float32)


_folded_conv = folded_conv  # the FCN's original name


def check_state_dict(state_dict: Mapping[str, np.ndarray], labels: Sequence[str], arch: str,
                     keys: Sequence[str], out_key: str) -> None:
    """KeyError when ``state_dict`` lacks ``keys`` (not an ``arch`` state dict), ValueError when
    ``labels`` do not fit the output layer ``out_key``."""
    missing = [k for k in ("spec.spectrogram.window", "spec.mel_scale.fb", *keys) if k not in state_dict]
    if missing:
        raise KeyError(f"not an {arch} state_dict (missing {', '.join(missing)})")
    n_out = state_dict[out_key].shape[0]
    if len(labels) != n_out:
        raise ValueError(f"{len(labels)} labels for an {arch} with {n_out} outputs")


def build_tagger_module(state_dict: Mapping[str, np.ndarray], labels: Sequence[str], *, name: str,
                        window_samples: int, body: Callable):
    """The ``tf.Module`` every PyTorch tagger export shares: the front end of the state dict
    (torchaudio MelSpectrogram n_fft 512, hop 256, power 2, centred with reflect padding, its stored
    Hann window and mel filterbank; AmplitudeToDB) and the tf.functions ``serve`` (waveform ->
    probabilities), ``spectrogram`` (waveform -> dB mel spectrogram ``[batch, frames, 96]`` before
    the input batch norm), ``from_spectrogram`` (spectrogram -> probabilities) and ``labels``.

    ``body(x)`` maps the input-batch-normed spectrogram as NHWC ``[batch, 96 mels, frames, 1]``
    (height = mel, width = time as in torch's NCHW) to probabilities; it is called inside the
    tf.functions and closes over the body's constants.
    """
    import tensorflow as tf  # noqa: PLC0415

    sd = state_dict
    frames_n = n_frames(window_samples)

    class TaggerModule(tf.Module):
        def __init__(self):
            super().__init__(name=name.replace("-", "_"))
            self.window = tf.constant(np.asarray(sd["spec.spectrogram.window"], np.float32))
            self.mel_fb = tf.constant(np.asarray(sd["spec.mel_scale.fb"], np.float32))
            scale, shift = bn_affine(sd, "spec_bn")  # BatchNorm2d(1): one channel
            self.in_scale = tf.constant(np.float32(scale[0]))
            self.in_shift = tf.constant(np.float32(shift[0]))
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
            return body(x * self.in_scale + self.in_shift)

        @tf.function(input_signature=[
            tf.TensorSpec([None, window_samples], tf.float32, name="waveform")])
        def serve(self, waveform):
            return {"probabilities": self._from_spectrogram(self._spectrogram(waveform))}

        @tf.function(input_signature=[
            tf.TensorSpec([None, window_samples], tf.float32, name="waveform")])
        def spectrogram(self, waveform):
            return {"spectrogram": self._spectrogram(waveform)}

        @tf.function(input_signature=[
            tf.TensorSpec([None, frames_n, N_MELS], tf.float32, name="spectrogram")])
        def from_spectrogram(self, spectrogram):
            return {"probabilities": self._from_spectrogram(spectrogram)}

        @tf.function(input_signature=[])
        def labels(self):
            return {"labels": self.label_values,
                    "sample_rate": tf.constant(SAMPLE_RATE, tf.int32)}

    return TaggerModule()


def build_fcn_module(state_dict: Mapping[str, np.ndarray], labels: Sequence[str] = MSD_LABELS,
                     name: str = "fcn"):
    """The FCN as the shared tagger ``tf.Module`` (:func:`build_tagger_module`, 29 s windows,
    spectrogram ``[batch, 1813, 96]``).

    ``labels``: the checkpoint's tags in output order (one per output of its dense layer). Raises
    KeyError when ``state_dict`` is not an FCN state dict, ValueError when ``labels`` do not fit it.
    """
    import tensorflow as tf  # noqa: PLC0415

    sd = state_dict
    check_state_dict(sd, labels, "FCN", ("dense.weight", *(f"layer{i + 1}.conv.weight" for i in range(len(POOLS)))),
                     "dense.weight")
    convs = [folded_conv(sd, f"layer{i + 1}") for i in range(len(POOLS))]
    kernels = [tf.constant(w) for w, _ in convs]
    biases = [tf.constant(b) for _, b in convs]
    dense_w = tf.constant(np.asarray(sd["dense.weight"], np.float32).T)  # [64, tags]
    dense_b = tf.constant(np.asarray(sd["dense.bias"], np.float32))

    def body(x):
        for k, b, (ph, pw) in zip(kernels, biases, POOLS):
            x = tf.nn.conv2d(x, k, strides=1, padding="SAME") + b
            x = tf.nn.relu(x)
            x = tf.nn.max_pool2d(x, ksize=[ph, pw], strides=[ph, pw], padding="VALID")
        x = tf.reshape(x, [-1, 64])  # final map is 1 x 1 x 64
        return tf.math.sigmoid(tf.linalg.matmul(x, dense_w) + dense_b)

    return build_tagger_module(sd, labels, name=name, window_samples=WINDOW_SAMPLES, body=body)
