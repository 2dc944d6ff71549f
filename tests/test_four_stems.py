"""Spleeter 4stems (C = 4) through the whole product, on a checkpoint with random weights.

The real 4stems/5stems weights cannot be had here, so a session fixture builds a 4stems checkpoint
from Spleeter's own model code (its ``EstimatorSpecBuilder`` on the ``spleeter:4stems`` config the
package ships) with randomly initialised variables, saved as Spleeter's pretrained checkpoints are
laid out (``spleeter/4stems/{checkpoint,model.*,.probe}``), in a model directory that links the
real 2stems and musicnn-msd. With it: separation in-process and over gRPC, the factorization
(d' = 4 x segments), an explanation through ``audiolime up`` (document, stem files, report in a
real browser), ``audiolime evaluate`` with a 4stems variant, and ``audiolime setup --separator``
installing a release-style archive from a file and from a URL.

Random weights make the separation meaningless musically, so the checks are structural and the
invariants Spleeter's ratio masks guarantee whatever the weights: the stems sum to the mixture.
The services and the evaluation start in the background as soon as the checkpoint exists and run
while the in-process tests do (TensorFlow builds Spleeter's graph in Python, on one core).
"""

from __future__ import annotations

import collections
import csv
import functools
import hashlib
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from audiolime.processes import terminate
from conftest import DRUMS, ENV, HOST, audiolime_up, cli_error, excerpt, http_get

FOUR = ("vocals", "drums", "bass", "other")  # spleeter/resources/4stems.json's instrument_list
SEGMENTS = 3  # d' = 12; few masks keep musicnn's cost down (0.2 s of CPU per 3 s window)
N = 16  # masks of the explanation and of the evaluated variant (d' + 1 = 13 at least)
SPLEETER_FILES = {".probe", "checkpoint", "model.index", "model.meta", "model.data-00000-of-00001"}
EXE = str(Path(sys.executable).with_name("audiolime"))

pytestmark = pytest.mark.slow


def build_random_spleeter(root: Path, name: str, seed: int = 0) -> Path:
    """``root/name``: a Spleeter checkpoint of model ``name`` (its packaged JSON config) with the
    variables of Spleeter's own graph, laid out as the published ones: ``checkpoint`` naming
    ``model``, ``model.{index,meta,data-00000-of-00001}``, ``.probe``.

    Spleeter seeds its kernel initializer with a constant, so its initial U-Nets are all the same
    (every stem would get the same mask, 1/C): kernels and biases are drawn here instead, He-uniform
    and small normal, from one generator (batch-norm statistics keep their initial 0 and 1)."""
    import tensorflow as tf
    from spleeter.model import EstimatorSpecBuilder, InputProviderFactory
    from spleeter.utils.configuration import load_configuration

    from audiolime.separator.spleeter_separator import inference_phase

    params = load_configuration(f"spleeter:{name}")
    dest = root / name
    dest.mkdir(parents=True)
    params.update(model_dir=str(dest), MWF=False)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        tf.compat.v1.train.get_or_create_global_step()  # the published checkpoints carry it
        features = InputProviderFactory.get(params).get_input_dict_placeholders()
        with inference_phase():  # as the separator builds it (the same variables either way)
            EstimatorSpecBuilder(features, params).outputs  # noqa: B018 (builds the U-Nets)
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        rng = np.random.default_rng(seed)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for v in tf.compat.v1.trainable_variables():
                shape = v.shape.as_list()
                if v.name.endswith("kernel:0"):  # [h, w, in, out] (Conv2D and Conv2DTranspose)
                    limit = np.sqrt(6.0 / (shape[0] * shape[1] * shape[2]))
                    v.load(rng.uniform(-limit, limit, shape).astype(np.float32), session)
                elif v.name.endswith("bias:0"):
                    v.load(rng.normal(0.0, 0.1, shape).astype(np.float32), session)
            saver.save(session, str(dest / "model"))
    (dest / ".probe").write_text("OK")  # what Spleeter's ModelProvider writes after a download
    return dest


