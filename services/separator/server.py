"""gRPC front of the separator: ``audiolime.v1.Separator`` over :mod:`audiolime.separator.service`.

Run: ``python -m audiolime.separator.server --store file:///tmp/stems`` (flags and environment
variables: docs/service-contract.md). Models are loaded and warmed before health reports SERVING;
SIGTERM drains in-flight separations within ``--grace-period``. More than ``--max-concurrency``
running plus ``--max-queue`` waiting separations -> RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from audiolime import inputs
from audiolime.errors import AudiolimeError, InvalidInput
from audiolime.explain import limits
from audiolime.explain.limits import Limits
from audiolime.server import logs, runtime
from audiolime.separator.service import SeparateResult, SeparationService, SeparatorConfig
from audiolime.v1 import separator_pb2, separator_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = separator_pb2.DESCRIPTOR.services_by_name["Separator"].full_name


class SeparatorServicer(separator_pb2_grpc.SeparatorServicer):
    """Translates protos to :class:`SeparationService` calls and back; nothing else."""

    def __init__(self, service: SeparationService) -> None:
        self.service = service

    def Separate(self, request: separator_pb2.SeparateRequest, context: grpc.ServicerContext):
        source = request.audio.WhichOneof("source")
        result = self.service.separate(
            content=request.audio.content if source == "content" else None,
            uri=request.audio.uri if source == "uri" else None,
            model=request.model, filename=request.audio.filename)
        return to_proto(result)


def to_proto(r: SeparateResult) -> separator_pb2.SeparateResponse:
    return separator_pb2.SeparateResponse(
        audio_sha256=r.audio_sha256, model=r.model, cache_hit=r.cache_hit, residual_rel_rms=r.residual_rel_rms,
        duration_s=r.duration_s, timings_s=r.timings_s,
        stems=[separator_pb2.StemRef(name=s.name, uri=s.uri, sample_rate=s.sample_rate, channels=s.channels,
                                     num_samples=s.num_samples) for s in r.stems])


def build_parser() -> argparse.ArgumentParser:
    env = runtime.env_default
    p = argparse.ArgumentParser(prog="audiolime serve separator", description="Spleeter separation gRPC service")
    runtime.add_common_flags(p, port=50051)
    p.add_argument("--store", default=env("AUDIOLIME_STORE", None),
                   help="object store for the stem cache: s3://bucket/prefix or file:///path ($AUDIOLIME_STORE)")
    p.add_argument("--s3-endpoint", default=env("AWS_ENDPOINT_URL", None), help="($AWS_ENDPOINT_URL)")
    p.add_argument("--s3-region", default=env("AWS_REGION", None), help="($AWS_REGION)")
    p.add_argument("--model-dir", type=Path, default=env("AUDIOLIME_MODEL_DIR", None, Path),
                   help="models directory; Spleeter models under <dir>/spleeter/<name> ($AUDIOLIME_MODEL_DIR)")
    p.add_argument("--models", default=env("AUDIOLIME_SEPARATOR_MODELS", "2stems"),
                   help="comma-separated Spleeter models to load; the first is the default "
                        "($AUDIOLIME_SEPARATOR_MODELS, default 2stems)")
    p.add_argument("--max-concurrency", type=int, default=env("AUDIOLIME_SEPARATOR_MAX_CONCURRENCY", 1, int),
                   help="separations running at once ($AUDIOLIME_SEPARATOR_MAX_CONCURRENCY, default 1)")
    p.add_argument("--max-queue", type=int, default=env("AUDIOLIME_SEPARATOR_MAX_QUEUE", 8, int),
                   help="separations waiting; beyond -> RESOURCE_EXHAUSTED ($AUDIOLIME_SEPARATOR_MAX_QUEUE, 8)")
    limits.add_flags(p, env, audio_only=True)
    inputs.add_flags(p, env)
    p.add_argument("--chunk-seconds", type=float, default=env("AUDIOLIME_SEPARATOR_CHUNK_SECONDS", 30.0, float),
                   help="Spleeter chunk length; bounds memory on long songs ($AUDIOLIME_SEPARATOR_CHUNK_SECONDS, 30)")
    return p


def default_model_dir() -> Path:
    repo = Path(__file__).resolve().parents[2]
    return repo / "models" if (repo / "pyproject.toml").is_file() else Path("/models")


def build_service(args: argparse.Namespace) -> SeparationService:
    """Open the store and load + warm every requested Spleeter model."""
    from audiolime.separator.cache import StemCache
    from audiolime.separator.hpss import load_separators
    from audiolime.store import open_store

    if not args.store:
        raise InvalidInput("--store (or $AUDIOLIME_STORE) is required")
    if args.max_concurrency < 1 or args.max_queue < 0:
        raise InvalidInput("--max-concurrency must be >= 1, --max-queue >= 0")
    bounds = Limits.from_args(args)
    allowed = inputs.parse_locations(args.input_buckets)
    store = open_store(args.store, endpoint_url=args.s3_endpoint, region=args.s3_region)
    model_dir = args.model_dir or default_model_dir()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise InvalidInput("--models names no model")
    separators = load_separators(model_dir / "spleeter", names, warmup=True)  # variants share their base
    config = SeparatorConfig(limits=bounds, max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                             chunk_s=args.chunk_seconds, default_model=names[0])
    reader = inputs.InputReader(store, args.s3_endpoint, args.s3_region, allowed, bounds)
    return SeparationService(separators, StemCache(store), config, reader)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_logging("separator", args.log_level)
    try:
        security = runtime.Security.from_args(args)
        service = build_service(args)  # models loaded and warmed before SERVING
        running = runtime.start(
            [runtime.Service(SERVICE_NAME,
                             lambda s: separator_pb2_grpc.add_SeparatorServicer_to_server(SeparatorServicer(service), s))],
            args.host, args.port, args.metrics_port, args.max_workers, security=security,
            max_receive_bytes=service.config.limits.max_receive_bytes)
    except (AudiolimeError, OSError) as exc:
        print(f"audiolime serve separator: error: {exc}", file=sys.stderr)
        return 2
    for sep in service.separators.values():
        running.on_stop.append(sep.close)
    runtime.run_until_signalled(running, args.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
