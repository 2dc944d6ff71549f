"""``audiolime up``: separator, tagger (ours, batching on, every model installed under
``<model-dir>/serving``) and explainer as separate processes on loopback, with embedded defaults;
checks that its ports are free, waits until all report SERVING, forwards SIGTERM/SIGINT.

Ports from ``--base-port`` B (default 50051): separator B, explainer B+1, tagger B+2, signed-URL
HTTP B+3; metrics B+10, B+11, B+12.

Jobs live in ``--store``: stop ``up`` mid-job (Ctrl-C, SIGTERM, even SIGKILL: the services die
with it) and start it again on the same store, and the job is resumed and finishes (after the
job lease, ``$AUDIOLIME_JOB_LEASE``, when the explainer could not hand it back). Signed URLs stay
valid across restarts only with a fixed ``$AUDIOLIME_URL_SECRET``; GetExplanation signs fresh ones.

Security: by default plain loopback, no TLS and no authentication (said when it starts).
``--auth-tokens FILE`` makes the explainer require bearer tokens; ``--tls`` makes a throwaway CA
and certificates (deleted on exit): TLS on every gRPC port, mTLS between the explainer and its
backends (which accept only the explainer's certificate, by name), and the CA's path printed for
clients (``audiolime explain --server ... --ca CA``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audiolime.certs import Pair

BATCHING = """max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
num_batch_threads { value: 1 }
max_enqueued_batches { value: 32 }
"""  # the chart's defaults: one running batch (it uses every core; each running window keeps ~36 MB of
# TensorFlow memory: 2 threads x 128 took the tagger to 5.1 GB under overload), 32 x 64 = 2048 queued
# rows, more than the explainer's 4 x 4 x 64 in flight, ~390 MB (docs/capacity.md)
HOST = "127.0.0.1"
PORT_OFFSETS = (0, 1, 2, 3, 10, 11, 12)  # from --base-port: gRPC x3, signed-URL HTTP, metrics x3


@dataclass
class Child:
    name: str
    port: int
    metrics_port: int
    argv: list[str]
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of up's own environment


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run separator, tagger and explainer locally (Ctrl-C stops them)")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="models directory (default: $AUDIOLIME_MODEL_DIR or ./models of the checkout)")
    p.add_argument("--store", default=None, help="object store URL (default file://<cwd>/out/store)")
    p.add_argument("--base-port", type=int, default=50051, help="first of the ports used (default 50051)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for SERVING (default 300)")
    p.add_argument("--auth-tokens", type=Path, default=None,
                   help="bearer-token file for the explainer (one token per line, optionally name:token; "
                        "default: no authentication)")
    p.add_argument("--tls", action="store_true",
                   help="TLS on every gRPC port (mTLS between services) with a throwaway CA")
    p.add_argument("--separators", default=os.environ.get("AUDIOLIME_SEPARATOR_MODELS", "2stems"),
                   help="comma-separated separator models the separator loads, the first the default, e.g. "
                        "2stems,2stems+hpss,4stems (installed ones: `audiolime setup --separator 4stems`; "
                        "default $AUDIOLIME_SEPARATOR_MODELS or 2stems)")
    p.set_defaults(func=cmd_up)


EXPLAINER_CLIENT_NAME = "explainer-client"  # the explainer's client certificate (make_credentials)


@dataclass(frozen=True)
class Credentials:
    """What ``up --tls`` made: the CA, each service's certificate, and one for ``up``'s own checks."""

    ca: Path
    pairs: dict[str, Pair]


def make_credentials(directory: Path) -> Credentials:
    from audiolime.certs import Authority

    ca = Authority(directory)
    pairs = {n: ca.issue(n, usages=("server",)) for n in ("separator", "tagger", "explainer")}  # serve only
    pairs.update({n: ca.issue(n, (), usages=("client",)) for n in (EXPLAINER_CLIENT_NAME, "up")})  # call only
    return Credentials(ca.cert, pairs)


def security_args(name: str, creds: Credentials | None, tokens: Path | None) -> list[str]:
    """TLS for every port (server certificates valid for serving only); backends demand the CA's
    client certificates, and only the explainer's, by name (``up``'s own client certificate is
    refused, health checks aside); the explainer presents its client certificate (valid for
    calling only) to them and checks callers' tokens."""
    out = ["--reflection"]
    if creds is not None:
        pair = creds.pairs[name]
        out += ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
        if name == "explainer":
            client = creds.pairs[EXPLAINER_CLIENT_NAME]
            out += ["--tls-ca", str(creds.ca), "--tls-client-cert", str(client.cert),
                    "--tls-client-key", str(client.key)]
        else:
            out += ["--tls-client-ca", str(creds.ca), "--allowed-client-names", EXPLAINER_CLIENT_NAME]
    if tokens is not None and name == "explainer":
        out += ["--auth-tokens", str(tokens)]
    return out


