"""grpc-router bridge for Python: registers an ordinary grpcio servicer with
grpc-router routers over the register protocol, so unmodified gRPC clients of
the router reach it exactly as they reach Rust instances.

>>> from grpc_router_bridge import Bridge, BridgeOptions  # doctest: +SKIP
>>> bridge = Bridge(GREETER, add_GreeterServicer_to_server, MyGreeter(),
...                 BridgeOptions(["http://127.0.0.1:50051"]))  # doctest: +SKIP

See ``bridges/python/README.md``.
"""

from .bridge import Bridge, BridgeOptions, BridgeState, TlsOptions, serve
from .call import CallEnded
from .context import AbortError, AioServicerContext, SyncServicerContext
from .descriptor import MethodDescriptor, MethodKind, RouteKey, ServiceDescriptor
from .handlers import HandlerRecorder

__all__ = [
    "AbortError",
    "AioServicerContext",
    "Bridge",
    "BridgeOptions",
    "BridgeState",
    "CallEnded",
    "HandlerRecorder",
    "MethodDescriptor",
    "MethodKind",
    "RouteKey",
    "ServiceDescriptor",
    "SyncServicerContext",
    "TlsOptions",
    "serve",
]
