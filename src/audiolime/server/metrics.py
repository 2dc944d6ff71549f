"""Prometheus metrics of every service (names are the contract in docs/service-contract.md).

The gRPC series use the grpc-ecosystem names and labels (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``, ``grpc_server_msg_received_total``,
``grpc_server_msg_sent_total``; labels ``grpc_type``, ``grpc_service``, ``grpc_method``,
``grpc_code``), so the dashboards and alerts written for go-grpc-prometheus / py-grpc-prometheus
work unchanged. One addition: ``grpc_server_handling_seconds`` also carries ``grpc_code`` (as
OpenTelemetry's ``rpc.server.duration`` carries the status code), so latency alerts can take
successful calls only. No label is called ``service`` (Kubernetes' target label): no
``honorLabels`` needed. ``*_created`` series are off (``disable_created_metrics``)."""

from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()

# Seconds. Cover what the capacity model publishes (docs/capacity.md): taggers' Predict in
# milliseconds to seconds, separations up to ~70 s per 10-minute song, explanations 20-300 s and
# beyond, so every alert threshold (docs/capacity.md, "Alert thresholds") sits inside the range
# and a histogram_quantile near it is interpolated between near buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 150,
                   180, 240, 300, 450, 600, 900, 1200, 1800)
QUEUE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)

_GRPC = ["grpc_type", "grpc_service", "grpc_method"]
GRPC_STARTED = Counter("grpc_server_started", "RPCs started on the server", _GRPC)
GRPC_HANDLED = Counter("grpc_server_handled", "RPCs completed on the server, by status code", [*_GRPC, "grpc_code"])
GRPC_HANDLING = Histogram("grpc_server_handling_seconds", "time from the call's arrival to its status, by status code",
                          [*_GRPC, "grpc_code"], buckets=LATENCY_BUCKETS)
GRPC_MSG_RECEIVED = Counter("grpc_server_msg_received", "request messages received", _GRPC)
GRPC_MSG_SENT = Counter("grpc_server_msg_sent", "response messages sent", _GRPC)
CLIENT_STARTED = Counter("grpc_client_started", "RPCs started by this process's clients (the explainer's "
                         "calls to separator and tagger)", _GRPC)
CLIENT_HANDLED = Counter("grpc_client_handled", "client RPCs completed, by status code", [*_GRPC, "grpc_code"])
CLIENT_HANDLING = Histogram("grpc_client_handling_seconds", "client RPC time from start to status, by status code",
                            [*_GRPC, "grpc_code"], buckets=LATENCY_BUCKETS)
GRPC_IN_FLIGHT = Gauge("audiolime_grpc_in_flight_requests", "gRPC requests being handled",
                       ["grpc_service", "grpc_method"])

BUILD_INFO = Gauge("audiolime_build_info", "always 1; the labels name the running build",
                   ["version", "python_version", "grpc_version"])


def set_build_info() -> None:
    """Export ``audiolime_build_info{version, python_version, grpc_version} 1``."""
    import grpc

    from audiolime import __version__

    BUILD_INFO.labels(__version__, platform.python_version(), grpc.__version__).set(1)

TAGGER_BATCH_SIZE = Histogram("audiolime_tagger_batch_size", "windows per model call after server-side batching",
                              ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
TAGGER_DROPPED = Counter("audiolime_tagger_dropped", "queued tagger requests dropped before running: their "
                         "caller's deadline passed or the caller cancelled", ["model", "reason"])
TAGGER_QUEUE_DELAY = Histogram("audiolime_tagger_queue_delay_seconds", "time a request waited for its batch",
                               ["model"], buckets=QUEUE_BUCKETS)

SEPARATOR_CACHE = Counter("audiolime_separator_cache_requests", "separation cache lookups", ["model", "result"])
SEPARATIONS = Gauge("audiolime_separator_separations", "separations admitted, by state (running/waiting)",
                    ["state"])
SEPARATION_DURATION = Histogram("audiolime_separation_duration_seconds", "Spleeter run time per song", ["model"],
                                buckets=LATENCY_BUCKETS)

EXPLANATION_STAGE = Histogram("audiolime_explanation_stage_duration_seconds", "explanation stage durations",
                              ["stage"], buckets=LATENCY_BUCKETS)
EXPLANATION_CACHE = Counter("audiolime_explainer_cache_requests", "explanation cache lookups (Explain, ExplainStream)",
                            ["model", "result"])
SCAN_CACHE = Counter("audiolime_explainer_scan_cache_requests", "song scan lookups in the store (every explanation)",
                     ["model", "result"])
MASKS_EVALUATED = Counter("audiolime_masks_evaluated", "perturbation masks evaluated by the tagger", ["model"])

REFUSED_REASONS = ("missing_token", "invalid_token", "client_name", "input_location")
REFUSED = Counter("audiolime_requests_refused", "calls refused before any work, by reason (missing_token, "
                  "invalid_token, client_name, input_location)", ["reason"])
for _reason in REFUSED_REASONS:  # exported as 0 from the start, so rate() and alerts see every reason
    REFUSED.labels(_reason)
ADMISSION_REJECTED = Counter("audiolime_admission_rejected", "requests refused by admission control",
                             ["component", "kind"])
EXPLANATIONS = Gauge("audiolime_explainer_explanations", "explanations admitted on this replica, by state "
                     "(running/waiting)", ["state"])
MEMORY_RESERVED = Gauge("audiolime_explainer_memory_reserved_bytes", "memory the running explanations of this "
                        "replica predicted from their audio headers (admission keeps it under --memory-budget)")
JOBS = Gauge("audiolime_explainer_jobs", "explanation jobs in the store at the last queue scan, by state "
             "(waiting/running)", ["state"])
JOB_EVENTS = Counter("audiolime_explainer_job_events", "explanation job transitions on this replica", ["event"])
AUTH_TOKENS = Gauge("audiolime_auth_tokens", "bearer tokens the explainer accepts now (0 with --auth-tokens: the "
                    "token file is empty, missing or malformed and every call is refused)")
AUTH_TOKEN_FILE_ERRORS = Counter("audiolime_auth_token_file_errors", "re-reads of the token file that found it "
                                 "unusable (empty, missing, comments only, a malformed line): every call refused")
