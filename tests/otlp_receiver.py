"""A minimal OTLP/gRPC trace receiver, run as its own process by the tracing tests (no Collector
binary here): ``python tests/otlp_receiver.py PORTFILE OUT``. It serves
``opentelemetry.proto.collector.trace.v1.TraceService/Export`` on a free loopback port (written to
PORTFILE once it listens) and appends every received span to OUT as one JSON line: trace and span
ids (hex), parent span id ("" for a root), name, kind, the resource's ``service.name``,
attributes, events (name and attributes), status code and message. SIGTERM stops it."""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def value(v):
    """An OTLP AnyValue as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attributes(kvs) -> dict:
    return {kv.key: value(kv.value) for kv in kvs}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - gRPC API
        lines = []
        for rs in request.resource_spans:
            service = attributes(rs.resource.attributes).get("service.name", "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(json.dumps({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                        "name": s.name, "kind": KINDS.get(s.kind, str(s.kind)), "service": service,
                        "attributes": attributes(s.attributes),
                        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in s.events],
                        "status": s.status.code, "message": s.status.message,
                        "start": s.start_time_unix_nano, "end": s.end_time_unix_nano}))
        with self.lock, open(self.out, "a") as f:
            f.write("".join(line + "\n" for line in lines))
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> int:
    port_file, out = Path(sys.argv[1]), Path(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(out), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