@pytest.fixture(scope="session")
def stem_models(models: Path, tmp_path_factory) -> Path:
    """A model directory: the real 2stems and musicnn-msd (links) and a random-weight 4stems."""
    root = tmp_path_factory.mktemp("stem-models")
    (root / "spleeter").mkdir()
    (root / "serving").mkdir()
    (root / "spleeter" / "2stems").symlink_to(models / "spleeter" / "2stems")
    (root / "serving" / "musicnn-msd").symlink_to(models / "serving" / "musicnn-msd")
    from audiolime.models import quiet_tensorflow

    quiet_tensorflow()
    build_random_spleeter(root / "spleeter", "4stems", seed=4)
    return root


@dataclass
class Started:
    """What runs in the background while the in-process tests do: ``audiolime up`` (a Future of
    its Stack) and a tiny ``audiolime evaluate`` with a 4stems variant (a process, its --out)."""

    stack: Future
    evaluation: subprocess.Popen
    evaluation_out: Path


@pytest.fixture(scope="module")
def started(stem_models: Path, drums_excerpt: bytes, tmp_path_factory) -> Iterator[Started]:
    """``audiolime up --separators 4stems`` and ``audiolime evaluate --variant four:separator=4stems``
    on the random-weight model directory, started as soon as the checkpoint exists (2 cores: they
    load TensorFlow models while this process does); stopped after the module."""
    root = tmp_path_factory.mktemp("evaluate4")
    (root / "audio").mkdir()
    (root / "audio" / "drums.flac").write_bytes(drums_excerpt)
    with open(root / "stdout", "wb") as stdout, open(root / "stderr", "wb") as stderr:
        evaluation = subprocess.Popen(
            [EXE, "evaluate", "--tagger", "musicnn-msd", "--audio", str(root / "audio"), "--k", "1",
             "--windows-per-song", "1", "--variant", f"four:separator=4stems,segments={SEGMENTS},num_samples={N}",
             "--slime-segments", "2", "--slime-bands", "2", "--slime-samples", "5", "--trace-samples", "0",
             "--draws", "1", "--curve-draws", "1", "--out", str(root / "out"), "--model-dir", str(stem_models)],
            env=ENV, stdout=stdout, stderr=stderr)
    up = audiolime_up(tmp_path_factory.mktemp("up4"), "--model-dir", str(stem_models), "--separators", "4stems")
    pool = ThreadPoolExecutor(1)
    future: Future = pool.submit(up.__enter__)
    try:
        yield Started(future, evaluation, root / "out")
    finally:
        terminate(evaluation)
        try:
            future.result()
        except BaseException:  # noqa: BLE001 (it did not start: nothing to stop; the tests that used it say why)
            pass
        else:
            up.__exit__(None, None, None)
        pool.shutdown()


@pytest.fixture(scope="module")
def stack(started: Started):
    return started.stack.result(timeout=600)


@pytest.fixture(scope="module")
def four(stem_models: Path, started: Started):
    """The random 4stems loaded in-process by the loader every door uses (no warm-up run: it
    separates at once). Asks for ``started`` so that the background work starts first."""
    from audiolime.separator.hpss import load_separator

    sep = load_separator(stem_models / "spleeter", "4stems", warmup=False)
    yield sep
    sep.close()


@pytest.fixture(scope="session")
def drums_excerpt(shared: Path) -> bytes:
    """8 s of the drum-and-bass track (FLAC), the input of every separation and explanation here."""
    return excerpt(shared / "audio" / DRUMS, 8.0, start_s=4.0)


def _rel_rms(err: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(err, dtype=np.float64))) / np.sqrt(np.mean(np.square(ref, dtype=np.float64))))


