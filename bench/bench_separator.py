"""Separator service numbers, each measured in one run: cold vs cached ``Separate`` on a 30 s
excerpt, a 10-minute song (time, real-time factor, server peak RSS), and chunked vs one-pass
Spleeter on a full shared song (time, peak RSS, stem difference).

    python bench/bench_separator.py [--model-dir models] [--shared ../shared] [--skip-unchunked]

Every server is a real ``audiolime.separator.server`` process on a loopback port with a fresh
``file://`` store; peak RSS is the server's ``VmHWM`` from ``/proc``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from audiolime.audio import decode
from audiolime.processes import free_port
from audiolime.v1 import common_pb2, separator_pb2, separator_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
SONG = "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"


@contextlib.contextmanager
def server(model_dir: Path, store: Path, *extra: str):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "audiolime.separator.server", "--host", "127.0.0.1",
                             "--port", str(port), "--metrics-port", "0", "--model-dir", str(model_dir),
                             "--store", store.as_uri(), "--log-level", "WARNING", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 256 << 20)])
    try:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"separator exited with {proc.returncode}")
            with contextlib.suppress(grpc.RpcError):
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            time.sleep(0.3)
        yield proc, separator_pb2_grpc.SeparatorStub(channel)
    finally:
        channel.close()
        proc.terminate()
        proc.wait(60)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flac_bytes(waveform: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, waveform.T, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def timed_separate(stub, content: bytes) -> tuple[float, separator_pb2.SeparateResponse]:
    req = separator_pb2.SeparateRequest(audio=common_pb2.AudioInput(content=content, filename="bench.flac"))
    t = time.perf_counter()
    resp = stub.Separate(req, timeout=1800)
    return time.perf_counter() - t, resp


def read_stems(resp) -> dict[str, np.ndarray]:
    return {s.name: sf.read(s.uri[len("file://"):], dtype="float32")[0] for s in resp.stems}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path(os.environ.get("AUDIOLIME_MODEL_DIR", REPO / "models")))
    p.add_argument("--shared", type=Path, default=Path(os.environ.get("AUDIOLIME_SHARED", REPO.parent / "shared")))
    p.add_argument("--minutes", type=float, default=10.0, help="length of the long song (a shared song tiled)")
    p.add_argument("--skip-unchunked", action="store_true", help="skip the one-pass comparison server")
    args = p.parse_args(argv)

    song = decode(args.shared / "audio" / SONG)
    sr = song.sample_rate
    excerpt = flac_bytes(song.waveform[:, 20 * sr:50 * sr], sr)
    n = int(args.minutes * 60 * sr)
    long_song = flac_bytes(np.tile(song.waveform, (1, -(-n // song.num_samples)))[:, :n], sr)
    full = flac_bytes(song.waveform, sr)
    print(f"{os.cpu_count()} CPUs; {SONG} ({song.duration_s:.0f} s), long song {args.minutes:g} min "
          f"({len(long_song) / 2**20:.0f} MiB FLAC)")

    with tempfile.TemporaryDirectory() as tmp:
        with server(args.model_dir, Path(tmp) / "chunked") as (proc, stub):
            idle_mb = peak_rss_mb(proc.pid)
            cold, first = timed_separate(stub, excerpt)
            cached, second = timed_separate(stub, excerpt)
            assert not first.cache_hit and second.cache_hit
            print(f"30 s excerpt: cold {cold:.2f} s, cached {cached:.3f} s -> {cold / cached:.0f}x faster when cached")
            t_full, chunked_resp = timed_separate(stub, full)
            chunked_rss = peak_rss_mb(proc.pid)
            t_long, long_resp = timed_separate(stub, long_song)
            print(f"{args.minutes:g}-min song: {t_long:.1f} s ({n / sr / t_long:.1f}x real time), "
                  f"residual {long_resp.residual_rel_rms:.1e}, server peak RSS {peak_rss_mb(proc.pid):.0f} MB "
                  f"(idle after warm-up {idle_mb:.0f} MB)")
            print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(long_resp.timings_s.items())))
        if args.skip_unchunked:
            return 0
        with server(args.model_dir, Path(tmp) / "onepass", "--chunk-seconds", "0") as (proc, stub):
            t_one, one_resp = timed_separate(stub, full)
            one_rss = peak_rss_mb(proc.pid)
        a, b = read_stems(chunked_resp), read_stems(one_resp)
        ref = float(np.sqrt(np.mean(np.square(song.waveform))))
        diff = max(float(np.sqrt(np.mean(np.square(a[k] - b[k])))) / ref for k in a)
        print(f"full song ({song.duration_s:.0f} s) chunked vs one pass: {t_full:.1f} s vs {t_one:.1f} s "
              f"({t_one / t_full:.2f}x), peak RSS {chunked_rss:.0f} MB vs {one_rss:.0f} MB "
              f"({one_rss / chunked_rss:.2f}x), stem difference {diff:.1e} of the mixture RMS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
