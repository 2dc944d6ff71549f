"""Convert the FCN music tagger (Choi et al. 2016, weights from Won et al. 2020) to a TF SavedModel.

The PyTorch checkpoint is ``models/msd/fcn/best_model.pth`` of the public repository
``minzwon/sota-music-tagging-models`` (MIT licence): a legacy-serialized ``state_dict`` of the
``FCN`` model trained on the Million Song Dataset top-50 tags. The audioLIME paper explains
this model on 29 s windows (464,000 samples at 16 kHz mono).

Usage::

    python -m audiolime.tagger.fcn_convert [--pth PATH] --model-base DIR [--version 1]

writes ``DIR/fcn-msd/<version>/`` (TF Serving layout) with the signatures

* ``serving_default``: ``waveform`` float32 ``[batch, 464000]`` -> ``probabilities`` float32 ``[batch, 50]``
* ``spectrogram``: ``waveform`` -> ``spectrogram`` float32 ``[batch, 1813, 96]`` (frames x mel bands,
  the dB mel spectrogram the network sees, before its input batch norm)
* ``from_spectrogram``: ``spectrogram`` ``[batch, 1813, 96]`` -> ``probabilities``
* ``labels``: no inputs -> ``labels`` string ``[50]``, ``sample_rate`` int32 scalar

and the assets ``labels.txt`` and ``audiolime.json``.

PyTorch is needed only to read the checkpoint and to build the reference model
(``pip install 'audiolime[convert]'``); it is imported lazily so serving never needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from audiolime.modelstore import sha256_file

MODEL_NAME = "fcn-msd"
FCN_PTH_URL = (
    "https://github.com/minzwon/sota-music-tagging-models/raw/master/models/msd/fcn/best_model.pth"
)
FCN_PTH_SHA256 = "6012aa7eecf864a8081faedca56af054521e8dfb9c5c98659a3dd5d3e1e66f21"
FCN_PTH_SIZE = 1_902_815
SOURCE = (
    "minzwon/sota-music-tagging-models models/msd/fcn/best_model.pth sha256 " + FCN_PTH_SHA256
)

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

# MSD top-50 tags, in the order of the model outputs (musicnn's MSD_LABELS order; identical to
# split/msd/50tagList.txt of the source repository).
MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
]

DEFAULT_CACHE = Path(
    os.environ.get("AUDIOLIME_CACHE", Path.home() / ".cache" / "audiolime")
) / MODEL_NAME / "best_model.pth"


class ChecksumError(ValueError):
    """A weights file does not have the expected sha256."""


# --------------------------------------------------------------------------------------------
# Weights


def verify_sha256(path: Path, expected: str = FCN_PTH_SHA256) -> None:
    """Raise ChecksumError (one-line message) unless ``path`` has sha256 ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {expected} "
            f"(not the FCN MSD checkpoint from {FCN_PTH_URL})"
        )


def fetch_fcn_weights(dest: Path, url: str = FCN_PTH_URL, sha256: str = FCN_PTH_SHA256) -> Path:
    """Download the FCN checkpoint to ``dest`` (a file path, or a directory for best_model.pth).

    Skips the download when ``dest`` already holds the right file. The download goes to a
    temporary file beside ``dest`` and is renamed into place only after its sha256 is verified.
    """
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / "best_model.pth"
    if dest.is_file():
        try:
            verify_sha256(dest, sha256)
            return dest
        except ChecksumError:
            pass  # stale or partial file: download again
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "audiolime-fcn-convert"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                shutil.copyfileobj(resp, out, 1 << 20)
        verify_sha256(tmp, sha256)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def load_state_dict(pth: Path, sha256: str | None = FCN_PTH_SHA256) -> dict[str, np.ndarray]:
    """Read the (legacy-serialized) PyTorch state_dict into numpy arrays, checksum verified."""
    pth = Path(pth)
    if not pth.is_file():
        raise FileNotFoundError(f"no such weights file: {pth}")
    if sha256 is not None:
        verify_sha256(pth, sha256)
    torch = _import_torch()
    sd = torch.load(str(pth), map_location="cpu")
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def _import_torch():
    try:
        import torch  # noqa: PLC0415  (lazy: serving never needs torch)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PyTorch is needed to read the FCN checkpoint: pip install 'audiolime[convert]'"
        ) from e
    return torch


# --------------------------------------------------------------------------------------------
# PyTorch reference (the original FCN, with torchaudio's front end in plain torch ops)


