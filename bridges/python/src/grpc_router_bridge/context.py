"""The ``ServicerContext`` a handler sees when its call came through a router.

:class:`SyncServicerContext` implements ``grpc.ServicerContext`` for ordinary
(thread-pool) servicers, :class:`AioServicerContext` implements
``grpc.aio.ServicerContext`` for ``async def`` servicers. Both read the call's
metadata, deadline and cancellation from the router's ``CallStart``/``Cancel``
frames and turn ``send_initial_metadata``, ``set_trailing_metadata``,
``set_code``/``set_details`` and ``abort`` into ``Headers`` and ``Trailers``.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Callable, List, NoReturn, Optional, Sequence, Tuple

import grpc
import grpc.aio

from .wire import MetadataList

if TYPE_CHECKING:  # pragma: no cover
    from .call import Call

#: One metadata entry as handlers see it (``.key``, ``.value``; a 2-tuple).
Metadatum = collections.namedtuple("Metadatum", ("key", "value"))

#: The trailer that carries encoded ``google.rpc.Status`` details.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class AbortError(Exception):
    """Raised by ``context.abort``: the call ends with the status set on the
    context. Handlers should let it propagate."""


def code_number(code: Any) -> int:
    """The numeric value of a ``grpc.StatusCode`` (or an int)."""
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code)


def normalize_metadata(metadata: Optional[Sequence[Tuple[str, Any]]], where: str) -> MetadataList:
    """Checks handler-supplied metadata: lowercase keys, ``bytes`` for ``-bin``
    keys and ASCII text for the others."""
    out: MetadataList = []
    for entry in metadata or ():
        try:
            key, value = entry
        except (TypeError, ValueError):
            raise ValueError(f"{where}: metadata entry {entry!r} is not a (key, value) pair") from None
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: metadata key {key!r} must be a non-empty str")
        key = key.lower()
        if key.endswith("-bin"):
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, (bytes, bytearray)):
                raise ValueError(f"{where}: value of binary key `{key}` must be bytes")
            out.append((key, bytes(value)))
        else:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("ascii", errors="replace")
            if not isinstance(value, str) or not value.isascii():
                raise ValueError(f"{where}: value of key `{key}` must be ASCII text")
            out.append((key, value))
    return out


class _Base:
    """What both context flavours share: the call's request side and status."""

    def __init__(self, call: "Call") -> None:
        self._call = call
        self._code: Optional[int] = None
        self._details: Optional[str] = None
        self._trailing: MetadataList = []
        self._aborted = False

    # --- request side -------------------------------------------------------

    def invocation_metadata(self) -> Tuple[Metadatum, ...]:
        """The client's request metadata (``-bin`` values as ``bytes``)."""
        return tuple(Metadatum(k, v) for k, v in self._call.start.metadata)

    def peer(self) -> str:
        """The client's address as the router saw it, in grpcio's form
        (``ipv4:127.0.0.1:5000``)."""
        peer = self._call.start.peer
        if not peer:
            return "unknown"
        return f"ipv6:{peer}" if peer.startswith("[") else f"ipv4:{peer}"

    def peer_identities(self) -> Optional[Sequence[bytes]]:
        """Always ``None``: the client's TLS identity ends at the router."""
        return None

    def peer_identity_key(self) -> Optional[str]:
        """Always ``None`` (see :meth:`peer_identities`)."""
        return None

    def auth_context(self) -> Any:
        """An empty auth context: the client authenticated to the router."""
        return {}

    def time_remaining(self) -> Optional[float]:
        """Seconds left until the client's deadline, or ``None`` without one."""
        return self._call.time_remaining()

    def set_compression(self, compression: Any) -> None:
        """Accepted and ignored: the register stream carries messages uncompressed."""

    def disable_next_message_compression(self) -> None:
        """Accepted and ignored (see :meth:`set_compression`)."""

    # --- status -------------------------------------------------------------

    def set_trailing_metadata(self, trailing_metadata: Sequence[Tuple[str, Any]]) -> None:
        """Sets the trailers sent with the status."""
        self._trailing = normalize_metadata(trailing_metadata, "set_trailing_metadata")

    def trailing_metadata(self) -> Tuple[Metadatum, ...]:
        """The trailers set so far."""
        return tuple(Metadatum(k, v) for k, v in self._trailing)

    def set_code(self, code: grpc.StatusCode) -> None:
        """Sets the status code the call ends with."""
        self._code = code_number(code)

    def set_details(self, details: str) -> None:
        """Sets the status message the call ends with."""
        self._details = details

    def code(self) -> Optional[grpc.StatusCode]:
        """The status code set so far."""
        if self._code is None:
            return None
        for status in grpc.StatusCode:
            if status.value[0] == self._code:
                return status
        return None

    def details(self) -> Optional[str]:
        """The status message set so far."""
        return self._details

    def _set_abort(self, code: Any, details: str, trailing: Optional[Sequence[Tuple[str, Any]]]) -> NoReturn:
        number = code_number(code)
        if number == 0:
            raise ValueError("abort() needs a non-OK status code")
        self._code = number
        # As grpc.aio: an empty ``details`` keeps what set_details set.
        if details or self._details is None:
            self._details = details
        if trailing:
            self._trailing = normalize_metadata(trailing, "abort")
        self._aborted = True
        raise AbortError(details)

    def status(self) -> Tuple[int, str, bytes, MetadataList]:
        """The final ``(code, message, details, trailers)``; details move from
        the ``grpc-status-details-bin`` trailer to ``Trailers.details``."""
        details = b""
        trailers: MetadataList = []
        for key, value in self._trailing:
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                details = value
            else:
                trailers.append((key, value))
        return (self._code or 0, self._details or "", details, trailers)


