"""Calls a Pipemesh (Swift) server with Python grpcio and checks every answer.

Usage: interop_client.py HOST:PORT
Prints one line per check and "INTEROP OK <count>" at the end; exits non-zero
on the first failed check.
"""
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from pipemesh.v1 import diagnostics_pb2, diagnostics_pb2_grpc

checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


# Deadlines of calls that should answer at once: generous, for a test process whose other tests
# may keep its few executor threads busy for seconds; what is checked is the answer, not its speed.
PATIENCE = 60


def main(target):
    channel = grpc.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 64 << 20),
                         ("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=30)
    diagnostics = diagnostics_pb2_grpc.DiagnosticsStub(channel)

    response = diagnostics.Echo(diagnostics_pb2.EchoRequest(payload=b"from python"), timeout=PATIENCE)
    check(response.payload == b"from python", "unary Echo round trip")

    big = bytes(range(256)) * (8 << 12)  # 8 MiB
    response = diagnostics.Echo(diagnostics_pb2.EchoRequest(payload=big), timeout=PATIENCE)
    check(response.payload == big, "8 MiB Echo round trip")

    stream = diagnostics.EchoStream(diagnostics_pb2.EchoStreamRequest(count=7, response_size=100), timeout=PATIENCE)
    sequences = [(r.sequence, len(r.payload)) for r in stream]
    check(sequences == [(i, 100) for i in range(7)], "server-streaming EchoStream")

    description = diagnostics.Describe(diagnostics_pb2.DescribeRequest(), timeout=PATIENCE)
    check(description.role == "interop", "Describe names the role")

    try:
        diagnostics.Echo(diagnostics_pb2.EchoRequest(delay_ms=5000), timeout=0.2)
        check(False, "deadline exceeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")

    try:
        diagnostics.Echo(diagnostics_pb2.EchoRequest(response_size=1 << 40), timeout=PATIENCE)
        check(False, "bad input refused")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT and "response_size" in error.details(),
              "bad input refused with INVALID_ARGUMENT and a message")

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="pipemesh.v1.Diagnostics"), timeout=PATIENCE).status
    check(status == health_pb2.HealthCheckResponse.SERVING, "health check says SERVING")

    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    check(services == {"pipemesh.v1.Diagnostics", "grpc.health.v1.Health",
                       "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"},
          f"reflection lists the services served ({sorted(services)})")
    pool = descriptor_pool.DescriptorPool(database)
    echo = pool.FindServiceByName("pipemesh.v1.Diagnostics").FindMethodByName("Echo")
    check(echo.input_type.full_name == "pipemesh.v1.EchoRequest", "reflection describes Echo's request type")
    tensor = pool.FindMessageTypeByName("pipemesh.v1.Tensor")
    check([f.name for f in tensor.fields] == ["dtype", "shape", "data"], "reflection describes pipemesh.v1.Tensor")

    # grpc.reflection.v1 has v1alpha's messages: several requests on one stream, answered in order.
    info = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    answers = list(info(iter([
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="pipemesh.v1.Diagnostics.Echo"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="pipemesh.v1.Nope"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
    ]), timeout=PATIENCE))
    check(len(answers) == 3, f"v1 reflection answers each request of a stream ({len(answers)})")
    names = [descriptor_pb2.FileDescriptorProto.FromString(raw).name
             for raw in answers[0].file_descriptor_response.file_descriptor_proto]
    check(names[0] == "pipemesh/v1/diagnostics.proto" and answers[0].original_request.file_containing_symbol
          == "pipemesh.v1.Diagnostics.Echo", f"v1 reflection finds a method's file, sent first ({names})")
    check(answers[1].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0],
          "an unknown symbol is a NOT_FOUND error response, and the stream goes on")
    check(any(descriptor_pb2.FileDescriptorProto.FromString(raw).name == "grpc/reflection/v1/reflection.proto"
              for raw in answers[2].file_descriptor_response.file_descriptor_proto),
          "reflection describes itself")
    garbage = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    try:
        list(garbage(iter([b"\xff\xff\xff"]), timeout=PATIENCE))
        check(False, "garbage sent to reflection is refused")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"garbage sent to reflection is INVALID_ARGUMENT "
              f"({error.code()}: {error.details()})")
    check(list(garbage(iter([]), timeout=PATIENCE)) == [], "an empty reflection stream ends with OK")

    print(f"INTEROP OK {checks}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
