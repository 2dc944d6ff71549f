"""gRPC server reflection, both versions: ``grpc.reflection.v1`` (what grpcurl >= 1.9 and current
tools ask first) and ``grpc.reflection.v1alpha`` (older clients).

grpcio-reflection 1.62 (the last line that accepts protobuf < 5) ships only v1alpha. The two
protocols are the same messages with the same field numbers under another package, so one
servicer answers both: the v1 service is registered with the v1alpha messages' (wire-identical)
parsers, and the v1 ``reflection.proto`` descriptor is added to the descriptor pool (built from
the v1alpha one, package renamed), so ``describe grpc.reflection.v1.ServerReflection`` works too."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection.proto: the v1alpha file with its package (and type references) renamed."""
    alpha = reflection_pb2.DESCRIPTOR.package
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.ClearField("options")

    def rename(type_name: str) -> str:
        return type_name.replace(f".{alpha}.", ".grpc.reflection.v1.", 1)

    for message in proto.message_type:
        for f in message.field:
            if f.type_name:
                f.type_name = rename(f.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type, method.output_type = rename(method.input_type), rename(method.output_type)
    return proto


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        pool.Add(_v1_file())


def enable(service_names: Sequence[str], server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both reflection services."""
    _register_v1_descriptor()
    servicer = reflection.ReflectionServicer([*service_names, V1_SERVICE, V1ALPHA_SERVICE])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
