"""One settings table per service: flag, environment variable, default and help of every setting.

Each table generates the service's argparse parser (environment variables are the fallbacks,
read when the parser is built in ``main()``, never at import) and the flag tables of the README
and docs/service-contract.md (``python -m audiolime.settings explainer`` prints one);
``tests/test_settings.py`` checks the documents against the tables and the Helm chart's
environment variables against them. Renamed settings keep their old flag and variable as aliases.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from audiolime.method.limits import DEFAULT, Limits
from audiolime.method.request import DEFAULT_BATCH_SIZE


@dataclass(frozen=True)
class Setting:
    flag: str  # --max-bytes
    env: str | None  # AUDIOLIME_MAX_BYTES (None: a flag only)
    default: Any  # None: unset (or required, when the service says so)
    help: str
    type: Callable[[str], Any] | None = str  # None: a switch (store_true)
    aliases: tuple[str, ...] = ()  # old flag spellings
    env_aliases: tuple[str, ...] = ()  # old variable names
    shown: str | None = None  # the default as documented, when it is not the value itself
    dest: str | None = None
    argparse: Mapping[str, Any] | None = None  # further add_argument keywords (nargs, const)
    hidden: bool = False  # accepted, not documented (another server's flags without a meaning here)
    env_only: bool = False  # no flag (a secret: never on a command line, where every user of the host reads it)

    @property
    def name(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")

    def from_env(self, environ: Mapping[str, str]) -> Any:
        for var in (self.env, *self.env_aliases):
            if var and environ.get(var, "") != "":
                return _cast(self, var, environ[var])
        return self.default


def _cast(s: Setting, var: str, value: str) -> Any:
    if s.type is None:
        return value.strip().lower() in ("1", "true", "yes", "on")
    try:
        return s.type(value)
    except (ValueError, argparse.ArgumentTypeError):  # one line, like argparse's own errors
        raise SystemExit(f"error: ${var}={value!r} is not a valid {getattr(s.type, '__name__', 'value')}") from None


def add(parser: argparse.ArgumentParser, table: Sequence[Setting],
        environ: Mapping[str, str] | None = None, use_env: bool = True) -> argparse.ArgumentParser:
    """Register every setting of ``table`` on ``parser``, defaults from ``environ`` (``os.environ``;
    none with ``use_env=False``, as the CLI's limit flags)."""
    env = ({} if not use_env else os.environ if environ is None else environ)
    for s in table:
        kw: dict[str, Any] = {"dest": s.name, "default": s.from_env(env),
                              "help": argparse.SUPPRESS if s.hidden else help_text(s, use_env)}
        if s.type is None:
            kw["action"] = "store_true"
        else:
            kw["type"] = s.type
        kw.update(s.argparse or {})
        if s.env_only:
            parser.set_defaults(**{s.name: kw["default"]})
            continue
        parser.add_argument(s.flag, *s.aliases, **kw)
    return parser


def help_text(s: Setting, use_env: bool = True) -> str:
    """A flag's help as ``--help`` prints it: the table's text, its default, its variable(s)."""
    default = shown(s)
    notes = [f"default: {default}" if default else "default: unset"]
    if use_env and s.env:
        notes.append(" or ".join(f"${v}" for v in (s.env, *s.env_aliases)))
    return f"{s.help} ({'; '.join(notes)})".replace("%", "%%")


def parser(prog: str, description: str, table: Sequence[Setting],
           environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """A service's parser: every flag of ``table`` (no prefix matching: ``--tagg`` is an error); the
    settings that are environment variables only (secrets: never on argv) are listed after the flags."""
    env_only = [f"${s.env}: {help_text(s).replace('%%', '%')}" for s in table if s.env_only and not s.hidden]
    epilog = ("environment only: " + "; ".join(env_only)) if env_only else None
    return add(argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False, epilog=epilog),
               table, environ)


def shown(s: Setting) -> str:
    if s.shown is not None:
        return s.shown
    if s.type is None:
        return "off"
    if s.default is None:
        return ""
    return f"{s.default:g}" if isinstance(s.default, float) else str(s.default)


def markdown(table: Sequence[Setting]) -> str:
    """The table as the docs show it: one row per setting."""
    rows = ["| flag | env | default | |", "| --- | --- | --- | --- |"]
    for s in table:
        if s.hidden:
            continue
        flag = "(environment only)" if s.env_only else " / ".join(f"`{f}`" for f in (s.flag, *s.aliases))
        env = " / ".join(f"`{v}`" for v in (s.env, *s.env_aliases) if v)
        default = shown(s)
        rows.append(f"| {flag} | {env} | {f'`{default}`' if default else ''} | {s.help} |")
    return "\n".join(rows) + "\n"


def default_model_dir() -> Path:
    """``$AUDIOLIME_MODEL_DIR``, else ``models/`` of a source checkout, else the user data dir."""
    env = os.environ.get("AUDIOLIME_MODEL_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "models"
    return Path(os.path.expanduser("~/.local/share/audiolime/models"))


# -- the tables -----------------------------------------------------------------------------------
def _limit(name: str, flag: str, env: str, help: str, aliases: tuple[str, ...] = (),
           env_aliases: tuple[str, ...] = ()) -> Setting:
    default = getattr(DEFAULT, name)
    return Setting(flag, env, None, help, type(default), aliases, env_aliases, shown=shown_number(default), dest=name)


def shown_number(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


AUDIO_LIMITS = (
    _limit("max_bytes", "--max-bytes", "AUDIOLIME_MAX_BYTES",
           "largest encoded input in bytes, inline or by URI"),
    _limit("max_inline_bytes", "--max-inline-bytes", "AUDIOLIME_MAX_INLINE_BYTES",
           "largest encoded input sent inline in a request (larger audio goes by URI); the gRPC receive limit is "
           "this (at most --max-bytes) plus 1 MiB"),
    _limit("max_duration_s", "--max-duration", "AUDIOLIME_MAX_DURATION", "longest recording in seconds"),
    _limit("max_decoded_bytes", "--max-decoded-bytes", "AUDIOLIME_MAX_DECODED_BYTES",
           "largest decoded recording in bytes (frames x channels x 4)"),
)
REQUEST_LIMITS = (
    _limit("max_tags", "--max-tags", "AUDIOLIME_MAX_TAGS", "most target tags per request (tags or top_n)"),
    _limit("max_tagger_seconds", "--max-tagger-seconds", "AUDIOLIME_MAX_TAGGER_SECONDS",
           "tagger cost budget per request: masks x the model's window length, in seconds of audio "
           "(a fixed num_samples over it is refused; adaptive sampling stops at it)",
           aliases=("--max-window-seconds",), env_aliases=("AUDIOLIME_MAX_WINDOW_SECONDS",)),
    _limit("max_component_bytes", "--max-component-bytes", "AUDIOLIME_MAX_COMPONENT_BYTES",
           "memory budget of the d' component signals of one request, in bytes (caps segments)"),
)
LIMITS = AUDIO_LIMITS + REQUEST_LIMITS


def limits_from(args: argparse.Namespace) -> Limits:
    """The limits the flags set (unset ones keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in fields(Limits) if getattr(args, f.name, None) is not None}
    return Limits(**given)


def client_names(value: str) -> tuple[str, ...]:
    """``--allowed-client-names``: the names, in order, without repeats; empty = no name check."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if len(name) > 253 or any(c.isspace() or not c.isprintable() for c in name):
            raise argparse.ArgumentTypeError(f"{name[:40]!r} is not a certificate name (at most 253 printable "
                                             f"characters without spaces)")
    return tuple(dict.fromkeys(names))


PORTS = {"separator": 50051, "tagger": 8500, "explainer": 50052}  # each service's default gRPC port


def common(port: int) -> tuple[Setting, ...]:
    """Every gRPC server's: ports, lifecycle, logs, TLS, reflection, the health port, traces."""
    return (
        Setting("--port", "AUDIOLIME_PORT", port, "gRPC port", int),
        Setting("--host", "AUDIOLIME_HOST", "[::]", "bind address"),
        Setting("--metrics-port", "AUDIOLIME_METRICS_PORT", 9090, "Prometheus /metrics port, 0 = off", int),
        Setting("--grace-period", "AUDIOLIME_GRACE_PERIOD", 20.0, "seconds to drain in-flight RPCs on SIGTERM", float),
        Setting("--max-workers", "AUDIOLIME_MAX_WORKERS", 16, "gRPC handler threads", int),
        Setting("--log-level", "AUDIOLIME_LOG_LEVEL", "INFO", "log level"),
        Setting("--tls-cert", "AUDIOLIME_TLS_CERT", None, "PEM certificate (chain) of the gRPC port; with --tls-key "
                "turns TLS on; re-read when it changes", Path),
        Setting("--tls-key", "AUDIOLIME_TLS_KEY", None, "PEM private key of --tls-cert", Path),
        Setting("--tls-client-ca", "AUDIOLIME_TLS_CLIENT_CA", None,
                "PEM CA certificate(s): require client certificates signed by it (mTLS)", Path),
        Setting("--allowed-client-names", "AUDIOLIME_ALLOWED_CLIENT_NAMES", None, "comma-separated names, with "
                "--tls-client-ca: a call whose client certificate carries none of them (as its common name or a "
                "subject alternative name) is PERMISSION_DENIED before its request is read; health checks exempt",
                client_names, shown="any client certificate the CA signed"),
        Setting("--reflection", "AUDIOLIME_REFLECTION", False, "serve gRPC server reflection", None),
        Setting("--health-port", "AUDIOLIME_HEALTH_PORT", 0, "also serve grpc.health.v1 alone, plaintext, on this "
                "port (for probes that cannot do TLS); 0 = off", int),
        Setting("--otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", None, "OTLP/gRPC endpoint that receives this "
                "server's OpenTelemetry traces (http://collector:4317 plaintext, https:// TLS; the SDK's other OTEL_* "
                "variables apply, service.name from $OTEL_SERVICE_NAME or audiolime-<service>); unset = no tracing",
                shown="off"),
    )


STORE = (
    Setting("--store", "AUDIOLIME_STORE", None, "object store: s3://bucket/prefix or file:///path (required)"),
    Setting("--s3-endpoint", "AWS_ENDPOINT_URL", None, "S3 endpoint (MinIO, GCS interoperability, moto); "
            "credentials from the standard AWS chain", shown="AWS"),
    Setting("--s3-region", "AWS_REGION", None, "S3 region"),
)
INPUTS = (
    Setting("--input-buckets", "AUDIOLIME_INPUT_BUCKETS", None, "comma-separated bucket or bucket/prefix locations "
            "(or file:///dir) audio URIs may name; anything else, and the store's own inputs/ jobs/ claims/ queue/ "
            "stems/ explanations/ expiry/ cache/ whatever the list, is PERMISSION_DENIED", shown="none: no URI inputs"),
)


def admission(running: int, waiting: int, what: str, old: tuple[str, str] | None = None,
              old_env: tuple[str, str] | None = None) -> tuple[Setting, ...]:
    """The one spelling of admission control: --max-concurrent running, --max-queued waiting."""
    return (
        Setting("--max-concurrent", "AUDIOLIME_MAX_CONCURRENT", running, f"{what} running at once on this replica",
                int, aliases=old[:1] if old else (), env_aliases=old_env[:1] if old_env else ()),
        Setting("--max-queued", "AUDIOLIME_MAX_QUEUED", waiting, f"{what} waiting for a slot; beyond: "
                "RESOURCE_EXHAUSTED \"... retry later\"", int,
                aliases=old[1:] if old else (), env_aliases=old_env[1:] if old_env else ()),
    )


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


SEPARATOR = (
    *common(PORTS["separator"]), *STORE,
    Setting("--model-dir", "AUDIOLIME_MODEL_DIR", None, "models directory; Spleeter models under "
            "<dir>/spleeter/<name>", Path, shown="./models of a checkout, else ~/.local/share/audiolime/models"),
    Setting("--models", "AUDIOLIME_SEPARATOR_MODELS", "2stems", "comma-separated Spleeter models to load and warm "
            "before SERVING; the first is the default (2stems+hpss shares 2stems' graph)"),
    *admission(1, 8, "separations (cache hits never take a slot)", old=("--max-concurrency", "--max-queue"),
               old_env=("AUDIOLIME_SEPARATOR_MAX_CONCURRENCY", "AUDIOLIME_SEPARATOR_MAX_QUEUE")),
    *AUDIO_LIMITS, *INPUTS,
    Setting("--chunk-seconds", "AUDIOLIME_SEPARATOR_CHUNK_SECONDS", 30.0, "Spleeter chunk length (whole 11.9 s "
            "segments overlapping by one); bounds memory on long songs; 0 = one pass", float),
)

TAGGER = (
    *common(PORTS["tagger"]),
    Setting("--model-base-path", "AUDIOLIME_MODEL_BASE_PATH", None, "directory of one model's numeric version "
            "dirs (or of <--model-name>/<version>); with --model-config-file only the base of relative base_path "
            "entries", Path, aliases=("--model_base_path",)),
    Setting("--model-name", "AUDIOLIME_MODEL_NAME", "default", "name of the --model-base-path model (TF Serving's "
            "default: 'default')", aliases=("--model_name",)),
    Setting("--model-config-file", "AUDIOLIME_MODEL_CONFIG_FILE", None, "TF Serving ModelServerConfig "
            "(model_config_list) text file; takes precedence over --model-base-path", Path,
            aliases=("--model_config_file",)),
    Setting("--enable-batching", "AUDIOLIME_ENABLE_BATCHING", False, "server-side dynamic batching", _bool,
            aliases=("--enable_batching",), argparse={"nargs": "?", "const": True}, shown="off"),
    Setting("--batching-parameters-file", "AUDIOLIME_BATCHING_PARAMETERS_FILE", None, "TF Serving "
            "BatchingParameters text file", Path, aliases=("--batching_parameters_file",)),
    Setting("--tensorflow-intra-op-parallelism", None, 0, "TensorFlow intra-op threads (0 = TensorFlow's default)",
            int, aliases=("--tensorflow_intra_op_parallelism",)),
    Setting("--tensorflow-inter-op-parallelism", None, 0, "TensorFlow inter-op threads (0 = TensorFlow's default)",
            int, aliases=("--tensorflow_inter_op_parallelism",)),
    Setting("--ssl-config-file", "AUDIOLIME_SSL_CONFIG_FILE", None, "TF Serving SSLConfig text file (server_key, "
            "server_cert, custom_ca, client_verify: PEM inline), as tensorflow_model_server takes it; instead of "
            "--tls-cert/--tls-key/--tls-client-ca, read once at start", Path, aliases=("--ssl_config_file",)),
    # tensorflow_model_server flags without a meaning here, accepted so one argument list fits both
    *(Setting(flag, None, None, "", hidden=True) for flag in ("--rest_api_port", "--monitoring_config_file",
                                                            "--model_config_file_poll_wait_seconds",
                                                            "--file_system_poll_wait_seconds")),
)

EXPLAINER = (
    *common(PORTS["explainer"]), *STORE,
    Setting("--separator", "AUDIOLIME_SEPARATOR_TARGET", "localhost:50051", "separator target"),
    Setting("--tagger", "AUDIOLIME_TAGGER_TARGET", "localhost:8500", "tagger target; dns:/// + round_robin over "
            "every resolved address (use a headless Service)"),
    Setting("--batch-size", "AUDIOLIME_BATCH_SIZE", DEFAULT_BATCH_SIZE, "windows per Predict", int),
    Setting("--max-in-flight", "AUDIOLIME_MAX_IN_FLIGHT", 4, "concurrent Predicts per explanation", int),
    Setting("--tagger-timeout", "AUDIOLIME_TAGGER_TIMEOUT", 30.0, "seconds per tagger call", float),
    Setting("--tagger-retries", "AUDIOLIME_TAGGER_RETRIES", 5, "retries per tagger call on UNAVAILABLE, "
            "DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, while the explanation's retry budget lasts", int),
    Setting("--tagger-retry-budget", "AUDIOLIME_TAGGER_RETRY_BUDGET", 8, "retries of all tagger calls of one "
            "explanation together; once spent it fails UNAVAILABLE at once (an overloaded tagger is not retried "
            "into the ground)", int),
    Setting("--tagger-backoff", "AUDIOLIME_TAGGER_BACKOFF", 0.25, "first tagger retry delay in seconds, doubling "
            "up to 4 s, jittered", float),
    Setting("--separator-timeout", "AUDIOLIME_SEPARATOR_TIMEOUT", 900.0, "seconds per Separate call", float),
    Setting("--separator-retries", "AUDIOLIME_SEPARATOR_RETRIES", 10, "retries of a Separate call on UNAVAILABLE "
            "and RESOURCE_EXHAUSTED (a busy separator): with the backoff, about 3 minutes", int),
    Setting("--separator-backoff", "AUDIOLIME_SEPARATOR_BACKOFF", 1.0, "first Separate retry delay in seconds, "
            "doubling up to 30 s, jittered", float),
    Setting("--http-port", "AUDIOLIME_HTTP_PORT", 8080, "signed-URL HTTP server (file:// store only)", int),
    Setting("--http-timeout", "AUDIOLIME_HTTP_TIMEOUT", 10, "seconds the signed-URL HTTP server keeps a connection "
            "without a request (4 request threads, at most 512 connections; idle ones cost no thread)", int),
    Setting("--cors-origins", "AUDIOLIME_CORS_ORIGINS", None, "comma-separated origins (scheme://host[:port], or *) "
            "whose web apps may fetch local signed URLs (CORS for GET/HEAD, preflight answered)", shown="none"),
    Setting("--public-url", "AUDIOLIME_PUBLIC_URL", None, "base of local signed URLs",
            shown="http://127.0.0.1:<http-port>"),
    Setting("$AUDIOLIME_URL_SECRET", "AUDIOLIME_URL_SECRET", None, "HMAC key of local signed URLs (never a flag: argv is "
            "readable by every user of the host)", shown="random per process", env_only=True, dest="url_secret"),
    Setting("--url-secret-file", "AUDIOLIME_URL_SECRET_FILE", None, "file holding the HMAC key of local signed URLs "
            "(instead of $AUDIOLIME_URL_SECRET)", Path, shown="off"),
    Setting("--url-secret", None, None, "", dest="url_secret_argv", hidden=True),  # refused: see explainer.server
    *LIMITS, *INPUTS,
    Setting("--auth-tokens", "AUDIOLIME_AUTH_TOKENS_FILE", None, "bearer-token file (one token per line, "
            "optionally name:token, re-read when it changes); callers without a valid token get UNAUTHENTICATED, "
            "health checks exempt", Path, shown="off"),
    Setting("--tls-ca", "AUDIOLIME_TLS_CA", None, "PEM CA of the separator's and tagger's certificates: TLS to "
            "them", Path, shown="off"),
    Setting("--tls-client-cert", "AUDIOLIME_TLS_CLIENT_CERT", None, "PEM certificate presented to a separator "
            "and tagger that require client certificates (mTLS)", Path, shown="off"),
    Setting("--tls-client-key", "AUDIOLIME_TLS_CLIENT_KEY", None, "PEM private key of --tls-client-cert", Path,
            shown="off"),
    *admission(4, 8, "explanations (unary, stream and jobs; waiting jobs: store-wide)"),
    Setting("--memory-budget", "AUDIOLIME_MEMORY_BUDGET", 1536 * 2 ** 20, "bytes the running explanations of this "
            "replica may hold together, each predicted from its audio header before decoding (decoded song, mono "
            "copies, components); beyond: RESOURCE_EXHAUSTED at once (jobs wait up to a lease, then retry); keep it "
            "at about 3/4 of the pod's memory limit", int, shown="1610612736 (1.5 GiB)"),
    Setting("--job-lease", "AUDIOLIME_JOB_LEASE", 30.0, "seconds a job's worker may go without renewing its lease "
            "before another replica resumes the job", float),
    Setting("--job-poll", "AUDIOLIME_JOB_POLL", 1.0, "seconds between queue scans and cancellation checks "
            "(at most lease/2)", float),
    Setting("--job-attempts", "AUDIOLIME_JOB_ATTEMPTS", 5, "attempts a job may lose to killed workers or "
            "unavailable backends (then retried after a lease) before it fails", int),
    Setting("--job-ttl", "AUDIOLIME_JOB_TTL", 3600.0, "seconds a finished job (state and artifacts) is kept; "
            "unary results as long, or as long as their URLs live", float),
    Setting("--cache", "AUDIOLIME_CACHE", True, "explanation cache (on/off): Explain and ExplainStream answer a "
            "request whose audio bytes, file name, tagger version, separator and every method parameter equal a "
            "kept result's from the store, with fresh URLs (while it is kept: --job-ttl)", _bool, shown="on"),
)

TABLES = {"separator": SEPARATOR, "tagger": TAGGER, "explainer": EXPLAINER}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m audiolime.settings SERVICE``: print the service's settings table (Markdown)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in TABLES:
        print(f"usage: python -m audiolime.settings {{{','.join(TABLES)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown(TABLES[args[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
