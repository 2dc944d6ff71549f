"""gRPC front of the separator: ``audiolime.v1.Separator`` over :mod:`audiolime.separator.service`.

Run: ``audiolime serve separator --store file:///tmp/stems`` (settings:
:data:`audiolime.settings.SEPARATOR`, docs/service-contract.md). Models are loaded and warmed before
health reports SERVING; SIGTERM drains in-flight separations within ``--grace-period``. More than
``--max-concurrent`` running plus ``--max-queued`` waiting separations -> RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import grpc

from audiolime import inputs, settings, wire
from audiolime.errors import AudiolimeError, InvalidInput
from audiolime.separator.service import SeparateResult, SeparationService, SeparatorConfig
from audiolime.server import logs, runtime, tracing
from audiolime.settings import default_model_dir
from audiolime.v1 import separator_pb2, separator_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = separator_pb2.DESCRIPTOR.services_by_name["Separator"].full_name


class SeparatorServicer(separator_pb2_grpc.SeparatorServicer):
    """Translates protos to :class:`SeparationService` calls and back; nothing else."""

    def __init__(self, service: SeparationService) -> None:
        self.service = service

    def Separate(self, request: separator_pb2.SeparateRequest, context: grpc.ServicerContext):
        result = self.service.separate(wire.audio_from_proto(request.audio), request.model,
                                       (request.window_start, request.window_end))
        tracing.annotate({"audiolime.model": result.model, "audiolime.cache_hit": result.cache_hit,
                          "audiolime.duration_s": round(float(result.duration_s), 3),
                          "audiolime.window": request.window_end > 0})
        return to_proto(result)


def to_proto(r: SeparateResult) -> separator_pb2.SeparateResponse:
    return separator_pb2.SeparateResponse(
        audio_sha256=r.audio_sha256, model=r.model, cache_hit=r.cache_hit, residual_rel_rms=r.residual_rel_rms,
        duration_s=r.duration_s, timings_s=r.timings_s,
        stems=[separator_pb2.StemRef(name=s.name, uri=s.uri, sample_rate=s.sample_rate, channels=s.channels,
                                     num_samples=s.num_samples, start_sample=s.start_sample) for s in r.stems])


def build_parser() -> argparse.ArgumentParser:
    return settings.parser("audiolime serve separator", "Spleeter separation gRPC service", settings.SEPARATOR)


def build_service(args: argparse.Namespace) -> SeparationService:
    """Open the store and load + warm every requested Spleeter model."""
    from audiolime.separator.cache import StemCache
    from audiolime.separator.hpss import load_separators
    from audiolime.store import open_store

    if not args.store:
        raise InvalidInput("--store (or $AUDIOLIME_STORE) is required")
    if args.max_concurrent < 1 or args.max_queued < 0:
        raise InvalidInput("--max-concurrent must be >= 1, --max-queued >= 0")
    bounds = settings.limits_from(args)
    allowed = inputs.parse_locations(args.input_buckets)
    store = open_store(args.store, endpoint_url=args.s3_endpoint, region=args.s3_region)
    model_dir = args.model_dir or default_model_dir()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise InvalidInput("--models names no model")
    separators = load_separators(model_dir / "spleeter", names, warmup=True)  # variants share their base
    config = SeparatorConfig(limits=bounds, max_concurrent=args.max_concurrent, max_queued=args.max_queued,
                             chunk_s=args.chunk_seconds, default_model=names[0])
    reader = inputs.InputReader(store, args.s3_endpoint, args.s3_region, allowed, bounds)
    return SeparationService(separators, StemCache(store), config, reader)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure_logging("separator", args.log_level)
    tracing.configure("separator", args.otlp_endpoint)
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