# -- the checkpoint -------------------------------------------------------------------------------
def test_random_checkpoint_is_laid_out_like_the_pretrained_ones(stem_models: Path, models: Path):
    """The random 4stems has the published files (the checkpoint file byte for byte like 2stems')
    and the variables of four of the U-Nets the real 2stems checkpoint holds two of, plus its
    global step: Spleeter's own graph, so the real 4stems weights restore the same way."""
    import tensorflow as tf

    real, rand = models / "spleeter" / "2stems", stem_models / "spleeter" / "4stems"
    assert {p.name for p in rand.iterdir()} == {p.name for p in real.iterdir()} == SPLEETER_FILES
    assert (rand / "checkpoint").read_bytes() == (real / "checkpoint").read_bytes()
    two = dict(tf.train.list_variables(str(real / "model")))
    four = dict(tf.train.list_variables(str(rand / "model")))
    assert four.pop("global_step") == two.pop("global_step") == []
    shapes = lambda v: collections.Counter(tuple(s) for s in v.values())  # noqa: E731
    assert len(four) == 2 * len(two) and shapes(four) == shapes(two) + shapes(two)
    assert set(two) < set(four)  # the same layer names, continued for the third and fourth U-Net
    # one U-Net per stem, each ending in a 2-channel (stereo) mask layer
    assert sum(1 for s in four.values() if s[-1:] == [2] and len(s) == 4) == 4


# -- separation in-process, factorization -----------------------------------------------------------
@pytest.fixture(scope="module")
def separated(four, drums_excerpt):
    """The excerpt (``[2, n]`` at 44.1 kHz) and its in-process 4stems separation (Spleeter runs once)."""
    wav, sr = sf.read(io.BytesIO(drums_excerpt), dtype="float32", always_2d=True)
    return wav.T, sr, four.separate(wav.T, sr)


def test_four_stems_in_spleeter_order_sum_to_the_mixture(four, separated):
    """The separator loads the 4stems checkpoint with the catalog's stems in Spleeter's order; the
    four stems are distinct, each carries part of the signal, and they sum to the mixture (ratio
    masks sum to one whatever the weights; the masks extended above Spleeter's 11 kHz band)."""
    from audiolime.method.request import SEPARATOR_STEMS

    assert four.name == "4stems" and tuple(four.stems_names) == SEPARATOR_STEMS["4stems"] == FOUR
    wav, sr, sep = separated
    assert tuple(sep.stems) == FOUR and {v.shape for v in sep.stems.values()} == {wav.shape}
    assert sep.sample_rate == sr and sep.model == "4stems"
    assert sep.residual_rel_rms < 1e-4
    assert _rel_rms(sum(sep.stems.values()) - wav, wav) < 1e-4
    energy = {k: float(np.sum(np.square(v, dtype=np.float64))) for k, v in sep.stems.items()}
    shares = {k: e / sum(energy.values()) for k, e in energy.items()}
    assert all(0.01 < s < 0.97 for s in shares.values()), shares  # no stem silent, none the whole mix
    for i, a in enumerate(FOUR):
        for b in FOUR[i + 1:]:
            assert _rel_rms(sep.stems[a] - sep.stems[b], wav) > 0.01, (a, b)  # four masks, not one copied


def test_factorization_has_four_sources_times_segments(separated):
    """d' = 4 x 3 = 12 components, source-major, for the request check and the factorization; all
    on composes the mixture, one source's components compose exactly its stem."""
    from audiolime.errors import InvalidInput
    from audiolime.method.factorization import StemSegmentFactorization
    from audiolime.method.request import ExplainRequest
    from audiolime.method.waveform import resample, to_mono

    req = ExplainRequest(separator="4stems", segments=SEGMENTS, num_samples=N).validate()
    assert req.stems == FOUR and req.num_components == 12
    assert ExplainRequest(separator="4stems").num_components == 24  # the default 6 segments
    with pytest.raises(InvalidInput, match=r"top_k must be <= d' = 24 \(4stems x 6 segments\)"):
        ExplainRequest(separator="4stems", top_k=25).validate()
    with pytest.raises(InvalidInput, match="d'\\+1 = 13"):
        ExplainRequest(separator="4stems", segments=SEGMENTS, num_samples=12).validate()
    wav, sr, sep = separated
    stems = {k: resample(to_mono(v[:, :3 * sr])[None, :], sr, 16000)[0] for k, v in sep.stems.items()}
    fact = StemSegmentFactorization(stems, 16000, SEGMENTS, edges="fade", fade=1.0)
    assert fact.num_components == 12 and fact.sources == list(FOUR)
    assert [(c.index, c.source, c.segment) for c in fact.info] == [
        (i * SEGMENTS + j, s, j) for i, s in enumerate(FOUR) for j in range(SEGMENTS)]
    mix = resample(to_mono(wav[:, :3 * sr])[None, :], sr, 16000)[0]
    assert _rel_rms(fact.compose(np.ones((1, 12)))[0] - mix, mix) < 1e-4
    for i, s in enumerate(FOUR):
        mask = np.zeros((1, 12))
        mask[0, i * SEGMENTS:(i + 1) * SEGMENTS] = 1
        np.testing.assert_allclose(fact.compose(mask)[0], stems[s], atol=1e-6)


