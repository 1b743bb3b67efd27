"""Running one forwarded call through the servicer's own method handler."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import threading
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional, Protocol, Union

import grpc

from . import otel, wire
from .context import AbortError, AioServicerContext, SyncServicerContext, _Base
from .flow import Assembler, CreditClosed, CreditReturn, MessageTooLarge, SendCredit, send_with_credit

_LOGGER = logging.getLogger(__name__)

_OK = 0
_CANCELLED = 1
_UNKNOWN = 2
_DEADLINE_EXCEEDED = 4
_UNIMPLEMENTED = 12
_INTERNAL = 13
_OUT_OF_RANGE = 11


class CallEnded(grpc.RpcError):
    """Raised into a handler that reads or writes after its call ended
    (cancelled by the client, deadline passed, router gone)."""


class Link(Protocol):
    """What a call needs from its registration (the session)."""

    loop: asyncio.AbstractEventLoop
    executor: Executor
    reply_window: int
    request_window: int
    max_frame: int
    max_message: int

    def send(self, frame: bytes) -> None:
        """Queues one frame for the router."""

    def forget(self, call: "Call") -> None:
        """The call is over: drop it from the registration."""


_Item = Union[bytes, wire.Chunk, None]
_END: None = None


class Call:
    """One call in flight: its request queue, credit, status and handler task."""

    def __init__(self, link: Link, start: wire.CallStart, handler: Optional[grpc.RpcMethodHandler]) -> None:
        self.link = link
        self.loop = link.loop
        self.start = start
        self.id = start.call_id
        self.handler = handler
        self.reply_credit = SendCredit(link.reply_window)
        self._credit_return = CreditReturn(link.request_window)
        self._assembler = Assembler(link.max_message)
        self._inbound: "asyncio.Queue[_Item]" = asyncio.Queue()
        self._request_done = False
        self._headers_sent = False
        # Sync handlers add callbacks from their threads.
        self._callbacks_lock = threading.Lock()
        self._callbacks: List[Callable[[], None]] = []
        self.cancelled = False
        self.over = False
        self.deadline: Optional[float] = (
            self.loop.time() + start.timeout_micros / 1e6 if start.timeout_micros > 0 else None
        )
        self._timer: Optional[asyncio.TimerHandle] = None
        self.task: Optional["asyncio.Task[None]"] = None
        # The call's OpenTelemetry server span (``otel``), None without the extra.
        self._span: Optional[Any] = None
        self._serializer: Callable[[Any], bytes] = _identity
        self._deserializer: Callable[[bytes], Any] = _identity
        if handler is not None:
            self._serializer = handler.response_serializer or _identity
            self._deserializer = handler.request_deserializer or _identity

    def serialize(self, response: Any) -> bytes:
        """The servicer's encoding of ``response`` (INTERNAL if it fails, as in grpcio)."""
        try:
            return self._serializer(response)
        except Exception:  # noqa: BLE001 - the user's serializer
            _LOGGER.exception("call %d: failed to serialize the response", self.id)
            raise _Internal("Failed to serialize response!") from None

    def deserialize(self, raw: bytes) -> Any:
        """The servicer's decoding of a request (INTERNAL if it fails, as in grpcio)."""
        try:
            return self._deserializer(raw)
        except Exception:  # noqa: BLE001 - the user's deserializer
            _LOGGER.exception("call %d: failed to deserialize the request", self.id)
            raise _Internal("Exception deserializing request!") from None

    # --- driven by the session ---------------------------------------------

    def begin(self) -> None:
        """Starts the handler task and the deadline timer."""
        if self.deadline is not None:
            self._timer = self.loop.call_at(self.deadline, self.expire)
        self._span = otel.start_span(self.start.path, self.start.metadata)
        self.task = otel.call_in_span(self._span, self.loop.create_task, self._run())

    def deliver(self, item: _Item) -> None:
        """A request message, chunk or the client's half-close (``None``)."""
        if not self.over:
            self._inbound.put_nowait(item)

    def cancel(self) -> None:
        """The router cancelled the call: nothing more is sent for it."""
        if self.over:
            return
        self.cancelled = True
        otel.end_span(self._span, _CANCELLED, "cancelled by the client")
        self._end()
        if self.task is not None:
            self.task.cancel()

    def expire(self) -> None:
        """The deadline passed: DEADLINE_EXCEEDED, and the handler is cancelled."""
        if self.over:
            return
        self.cancelled = True
        self.finish(_DEADLINE_EXCEEDED, "deadline exceeded", b"", [])
        if self.task is not None:
            self.task.cancel()

    def time_remaining(self) -> Optional[float]:
        """Seconds to the deadline, or None."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.loop.time())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Runs ``callback`` when the call ends; False if it already has."""
        with self._callbacks_lock:
            if self.over:
                return False
            self._callbacks.append(callback)
            return True

    # --- used by handlers (on the loop) ---------------------------------------

    async def next_request(self) -> Optional[bytes]:
        """The next whole request message, or None after the last. Returns
        credit to the router as messages are taken."""
        while True:
            if self._request_done:
                return None
            if self.over:
                raise CallEnded()
            item = await self._inbound.get()
            if item is None:
                if self.over:
                    raise CallEnded()
                self._request_done = True
                return None
            if isinstance(item, wire.Chunk):
                whole = self._assembler.push(item.data, item.last)
                self._return_credit(len(item.data))
                if whole is not None:
                    return whole
                continue
            self._return_credit(len(item))
            return item

    def send_headers(self, metadata: wire.MetadataList) -> None:
        """Sends the response headers, once."""
        if self.over or self._headers_sent:
            return
        self._headers_sent = True
        self.link.send(wire.encode_headers(self.id, metadata))

    async def send_response(self, message: bytes) -> None:
        """Sends one response message as credit allows, chunked if large."""
        if self.over:
            raise CallEnded()
        self.send_headers([])
        try:
            await send_with_credit(
                self.reply_credit,
                self.link.max_frame,
                message,
                lambda whole: self.link.send(wire.encode_reply(self.id, self.start.method_tag, whole)),
                lambda data, last: self.link.send(wire.encode_chunk(self.id, data, last)),
            )
        except CreditClosed:
            raise CallEnded() from None

    def finish(self, code: int, message: str, details: bytes, trailers: wire.MetadataList) -> None:
        """Sends the call's status (once) and ends it."""
        if self.over:
            return
        if code == _OK:
            self.send_headers([])
        self.link.send(wire.encode_trailers(self.id, code, message, details, trailers))
        otel.end_span(self._span, code, message)
        self._end()

    # --- internals ----------------------------------------------------------

    def _return_credit(self, length: int) -> None:
        increment = self._credit_return.consumed(length)
        if increment is not None and not self.over:
            self.link.send(wire.encode_window_update(self.id, increment))

    def _end(self) -> None:
        with self._callbacks_lock:
            self.over = True
            callbacks, self._callbacks = self._callbacks, []
        self.reply_credit.close()
        if self._timer is not None:
            self._timer.cancel()
        # Wake a reader waiting for a request.
        self._inbound.put_nowait(_END)
        self.link.forget(self)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a callback's failure is the user's
                _LOGGER.exception("call %d: done callback failed", self.id)

    async def _run(self) -> None:
        handler = self.handler
        try:
            if handler is None:
                self.finish(_UNIMPLEMENTED, "Method not found!", b"", [])
                return
            behavior = _behavior(handler)
            if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
                await self._run_async(handler, behavior)
            else:
                await asyncio.wrap_future(self.link.executor.submit(contextvars.copy_context().run, self._run_sync, handler, behavior))
        except asyncio.CancelledError:
            # Cancelled by the router or the deadline, which already answered.
            pass
        except CallEnded:
            pass
        except Exception as e:  # noqa: BLE001 - reported to the client as INTERNAL
            _LOGGER.exception("call %d failed in the bridge", self.id)
            self.finish(_INTERNAL, f"bridge error: {e}", b"", [])
        finally:
            if not self.over:
                self.finish(_INTERNAL, "the handler ended without a status", b"", [])

    def _finish_from(self, context: _Base) -> None:
        code, message, details, trailers = context.status()
        self.finish(code, message, details, trailers)

    def _finish_failed(self, error: BaseException, context: _Base, message: str) -> None:
        if isinstance(error, MessageTooLarge):
            self.finish(_OUT_OF_RANGE, str(error), b"", [])
        elif isinstance(error, CallEnded) or self.over:
            return
        elif isinstance(error, AbortError) or context._aborted:
            self._finish_from(context)
        elif isinstance(error, _Internal):
            self.finish(_INTERNAL, str(error), b"", [])
        else:
            # As grpcio does: a code and details the handler set before raising
            # win (the generated base servicer's UNIMPLEMENTED), else UNKNOWN.
            _LOGGER.error("call %d (%s): %s", self.id, self.start.path, message)
            code, details, status_details, trailers = context.status()
            if context._code in (None, _OK):
                code = _UNKNOWN
            self.finish(code, context._details if context._details is not None else message, status_details, trailers)

    async def _run_async(self, handler: grpc.RpcMethodHandler, behavior: Any) -> None:
        context = AioServicerContext(self)
        try:
            if handler.request_streaming:
                request: Any = self._async_requests()
            else:
                request = await self._single_request()
            if handler.response_streaming:
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        await self.send_response(self.serialize(response))
                else:
                    await result
            else:
                response = await behavior(request, context)
                if response is not None:
                    await self.send_response(self.serialize(response))
                elif context._code in (None, _OK):
                    raise RuntimeError("the handler returned None instead of a response")
            self._finish_from(context)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - becomes the call's status
            self._finish_failed(e, context, f"Unexpected {type(e)}: {e}")

    async def _single_request(self) -> Any:
        raw = await self.next_request()
        if raw is None:
            raise _Internal("the client sent no request message")
        return self.deserialize(raw)

    async def _async_requests(self) -> AsyncIterator[Any]:
        while True:
            raw = await self.next_request()
            if raw is None:
                return
            yield self.deserialize(raw)

    def _block(self, coroutine: Any) -> Any:
        """Runs ``coroutine`` on the loop from a handler thread and waits; a
        handler whose bridge stopped gets :class:`CallEnded` instead of hanging."""
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:  # the loop is closed
            coroutine.close()
            raise CallEnded() from None
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if self.loop.is_closed() or not self.loop.is_running():
                    future.cancel()
                    raise CallEnded() from None

    def _sync_requests(self) -> Iterator[Any]:
        while True:
            raw = self._block(self.next_request())
            if raw is None:
                return
            yield self.deserialize(raw)

    def _run_sync(self, handler: grpc.RpcMethodHandler, behavior: Any) -> None:
        context = SyncServicerContext(self)
        try:
            if handler.request_streaming:
                request: Any = self._sync_requests()
            else:
                raw = self._block(self.next_request())
                if raw is None:
                    raise _Internal("the client sent no request message")
                request = self.deserialize(raw)
            if handler.response_streaming:
                for response in behavior(request, context):
                    if self.over:
                        return
                    self._block(self.send_response(self.serialize(response)))
            else:
                response = behavior(request, context)
                if response is not None:
                    self._block(self.send_response(self.serialize(response)))
                elif context._code in (None, _OK):
                    raise RuntimeError("the handler returned None instead of a response")
            self.loop.call_soon_threadsafe(self._finish_from, context)
        except Exception as e:  # noqa: BLE001 - becomes the call's status
            self.loop.call_soon_threadsafe(
                self._finish_failed, e, context, f"Exception calling application: {e}"
            )


class _Internal(Exception):
    """Ends the call with INTERNAL and this message."""


def _identity(value: Any) -> Any:
    return value


def _behavior(handler: grpc.RpcMethodHandler) -> Any:
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream
    if handler.request_streaming:
        return handler.stream_unary
    if handler.response_streaming:
        return handler.unary_stream
    return handler.unary_unary