class SyncServicerContext(_Base, grpc.ServicerContext):
    """``grpc.ServicerContext`` for servicers run in the bridge's thread pool."""

    def is_active(self) -> bool:
        """False once the call was cancelled, timed out or ended."""
        return not self._call.over

    def cancel(self) -> None:
        """Ends the call with CANCELLED."""
        self._call.loop.call_soon_threadsafe(self._call.finish, 1, "Cancelled", b"", [])

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Calls ``callback()`` when the call ends; False if it already has."""
        return self._call.add_callback(lambda: callback())

    def send_initial_metadata(self, initial_metadata: Sequence[Tuple[str, Any]]) -> None:
        """Sends the response headers now."""
        metadata = normalize_metadata(initial_metadata, "send_initial_metadata")
        self._call.loop.call_soon_threadsafe(self._call.send_headers, metadata)

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """Ends the call with ``code`` and ``details``; raises :class:`AbortError`."""
        self._set_abort(code, details, None)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """Ends the call with a ``grpc.Status`` (for example from
        ``grpc_status.rpc_status.to_status``, whose details travel in
        ``grpc-status-details-bin``)."""
        self._set_abort(status.code, status.details, status.trailing_metadata)


class AioServicerContext(_Base, grpc.aio.ServicerContext):
    """``grpc.aio.ServicerContext`` for ``async def`` servicers."""

    async def read(self) -> Any:
        """The next request message, or ``grpc.aio.EOF`` after the last."""
        raw = await self._call.next_request()
        if raw is None:
            return grpc.aio.EOF
        return self._call.deserialize(raw)

    async def write(self, message: Any) -> None:
        """Sends one response message (streaming responses)."""
        await self._call.send_response(self._call.serialize(message))

    async def send_initial_metadata(self, initial_metadata: Sequence[Tuple[str, Any]]) -> None:
        """Sends the response headers now."""
        self._call.send_headers(normalize_metadata(initial_metadata, "send_initial_metadata"))

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[Tuple[str, Any]] = (),
    ) -> NoReturn:
        """Ends the call with ``code``, ``details`` and trailers; raises
        :class:`AbortError`."""
        self._set_abort(code, details, trailing_metadata)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """Ends the call with a ``grpc.Status`` (details travel in
        ``grpc-status-details-bin``)."""
        self._set_abort(status.code, status.details, status.trailing_metadata)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Calls ``callback(context)`` when the handler has finished (after a
        cancel too), as grpc.aio does."""
        self._call.add_done_callback(lambda: callback(self))

    def cancelled(self) -> bool:
        """As in grpc.aio: whether the call's status code is ``CANCELLED``
        (set by the handler). A client's cancel or deadline does not set it:
        the handler sees those as ``CancelledError`` or the end of its
        requests (see :mod:`grpc_router_bridge.call`)."""
        return self._code == 1

    def done(self) -> bool:
        """As in grpc.aio: whether the handler has returned its status (false
        after a cancel that stopped it)."""
        return self._call.status_sent