# -- installing release archives ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def archive(stem_models: Path, tmp_path_factory) -> tuple[Path, str]:
    """The random 4stems packed as Spleeter's release archives are (the four checkpoint files at
    the top of a .tar.gz); with its sha256."""
    path = tmp_path_factory.mktemp("archive") / "4stems.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=0) as tar:  # random floats do not compress
        for name in ("checkpoint", "model.data-00000-of-00001", "model.index", "model.meta"):
            tar.add(stem_models / "spleeter" / "4stems" / name, arcname=name)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture(scope="session")
def built_digests(stem_models: Path) -> dict[str, str]:
    """The sha256 of every file of the random 4stems (what an install must reproduce)."""
    return _digests(stem_models / "spleeter" / "4stems")


def test_setup_installs_a_release_archive_only_with_its_checksum(archive, built_digests, tmp_path, capsys):
    """`audiolime setup --separator 4stems --archive FILE`: refused (one line, nothing installed)
    when the archive is not Spleeter's published one; with its --sha256, installed in the MODEL_PATH
    layout with exactly the archive's files and Spleeter's .probe."""
    from audiolime.cli import main
    from audiolime.modelstore import SPLEETER_ARCHIVES
    from audiolime.separator.spleeter_separator import installed_models

    path, digest = archive
    models = tmp_path / "models"
    line = cli_error(capsys, ["setup", "--model-dir", str(models), "--separator", "4stems", "--archive", str(path)])
    assert f"sha256 {digest} does not match the sha256 of Spleeter's published 4stems.tar.gz" in line
    assert SPLEETER_ARCHIVES["4stems"] in line and not (models / "spleeter" / "4stems").exists()
    assert main(["setup", "--model-dir", str(models), "--separator", "4stems", "--archive", str(path),
                 "--sha256", digest]) == 0
    assert capsys.readouterr().out.strip() == f"spleeter:4stems: {models / 'spleeter' / '4stems'}"
    assert _digests(models / "spleeter" / "4stems") == built_digests
    assert installed_models(models / "spleeter") == ["4stems"]
    assert sorted(p.name for p in (models / "spleeter").iterdir()) == ["4stems"]  # no temporary left


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # not on the test's stderr
        pass


