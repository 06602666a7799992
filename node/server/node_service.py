"""The ``Node`` service: who this node is, and the standard gRPC health service."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node import __version__
from node.runtime import NodeRuntime
from node.server.peer import caller_department
from protocols.fednode.v1 import node_pb2, node_pb2_grpc

__all__ = ["add_services"]


class NodeService(node_pb2_grpc.NodeServicer):  # type: ignore[misc]
    def __init__(self, runtime: NodeRuntime) -> None:
        self._runtime = runtime

    def Info(  # noqa: N802 -- the gRPC method name
        self, request: node_pb2.InfoRequest, context: grpc.ServicerContext
    ) -> node_pb2.InfoResponse:
        config = self._runtime.config
        return node_pb2.InfoResponse(
            federation=config.federation,
            department=config.department,
            display_name=config.display_name,
            directory_serial=self._runtime.directory.serial,
            version=__version__,
            caller_department=caller_department(context),
        )


def add_services(server: grpc.Server, runtime: NodeRuntime) -> None:
    node_pb2_grpc.add_NodeServicer_to_server(NodeService(runtime), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("fednode.v1.Node", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
