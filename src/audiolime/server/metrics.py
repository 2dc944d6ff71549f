"""Prometheus metrics of every service (names are the contract in docs/service-contract.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

GRPC_REQUESTS = Counter("audiolime_grpc_requests", "gRPC requests handled", ["service", "method", "code"])
GRPC_DURATION = Histogram("audiolime_grpc_request_duration_seconds", "gRPC request latency",
                          ["service", "method", "code"], buckets=LATENCY_BUCKETS)
GRPC_IN_FLIGHT = Gauge("audiolime_grpc_in_flight_requests", "gRPC requests being handled", ["service", "method"])

TAGGER_BATCH_SIZE = Histogram("audiolime_tagger_batch_size", "windows per model call after server-side batching",
                              ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
TAGGER_QUEUE_DELAY = Histogram("audiolime_tagger_queue_delay_seconds", "time a request waited for its batch",
                               ["model"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5))

SEPARATOR_CACHE = Counter("audiolime_separator_cache_requests", "separation cache lookups", ["model", "result"])
SEPARATIONS = Gauge("audiolime_separator_separations", "separations admitted, by state (running/waiting)",
                    ["state"])
SEPARATION_DURATION = Histogram("audiolime_separation_duration_seconds", "Spleeter run time per song", ["model"],
                                buckets=LATENCY_BUCKETS)

EXPLANATION_STAGE = Histogram("audiolime_explanation_stage_duration_seconds", "explanation stage durations",
                              ["stage"], buckets=LATENCY_BUCKETS)
MASKS_EVALUATED = Counter("audiolime_masks_evaluated", "perturbation masks evaluated by the tagger", ["model"])

REFUSED_REASONS = ("missing_token", "invalid_token", "input_location")
REFUSED = Counter("audiolime_requests_refused", "calls refused before any work, by reason (missing_token, "
                  "invalid_token, input_location)", ["reason"])
for _reason in REFUSED_REASONS:  # exported as 0 from the start, so rate() and alerts see every reason
    REFUSED.labels(_reason)
ADMISSION_REJECTED = Counter("audiolime_admission_rejected", "requests refused by admission control",
                             ["component", "kind"])
EXPLANATIONS = Gauge("audiolime_explainer_explanations", "explanations admitted on this replica, by state "
                     "(running/waiting)", ["state"])
JOBS = Gauge("audiolime_explainer_jobs", "explanation jobs in the store at the last queue scan, by state "
             "(waiting/running)", ["state"])
JOB_EVENTS = Counter("audiolime_explainer_job_events", "explanation job transitions on this replica", ["event"])