def test_setup_downloads_an_archive_from_a_url(archive, built_digests, tmp_path, capsys):
    """--archive URL (a mirror; here a loopback HTTP server): downloaded, verified and installed
    over a model that is there already (replaced whole: a stale file goes); a 404 is one line."""
    from audiolime.cli import main

    path, digest = archive
    server = http.server.ThreadingHTTPServer((HOST, 0), functools.partial(QuietHandler, directory=str(path.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://{HOST}:{server.server_address[1]}"
    models = tmp_path / "models"
    (models / "spleeter" / "4stems").mkdir(parents=True)
    (models / "spleeter" / "4stems" / "model.data-00001-of-00002").write_bytes(b"an older model")
    try:
        assert main(["setup", "--model-dir", str(models), "--separator", "4stems", "--archive",
                     f"{base}/4stems.tar.gz", "--sha256", digest]) == 0, capsys.readouterr().err
        assert _digests(models / "spleeter" / "4stems") == built_digests
        assert sorted(p.name for p in (models / "spleeter").iterdir()) == ["4stems"]
        capsys.readouterr()
        line = cli_error(capsys, ["setup", "--model-dir", str(tmp_path / "m2"), "--separator", "5stems",
                                  "--archive", f"{base}/5stems.tar.gz"])
        assert f"could not download {base}/5stems.tar.gz: HTTP 404" in line
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bad", ["outside", "link", "missing"])
def test_setup_refuses_archives_that_are_not_a_spleeter_checkpoint(bad, tmp_path, capsys):
    """model.index outside the archive's folder, as a link, or missing (with a matching --sha256):
    one line, nothing installed."""
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("checkpoint", b'model_checkpoint_path: "model"\n'), ("model.meta", b"m"),
                           ("model.data-00000-of-00001", b"d"), ("model.index", b"i")):
            info = tarfile.TarInfo(name)
            if name == "model.index" and bad == "missing":
                continue
            if name == "model.index" and bad == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            if name == "model.index" and bad == "outside":
                info.name = "../model.index"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    models = tmp_path / "models"
    line = cli_error(capsys, ["setup", "--model-dir", str(models), "--separator", "4stems", "--archive", str(path),
                              "--sha256", digest])
    assert ("no model.index" if bad == "missing" else "'model.index' is not a plain checkpoint file"
            if bad == "link" else "'../model.index' is not a plain checkpoint file") in line
    assert list((models / "spleeter").iterdir()) == []


def test_up_refuses_separators_without_weights(stem_models: Path, capsys):
    """`audiolime up --separators 5stems` on a model directory without them: one line saying how to
    install them, before any service starts."""
    line = cli_error(capsys, ["up", "--model-dir", str(stem_models), "--separators", "4stems,5stems"])
    assert "separator model '5stems' is not installed" in line and "audiolime setup --separator 5stems" in line


def test_catalog_stems_are_spleeters_own():
    """Every Spleeter model in the catalog lists its stems in the order of Spleeter's packaged config
    (the order the separator returns them in), so 5stems is selectable like 4stems."""
    from spleeter.utils.configuration import load_configuration

    from audiolime.method.request import SEPARATOR_STEMS

    for name in ("2stems", "4stems", "5stems"):
        assert SEPARATOR_STEMS[name] == tuple(load_configuration(f"spleeter:{name}")["instrument_list"]), name


# -- the stem cache knows which weights made an entry --------------------------------------------------
class FixedSeparator:
    """A separator with fixed stem shares and a given weights fingerprint (no TensorFlow)."""

    name, stems_names = "4stems", list(FOUR)

    def __init__(self, weights: str) -> None:
        self.weights = weights
        self.runs = 0

    def separate(self, waveform: np.ndarray, sample_rate: int, out_rate: int | None = None):
        from audiolime.separator.spleeter_separator import Separation

        self.runs += 1
        stems = {s: waveform * k for s, k in zip(FOUR, (0.1, 0.2, 0.3, 0.4))}
        return Separation(stems, sample_rate, 0.0, self.name)


def test_cache_entries_made_with_other_weights_are_misses(drums_excerpt: bytes, tmp_path: Path):
    """The separator cache keys an entry by the weights that made it too: the same song under the
    same model name is a hit for the same weights, a miss (and rewritten) after the model was
    replaced (e.g. another 4stems archive installed), and a hit again for the new weights."""
    from audiolime.inputs import AudioSource
    from audiolime.separator.cache import StemCache
    from audiolime.separator.service import SeparationService, SeparatorConfig
    from audiolime.store import LocalStore

    cache = StemCache(LocalStore(tmp_path / "store"))
    old, new = FixedSeparator("a" * 16), FixedSeparator("b" * 16)
    first = SeparationService({"4stems": old}, cache, SeparatorConfig()).separate(AudioSource(content=drums_excerpt), model="4stems")
    again = SeparationService({"4stems": old}, cache, SeparatorConfig()).separate(AudioSource(content=drums_excerpt), model="4stems")
    replaced = SeparationService({"4stems": new}, cache, SeparatorConfig()).separate(AudioSource(content=drums_excerpt), model="4stems")
    hit = SeparationService({"4stems": new}, cache, SeparatorConfig()).separate(AudioSource(content=drums_excerpt), model="4stems")
    assert (first.cache_hit, again.cache_hit, replaced.cache_hit, hit.cache_hit) == (False, True, False, True)
    assert (old.runs, new.runs) == (1, 1) and [s.name for s in hit.stems] == list(FOUR)
    manifest = json.loads((tmp_path / "store" / "stems" / "4stems" / first.audio_sha256 / "manifest.json").read_text())
    assert manifest["weights"] == "b" * 16


def _toy_checkpoint(folder: Path, value: float) -> Path:
    """A TF1 checkpoint in Spleeter's file layout holding two variables of a first conv layer."""
    import tensorflow as tf

    folder.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default():
        kernel = tf.compat.v1.get_variable("conv2d/kernel", initializer=np.full((3, 3), 0.5, np.float32))
        bias = tf.compat.v1.get_variable("conv2d/bias", initializer=np.array([value, 1.0], np.float32))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run([kernel.initializer, bias.initializer])
            tf.compat.v1.train.Saver(save_relative_paths=True).save(session, str(folder / "model"))
    return folder


def test_weights_fingerprint_changes_with_any_weight(tmp_path: Path):
    """The fingerprint (of a checkpoint's index) differs for checkpoints that differ in one value
    and agrees for equal ones: TensorFlow's index records every tensor's checksum."""
    from audiolime.separator.spleeter_separator import weights_fingerprint

    a, b, c = (weights_fingerprint(_toy_checkpoint(tmp_path / f, v)) for f, v in (("a", 0.25), ("b", 0.2500001),
                                                                                 ("c", 0.25)))
    assert len(a) == 16 and a != b and a == c


def test_a_checkpoint_of_other_variables_is_model_not_found(tmp_path: Path):
    """Weights that are not the named model's (a broken or mismatched install) fail the load with
    ModelNotFound naming the folder and the first missing variable, not a TensorFlow traceback."""
    from audiolime.errors import ModelNotFound
    from audiolime.separator.spleeter_separator import SpleeterSeparator

    _toy_checkpoint(tmp_path / "spleeter" / "2stems", 0.25)
    with pytest.raises(ModelNotFound, match=r"separator model '2stems' in .*/spleeter/2stems is not a Spleeter "
                                            r"2stems checkpoint: .*not found in checkpoint"):
        SpleeterSeparator(tmp_path / "spleeter", "2stems", warmup=False)


# -- the separator service over gRPC ----------------------------------------------------------------
def _file(uri: str) -> Path:
    from urllib.parse import unquote, urlparse

    assert uri.startswith("file://"), uri
    return Path(unquote(urlparse(uri).path))


def test_separator_service_serves_and_caches_four_stems(stack, drums_excerpt):
    """Separate(model=4stems) over gRPC: four 24-bit FLAC stems in Spleeter's order that sum to
    the decoded mixture, a manifest listing the four, and a cache hit the second time."""
    from audiolime.audio import decode
    from audiolime.v1 import common_pb2, separator_pb2, separator_pb2_grpc

    req = separator_pb2.SeparateRequest(audio=common_pb2.AudioInput(content=drums_excerpt, filename="drums.flac"),
                                        model="4stems")
    with grpc.insecure_channel(f"{HOST}:{stack.separator}") as channel:
        sep = separator_pb2_grpc.SeparatorStub(channel)
        first = sep.Separate(req, timeout=300)
        again = sep.Separate(req, timeout=60)
    mix = decode(drums_excerpt)
    assert first.model == "4stems" and not first.cache_hit and first.audio_sha256 == mix.pcm_sha256()
    assert tuple(s.name for s in first.stems) == FOUR and first.residual_rel_rms < 1e-4
    total = 0
    for s in first.stems:
        data, sr = sf.read(_file(s.uri), dtype="float32", always_2d=True)
        assert (sr, data.shape[::-1]) == (44100, (2, mix.num_samples)) == (s.sample_rate, (s.channels, s.num_samples))
        total = total + data.T
    assert _rel_rms(total - mix.waveform, mix.waveform) < 1e-4  # 24-bit FLAC of each stem
    manifest = json.loads((stack.store / "stems" / "4stems" / first.audio_sha256 / "manifest.json").read_text())
    assert manifest["model"] == "4stems" and [s["name"] for s in manifest["stems"]] == list(FOUR)
    assert again.cache_hit and [s.uri for s in again.stems] == [s.uri for s in first.stems]


# -- an explanation through audiolime up ------------------------------------------------------------
@pytest.fixture(scope="module")
def explained(stack, drums_excerpt):
    """One Explain with separator 4stems (musicnn's top tag, N = 16, 3 segments, top 3, no curves)."""
    from audiolime.v1 import common_pb2, explainer_pb2

    req = explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=drums_excerpt, filename="drums.flac"),
                                       model="musicnn-msd", separator_model="4stems", segments=SEGMENTS,
                                       num_samples=N, seed=0, top_k=3, curves="off")
    return stack.stub.Explain(req, timeout=600)


