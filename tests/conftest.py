"""Shared fixtures and helpers: where ../shared and the models are, real servers as processes on
loopback (started, waited for SERVING, always stopped), a moto S3 server, JSON logs and metrics.

Missing shared material or models fail loudly: a test suite that silently skips its real-data
tests would pass while testing nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from audiolime.procs import free_port, metric_value, scrape, terminate, wait_serving

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **S3_ENV}


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