def build_torch_fcn(state_dict: Mapping[str, Any]):
    """The original FCN of minzwon/sota-music-tagging-models as a torch.nn.Module in eval mode.

    torchaudio is not needed: MelSpectrogram (Spectrogram n_fft 512, hop 256, power 2, centred
    with reflect padding, the stored Hann window; MelScale with the stored filterbank) and
    AmplitudeToDB (power, amin 1e-10, ref 1, top_db None) are re-implemented with torch ops
    and keep the checkpoint's parameter names (``spec.spectrogram.window``, ``spec.mel_scale.fb``).
    """
    torch = _import_torch()
    nn = torch.nn

    class Spectrogram(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("window", torch.hann_window(N_FFT))

        def forward(self, x):
            spec = torch.stft(
                x, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window=self.window,
                center=True, pad_mode="reflect", normalized=False, onesided=True,
                return_complex=True,
            )
            return spec.abs().pow(2.0)

    class MelScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("fb", torch.zeros(N_FFT // 2 + 1, N_MELS))

        def forward(self, spec):  # [B, freq, time] -> [B, mel, time]
            return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)

    class MelSpectrogram(nn.Module):
        def __init__(self):
            super().__init__()
            self.spectrogram = Spectrogram()
            self.mel_scale = MelScale()

        def forward(self, x):
            return self.mel_scale(self.spectrogram(x))

    class AmplitudeToDB(nn.Module):
        def forward(self, x):
            # multiplier 10 (power), amin 1e-10, ref 1.0 -> db_multiplier 0, top_db None
            return DB_MULTIPLIER * torch.log10(torch.clamp(x, min=AMIN))

    class Conv2d(nn.Module):
        def __init__(self, cin, cout, pooling):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, stride=1, padding=1)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.mp = nn.MaxPool2d(pooling)

        def forward(self, x):
            return self.mp(self.relu(self.bn(self.conv(x))))

    class FCN(nn.Module):
        def __init__(self, n_class=50):
            super().__init__()
            self.spec = MelSpectrogram()
            self.to_db = AmplitudeToDB()
            self.spec_bn = nn.BatchNorm2d(1)
            chans = [1, 64, 128, 128, 128, 64]
            for i, pool in enumerate(POOLS):
                setattr(self, f"layer{i + 1}", Conv2d(chans[i], chans[i + 1], pool))
            self.dense = nn.Linear(64, n_class)
            self.dropout = nn.Dropout(0.5)

        def spectrogram(self, x):
            """[B, samples] -> dB mel spectrogram [B, mel, time] (before spec_bn)."""
            return self.to_db(self.spec(x))

        def from_spectrogram(self, s):
            x = s.unsqueeze(1)
            x = self.spec_bn(x)
            for i in range(len(POOLS)):
                x = getattr(self, f"layer{i + 1}")(x)
            x = x.view(x.size(0), -1)
            x = self.dropout(x)
            x = self.dense(x)
            return torch.sigmoid(x)

        def forward(self, x):
            return self.from_spectrogram(self.spectrogram(x))

    model = FCN(n_class=len(MSD_LABELS))
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# TensorFlow export


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


def metadata() -> dict:
    return {
        "name": MODEL_NAME,
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW_SAMPLES,
        "spectrogram_shape": [N_FRAMES, N_MELS],
        "spectrogram_layout": "frames_mels",
        "spectrogram_unit": "dB power (10*log10(max(mel, 1e-10)))",
        "labels": list(MSD_LABELS),
        "signatures": ["serving_default", "spectrogram", "from_spectrogram", "labels"],
        "source": SOURCE,
        "licence": "MIT, Copyright (c) 2020 Music Technology Group, Universitat Pompeu Fabra",
    }


def _build_tf_module(state_dict: Mapping[str, np.ndarray], asset_dir: Path):
    import tensorflow as tf  # noqa: PLC0415

    sd = state_dict
    missing = [k for k in ("spec.spectrogram.window", "spec.mel_scale.fb", "dense.weight")
               if k not in sd]
    if missing:
        raise KeyError(f"not an FCN state_dict (missing {', '.join(missing)})")

    class FCNModule(tf.Module):
        def __init__(self):
            super().__init__(name="fcn_msd")
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
            self.dense_w = tf.constant(np.asarray(sd["dense.weight"], np.float32).T)  # [64, 50]
            self.dense_b = tf.constant(np.asarray(sd["dense.bias"], np.float32))
            self.label_values = tf.constant(MSD_LABELS)
            self.labels_asset = tf.saved_model.Asset(str(asset_dir / "labels.txt"))
            self.meta_asset = tf.saved_model.Asset(str(asset_dir / "audiolime.json"))

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


def export_fcn(state_dict: Mapping[str, np.ndarray], export_dir: Path,
               overwrite: bool = False) -> Path:
    """Write the FCN as a TF SavedModel to ``export_dir`` (e.g. ``<model_base>/fcn-msd/1``).

    The SavedModel is written to a temporary directory beside ``export_dir`` and renamed into
    place, so a model server watching the parent never sees a half-written version.
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
        (asset_src / "labels.txt").write_text("\n".join(MSD_LABELS) + "\n", encoding="utf-8")
        (asset_src / "audiolime.json").write_text(json.dumps(metadata(), indent=2) + "\n",
                                                  encoding="utf-8")
        module = _build_tf_module(state_dict, asset_src)
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


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audiolime.tagger.fcn_convert",
        description="Convert the PyTorch FCN (MSD, 50 tags) to a TF SavedModel "
                    "at <model-base>/fcn-msd/<version>.")
    parser.add_argument("--pth", type=Path, default=None,
                        help=f"local best_model.pth (default: download to {DEFAULT_CACHE})")
    parser.add_argument("--model-base", type=Path, required=True,
                        help="model base directory (TF Serving layout)")
    parser.add_argument("--version", type=int, default=1, help="model version (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing version directory")
    args = parser.parse_args(argv)
    if args.version < 1:
        parser.error("--version must be a positive integer")

    try:
        if args.pth is None:
            print(f"downloading {FCN_PTH_URL} -> {DEFAULT_CACHE}", file=sys.stderr)
            pth = fetch_fcn_weights(DEFAULT_CACHE)
        else:
            pth = args.pth
        state_dict = load_state_dict(pth)
        out = export_fcn(state_dict, args.model_base / MODEL_NAME / str(args.version),
                         overwrite=args.overwrite)
    except (FileNotFoundError, IsADirectoryError, ChecksumError, FileExistsError,
            ImportError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # network errors (urllib.error.URLError is an OSError)
        print(f"error: could not fetch {FCN_PTH_URL}: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