def test_explanation_ranks_components_of_all_four_sources(explained):
    """The response: separator 4stems with its four stems; 12 ranked components, 3 of each source
    (segments 0-2), in weight order; the top 3 have WAVs."""
    assert explained.separator.model == "4stems" and tuple(explained.separator.stems) == FOUR
    assert explained.separator.residual_rel_rms < 1e-3
    (target,) = explained.targets
    comps = target.components
    assert [c.rank for c in comps] == list(range(1, 13))
    assert [c.weight for c in comps] == sorted((c.weight for c in comps), reverse=True)
    by_source = collections.defaultdict(list)
    for c in comps:
        by_source[c.source].append(c.segment)
    assert {s: sorted(v) for s, v in by_source.items()} == {s: list(range(SEGMENTS)) for s in FOUR}
    assert explained.num_samples == N
    assert [bool(c.url) for c in comps] == [True] * 3 + [False] * 9
    assert len({(c.source, c.segment) for c in comps}) == 12


def test_stem_files_are_the_four_stems_and_sum_to_the_window(explained):
    """stem_<name>.wav for each of the four stems (and no other), each a window-long WAV; together
    they are the analysed window (16-bit WAVs, float error)."""
    urls = explained.artifact_urls
    assert sorted(n for n in urls if n.startswith("stem_")) == sorted(f"stem_{s}.wav" for s in FOUR)
    window, sr = sf.read(io.BytesIO(http_get(urls["window.wav"])[1]), dtype="float32", always_2d=True)
    total = 0
    for s in FOUR:
        status, data = http_get(urls[f"stem_{s}.wav"])
        wave, wsr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        assert status == 200 and wsr == sr and wave.shape == window.shape == (3 * sr, 2)
        assert np.abs(wave).max() > 1e-3
        total = total + wave
    assert np.abs(total - window).max() < 1e-3


