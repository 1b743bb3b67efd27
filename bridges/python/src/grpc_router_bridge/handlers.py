"""Captures the method handlers a grpcio ``add_FooServicer_to_server`` registers.

The bridge passes a :class:`HandlerRecorder` where grpcio expects a server: the
generated function registers its ``grpc.RpcMethodHandler`` per method (through
``add_registered_method_handlers`` in recent grpcio, ``add_generic_rpc_handlers``
in every version), and the bridge later invokes exactly those handlers, with the
servicer's own (de)serializers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import grpc


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, invocation_metadata: Tuple[Any, ...]) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


class HandlerRecorder:
    """A stand-in server that records the handlers registered with it.

    >>> recorder = HandlerRecorder()
    >>> add_GreeterServicer_to_server(MyGreeter(), recorder)  # doctest: +SKIP
    >>> recorder.lookup("/myservice.v1.Greeter/SayHello")  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._registered: Dict[str, grpc.RpcMethodHandler] = {}
        self._generic: List[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Records generic handlers (the ``grpc.Server`` method of the same name)."""
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Records per-method handlers (the ``grpc.Server`` method of the same name)."""
        for method, handler in method_handlers.items():
            self._registered[f"/{service_name}/{method}"] = handler

    def lookup(self, path: str, metadata: Tuple[Any, ...] = ()) -> Optional[grpc.RpcMethodHandler]:
        """The handler serving ``path``, as a grpcio server would find it."""
        handler = self._registered.get(path)
        if handler is not None:
            return handler
        details = _CallDetails(path, metadata)
        for generic in self._generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None

    @property
    def empty(self) -> bool:
        """Whether nothing was registered."""
        return not self._registered and not self._generic


def record(adder: Callable[[Any, Any], None], servicer: Any) -> HandlerRecorder:
    """Runs ``adder(servicer, recorder)`` (for example
    ``add_GreeterServicer_to_server``) and returns the recorder."""
    recorder = HandlerRecorder()
    adder(servicer, recorder)
    if recorder.empty:
        raise ValueError(f"{getattr(adder, '__name__', adder)!r} registered no method handlers")
    return recorder
