"""A Python grpcio server for pipemesh.v1.Diagnostics, for interop tests.

Prints "PORT <n>" once it listens on 127.0.0.1 (a free port), then serves
until killed. An Echo whose payload is b"fail" is refused with
INVALID_ARGUMENT, to check that statuses cross intact.
"""
import time
from concurrent import futures

import grpc

from pipemesh.v1 import diagnostics_pb2, diagnostics_pb2_grpc


class Diagnostics(diagnostics_pb2_grpc.DiagnosticsServicer):
    def Echo(self, request, context):
        if request.payload == b"fail":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload 'fail' refused by the python server")
        if request.delay_ms:
            time.sleep(request.delay_ms / 1000)
        payload = bytes(request.response_size) if request.response_size else request.payload
        return diagnostics_pb2.EchoResponse(payload=payload)

    def EchoStream(self, request, context):
        for sequence in range(request.count):
            yield diagnostics_pb2.EchoResponse(payload=bytes(request.response_size), sequence=sequence)

    def Describe(self, request, context):
        metadata = dict(context.invocation_metadata())
        return diagnostics_pb2.DescribeResponse(
            role="python", version=metadata.get("x-client", ""), services=["pipemesh.v1.Diagnostics"])


def main():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
    diagnostics_pb2_grpc.add_DiagnosticsServicer_to_server(Diagnostics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