def test_document_and_report_view_have_four_stem_rows(explained):
    """explanation.json names the four stems (with their files and envelopes) and d' = 12; the
    report's view of it has one heat-map row per stem in Spleeter's order, three playable cells each."""
    from audiolime.explanation.document import Document
    from audiolime.report import view

    status, data = http_get(explained.manifest_url)
    assert status == 200
    doc = Document.loads(data)
    assert doc.separator.model == "4stems" and doc.separator.stems == FOUR
    assert doc.num_components == 12 and doc.segments == SEGMENTS
    assert [(s.name, s.file) for s in doc.stems] == [(s, f"stem_{s}.wav") for s in FOUR]
    assert all(len(s.peaks) > 100 and max(s.peaks) > 0 for s in doc.stems)
    assert {c.source for c in doc.targets[0].components} == set(FOUR)
    assert Document.from_json(doc.to_json()) == doc
    v = view.build(doc)
    assert dict(v.facts)["Components"] == "d' = 12: 4 stems \u00d7 3 segments"
    assert [p.label for p in v.players[1:]] == [f"{s} (stem)" for s in FOUR]
    (t,) = v.targets
    assert [r.stem for r in t.rows] == list(FOUR)
    for r in t.rows:
        assert [c.segment for c in r.cells] == list(range(SEGMENTS)) and {c.source for c in r.cells} == {r.stem}
        assert {c.audio for c in r.cells} == {next(p.id for p in v.players if p.label == f"{r.stem} (stem)")}
    assert sum(c.top for r in t.rows for c in r.cells) == 3


