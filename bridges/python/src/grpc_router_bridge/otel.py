"""OpenTelemetry server spans of forwarded calls (the ``otel`` extra).

With ``opentelemetry-api`` installed (``pip install grpc-router-bridge[otel]``)
every call the router forwards gets a span of kind SERVER that continues the
W3C trace context the router sends in ``traceparent`` (the router's own span
is the parent), named and attributed by OpenTelemetry's RPC conventions:
``pkg.Service/Method``, ``rpc.system = grpc``, ``rpc.service``,
``rpc.method`` and ``rpc.grpc.status_code``. The servicer's method runs with
that span current, so spans it opens are its children.

The spans go to the global tracer provider (``opentelemetry.trace``): the
application installs the SDK and an exporter (for example
``opentelemetry-sdk`` with ``opentelemetry-exporter-otlp-proto-grpc``) or
none, in which case the API's no-op spans cost a few microseconds a call.
Without ``opentelemetry-api`` this module does nothing.
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable, Optional, TypeVar

from . import wire

try:
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace

    _AVAILABLE = True
except ImportError:  # the extra is not installed
    _AVAILABLE = False

T = TypeVar("T")

#: The instrumentation scope of the spans.
SCOPE = "grpc_router_bridge"

# The status codes OpenTelemetry's RPC conventions count as a server span's
# error: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
# DATA_LOSS (the router's spans use the same set).
_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (spans are opened)."""
    return _AVAILABLE


def start_span(path: str, metadata: wire.MetadataList) -> Optional[Any]:
    """Opens the server span of a call of ``path`` (``/pkg.Service/Method``),
    the child of the trace context in its ``metadata``; ``None`` without
    ``opentelemetry-api``."""
    if not _AVAILABLE:
        return None
    name = path.lstrip("/")
    service, _, method = name.rpartition("/")
    carrier = {key: value for key, value in metadata if isinstance(value, str)}
    parent = _propagate.extract(carrier)
    tracer = _trace.get_tracer(SCOPE)
    return tracer.start_span(
        name,
        context=parent,
        kind=_trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
    )


def call_in_span(span: Optional[Any], function: Callable[..., T], *args: Any) -> T:
    """Calls ``function(*args)`` with ``span`` current in a copy of the
    current context: a task created there (``loop.create_task``) runs, and
    its executor work copies, that context."""
    if span is None:
        return function(*args)

    def inner() -> T:
        _context.attach(_trace.set_span_in_context(span))
        return function(*args)

    return contextvars.copy_context().run(inner)


def end_span(span: Optional[Any], code: int, message: str) -> None:
    """Records the call's gRPC status ``code`` on ``span`` (an error status
    with ``message`` for the codes the conventions count as a server's
    error) and ends it."""
    if span is None:
        return
    span.set_attribute("rpc.grpc.status_code", code)
    if code in _SERVER_ERRORS:
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, message))
    span.end()