def installed_taggers(model_dir: Path) -> list[str]:
    """Every tagger under ``<model_dir>/serving/`` with at least one numeric version directory."""
    serving = model_dir / "serving"
    found = [d.name for d in sorted(serving.iterdir()) if d.is_dir()
             and any(v.is_dir() and v.name.isdigit() for v in d.iterdir())] if serving.is_dir() else []
    return found


def model_config(model_dir: Path, names: list[str]) -> str:
    """The tagger's TF Serving ModelServerConfig serving ``names`` from ``<model_dir>/serving``."""
    entries = "".join(f'  config {{ name: "{n}" base_path: "{model_dir / "serving" / n}" model_platform: "tensorflow" }}\n'
                      for n in names)
    return f"model_config_list {{\n{entries}}}\n"


def check_ports(ports: list[int], host: str = HOST) -> None:
    """Each port free on ``host``, before any service starts: a busy one is one line naming it."""
    import socket

    from audiolime.errors import InvalidInput

    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise InvalidInput(f"port {port} on {host} is in use ({exc.strerror}); stop what holds it or pick "
                                   f"other ports with --base-port (up uses B..B+3 and B+10..B+12)") from None


def children(model_dir: Path, store: str, base: int, batching_file: Path, secret: str,
             creds: Credentials | None = None, tokens: Path | None = None, separators: str = "2stems",
             model_config_file: Path | None = None) -> list[Child]:
    py = [sys.executable, "-m"]
    common = ["--host", HOST, "--log-level", "INFO"]
    sep = Child("separator", base, base + 10, [])
    exp = Child("explainer", base + 1, base + 11, [])
    tag = Child("tagger", base + 2, base + 12, [])
    sep.argv = [*py, "audiolime.separator.server", *common, "--port", str(sep.port), "--metrics-port",
                str(sep.metrics_port), "--store", store, "--model-dir", str(model_dir), "--models", separators]
    tag.argv = [*py, "audiolime.tagger.server", *common, "--port", str(tag.port), "--metrics-port",
                str(tag.metrics_port),
                *(["--model-config-file", str(model_config_file)] if model_config_file else
                  ["--model-base-path", str(model_dir / "serving" / "musicnn-msd"), "--model-name", "musicnn-msd"]),
                "--enable-batching", "--batching-parameters-file", str(batching_file)]
    exp.argv = [*py, "audiolime.explainer.server", *common, "--port", str(exp.port), "--metrics-port",
                str(exp.metrics_port), "--store", store, "--separator", f"{HOST}:{sep.port}",
                "--tagger", f"{HOST}:{tag.port}", "--http-port", str(base + 3),
                "--public-url", f"http://{HOST}:{base + 3}"]
    exp.env = {"AUDIOLIME_URL_SECRET": secret}  # the environment, never argv (readable by every user)
    for c in (sep, tag, exp):
        c.argv += security_args(c.name, creds, tokens)
    return [sep, tag, exp]


def check_separators(names: str, model_dir: Path) -> str:
    """``--separators``, checked before anything starts: known names whose Spleeter weights are
    installed under ``model_dir``."""
    from audiolime import modelstore
    from audiolime.errors import InvalidInput
    from audiolime.separator.hpss import check_installed

    listed = [n.strip() for n in names.split(",") if n.strip()]
    if not listed:
        raise InvalidInput("--separators names no separator model")
    check_installed(modelstore.spleeter_dir(model_dir), listed)
    return ",".join(listed)