def test_report_in_a_browser_has_four_playable_stem_lanes(explained, browser):
    """The published report in chromium: four stem lanes (vocals, drums, bass, other) of three cells,
    every <audio> loads, no console error; a bass cell plays the bass stem from its start, and
    the arrow keys walk down all four lanes."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(explained.report_url, wait_until="load")
        page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
                               timeout=60_000)
        section = page.locator("section.target").first
        lanes = section.locator(".lane.stem")
        assert [lanes.nth(i).get_attribute("aria-label") for i in range(lanes.count())] == list(FOUR)
        assert [lanes.nth(i).locator(".cell").count() for i in range(4)] == [SEGMENTS] * 4
        media = page.evaluate("[...document.querySelectorAll('audio')].map(a => [a.currentSrc, a.error && a.error.code])")
        assert all(err is None for _, err in media), media
        assert sum(1 for src, _ in media if "/stem_" in src) == 4
        cell = section.locator('.cell[aria-label^="bass, segment 1,"]')
        stem_id = cell.get_attribute("data-audio")
        assert page.evaluate("id => document.getElementById(id).currentSrc", stem_id).split("?")[0].endswith(
            "/stem_bass.wav")
        cell.click()
        page.wait_for_function("id => !document.getElementById(id).paused", arg=stem_id, timeout=10_000)
        comp = next(c for c in explained.targets[0].components if (c.source, c.segment) == ("bass", 1))
        t = page.evaluate("id => document.getElementById(id).currentTime", stem_id)
        ws = explained.audio.window_start_s
        assert comp.start_s - ws - 0.01 <= t < comp.end_s - ws
        cell.click()  # again: stop
        section.locator('.cell[aria-label^="vocals, segment 0,"]').focus()
        labels = []
        for _ in range(4):
            labels.append(page.evaluate("document.activeElement.getAttribute('aria-label')").split(",")[0])
            page.keyboard.press("ArrowDown")
        assert labels == list(FOUR)
        assert errors == []
    finally:
        page.close()


# -- the evaluation ---------------------------------------------------------------------------------
def test_evaluate_with_a_four_stems_variant(started: Started):
    """`audiolime evaluate --variant four:separator=4stems,...` on one window (tiny: k = 1, N = 16,
    SLIME 2 x 2): every method's rows; the 4stems variant ranked all 12 components (a deletion
    curve of 13 points) and its checkpoint key names the separator."""
    code = started.evaluation.wait(timeout=900)
    out = started.evaluation_out
    assert code == 0, (out.parent / "stderr").read_text(errors="replace")[-3000:]
    assert "3 results: 0 resumed from the checkpoint, 3 computed" in (out.parent / "stdout").read_text()
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], r["k"]) for r in rows) == [("four", "1"), ("random", "1"), ("slime", "1")]
    items = {r["method"]: r for r in map(json.loads, (out / "items.jsonl").read_text().splitlines())}
    four, res = items["four"], items["four"]["result"]
    assert four["key"]["request"]["separator"] == "4stems" and four["key"]["request"]["segments"] == SEGMENTS
    assert res["d"] == 12 and len(res["weights"]) == 12 and len(res["deletion"]) == 13
    assert res["stopping"]["masks"] == N and all(0 <= i < 12 for i in res["top_k_set"])
    assert items["slime"]["result"]["d"] == 4  # the other methods ran on the same window
    assert "four" in json.loads((out / "results.json").read_text())["table"]["musicnn-msd"]


def test_evaluate_refuses_a_separator_that_is_not_installed(stem_models: Path, shared: Path, tmp_path: Path, capsys):
    """A variant on 5stems without its weights: one line naming the install command, before any
    model is loaded, and nothing written."""
    line = cli_error(capsys, ["evaluate", "--audio", str(shared / "audio"), "--out", str(tmp_path / "o"),
                              "--model-dir", str(stem_models), "--variant", "five:separator=5stems"])
    assert "--variant five: separator model '5stems' is not installed" in line
    assert "installed: 2stems, 4stems" in line and "`audiolime setup --separator 5stems`" in line
    assert not (tmp_path / "o").exists()
