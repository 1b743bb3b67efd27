"""A Python instance of ``myservice.v1.Greeter`` built only from installed
packages: the modules ``grpc_tools.protoc`` and the installed
``protoc-gen-router`` generated into ``--gen``, and ``grpc-router-bridge``.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set it exports its spans over OTLP/gRPC
(``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-grpc``), as an
application using the bridge's ``otel`` extra would. Prints ``registered as
<id>`` once registered; SIGTERM drains and leaves (flushing the spans).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


def configure_tracing() -> Any:
    """Installs the OpenTelemetry SDK with an OTLP exporter when an endpoint
    is configured; returns the provider (to flush at exit) or None."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_* and OTEL_BSP_* are read by the SDK.
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gen", required=True, help="directory of the generated modules")
    parser.add_argument("--router", required=True, help="router URL")
    parser.add_argument("--id", default="py-a", help="instance id")
    args = parser.parse_args()
    sys.path.insert(0, args.gen)

    from myservice.v1 import myservice_pb2, myservice_pb2_grpc, myservice_router_bridge

    import grpc_router_bridge

    class Greeter(myservice_pb2_grpc.GreeterServicer):  # type: ignore[misc]
        async def SayHello(self, request: Any, context: Any) -> Any:
            return myservice_pb2.HelloReply(message=f"Hello, {request.name}!", instance_id=args.id)

    provider = configure_tracing()
    try:
        asyncio.run(
            grpc_router_bridge.serve(
                myservice_router_bridge.GREETER,
                myservice_pb2_grpc.add_GreeterServicer_to_server,
                Greeter(),
                grpc_router_bridge.BridgeOptions([args.router], instance_id=args.id),
                on_registered=lambda: print(f"registered as {args.id}", flush=True),
            )
        )
    finally:
        if provider is not None:
            provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
