"""A gRPC server whose ``Classify`` does nothing: the floor any Python gRPC server
reaches on this machine with the same load generator.

Usage: python -m bench.noop_server PORT_FILE  (writes {"grpc_port": N} when ready)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc

from tfclassify.v1 import classifier_pb2 as pb
from tfclassify.v1 import classifier_pb2_grpc as pb_grpc

RESPONSE = pb.ClassifyResponse(
    model_spec=pb.ModelSpec(name="fashion_mnist", version=1), classes=[3], scores=[0.9], labels=["Dress"]
)


class NoopClassifier(pb_grpc.ClassifierServicer):
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return RESPONSE


async def main(port_file: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ClassifierServicer_to_server(NoopClassifier(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(json.dumps({"grpc_port": port}))
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