def die_with_parent() -> None:
    """In the child before exec: get SIGKILL when ``up`` dies, even by SIGKILL (Linux prctl), so
    no orphaned service keeps the ports or the store's job leases."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: children are stopped by the normal paths only
        pass


def wait_serving(child: Child, deadline: float, credentials=None) -> None:
    from audiolime.processes import wait_serving as wait

    wait(f"{HOST}:{child.port}", child.proc, max(0.0, deadline - time.monotonic()), child.name, poll_s=0.5,
         credentials=credentials)


def describe_security(creds: Credentials | None, tokens: Path | None) -> str:
    if creds is None and tokens is None:
        return ("security: plain loopback, no TLS, no authentication (this machine only; "
                "audiolime up --tls --auth-tokens FILE for the secured set-up)")
    parts = [f"TLS on every gRPC port, mTLS between services, CA {creds.ca}" if creds else "no TLS",
             f"bearer tokens from {tokens}" if tokens else "no authentication"]
    return "security: " + "; ".join(parts)


def stop(procs: list[Child], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    for c in procs:
        if c.proc and c.proc.poll() is None:
            c.proc.send_signal(sig)
    end = time.monotonic() + timeout_s
    for c in procs:
        if c.proc:
            try:
                c.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()


def cmd_up(args: argparse.Namespace) -> int:
    from audiolime.errors import InvalidInput

    model_dir = Path(args.model_dir).resolve()
    taggers = installed_taggers(model_dir)
    if not taggers:
        raise InvalidInput(f"no tagger model under {model_dir}/serving (run `audiolime setup`)")
    separators = check_separators(args.separators, model_dir)
    check_ports([args.base_port + offset for offset in PORT_OFFSETS])
    store = args.store or (Path("out/store").resolve().as_uri())
    tokens = Path(args.auth_tokens).resolve() if args.auth_tokens else None
    if tokens is not None:
        from audiolime.server.auth import TokenFile

        TokenFile(tokens)  # a bad token file fails here, in one line, before anything starts
    if store.startswith("file://"):
        Path(store[len("file://"):]).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="audiolime-up.") as tmp:
        batching = Path(tmp) / "batching.txt"
        batching.write_text(BATCHING)
        config = Path(tmp) / "models.config"
        config.write_text(model_config(model_dir, taggers))
        creds = make_credentials(Path(tmp) / "tls") if args.tls else None
        health_creds = None
        if creds is not None:
            from audiolime.tls import channel_credentials

            health_creds = channel_credentials(creds.ca, creds.pairs["up"].cert, creds.pairs["up"].key)
        print(describe_security(creds, tokens), flush=True)
        secret = os.environ.get("AUDIOLIME_URL_SECRET") or secrets.token_hex(32)
        procs = children(model_dir, store, args.base_port, batching, secret, creds, tokens, separators, config)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        stopping = {"sig": None}

        def forward(signum, _frame) -> None:
            stopping["sig"] = signum

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        try:
            for c in procs:
                c.proc = subprocess.Popen(c.argv, env={**env, **c.env}, start_new_session=True,
                                          preexec_fn=die_with_parent)
            deadline = time.monotonic() + args.startup_timeout
            for c in procs:
                while stopping["sig"] is None:
                    try:
                        wait_serving(c, min(deadline, time.monotonic() + 1), health_creds)
                        break
                    except (RuntimeError, TimeoutError):
                        if c.proc is None or c.proc.poll() is not None or time.monotonic() > deadline:
                            raise
            if stopping["sig"] is None:
                for c in procs:
                    print(f"{c.name:10s} grpc {HOST}:{c.port}  metrics http://{HOST}:{c.metrics_port}/metrics",
                          flush=True)
                print(f"{'http':10s} signed URLs http://{HOST}:{args.base_port + 3}/o/...  store {store}", flush=True)
                print(f"{'taggers':10s} {', '.join(taggers)} (every model under {model_dir / 'serving'})", flush=True)
                print(f"{'jobs':10s} kept in the store: unfinished ones resume when up starts again on it", flush=True)
                secure = ("AUDIOLIME_TOKEN=<token> " if tokens else "", f" --ca {creds.ca}" if creds else "")
                print(f"try: {secure[0]}audiolime explain --server {HOST}:{procs[2].port}{secure[1]} SONG", flush=True)
            while stopping["sig"] is None:
                dead = [c for c in procs if c.proc is None or c.proc.poll() is not None]
                if dead:
                    code = dead[0].proc.returncode if dead[0].proc else None
                    print(f"audiolime: error: {dead[0].name} exited with status {code}",
                          file=sys.stderr)
                    return 1
                time.sleep(0.3)
            return 0
        except (RuntimeError, TimeoutError) as exc:
            print(f"audiolime: error: {exc}", file=sys.stderr)
            return 1
        finally:
            stop(procs[::-1], stopping["sig"] or signal.SIGTERM)
