"""Running one forwarded call through the servicer's own method handler.

**Cancellation, as grpc.aio shows it.** When the router cancels a call (the
client cancelled, the deadline passed, the registration ended) or the bridge's
own deadline timer fires, the call is over on the wire at once (nothing more
is sent for it) and the handler is stopped exactly as a ``grpc.aio`` server
stops it (``_handle_cancellation_from_core`` in grpcio's ``server.pyx.pxi``):

- a read the handler is waiting on returns the end of the requests (the
  request iterator ends, ``context.read()`` returns ``EOF``), and so does any
  later read;
- on the next turn of the event loop the handler's task is cancelled
  (``CancelledError`` where it waits) unless it has returned its status by
  then: a handler that ends when its requests end finishes normally;
- ``add_done_callback`` callbacks run when the handler's task has finished,
  and see ``context.done()`` True only if the handler returned its status, and
  ``context.cancelled()`` True only if the handler set ``CANCELLED`` itself
  (grpc.aio's ``cancelled()`` is ``code() == CANCELLED``).

Synchronous (thread-pool) handlers follow grpcio's synchronous server instead:
``is_active()`` turns False, ``add_callback`` callbacks run at once, and reads
or writes raise :class:`CallEnded`.
"""

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
_RESOURCE_EXHAUSTED = 8


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
    instance_id: str
    #: Whether the servicer is a grpc.aio one (see ``Bridge.aio_servicer``).
    aio_servicer: bool

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
        # Bytes of the chunked request message arriving now.
        self._partial = 0
        self._inbound: "asyncio.Queue[_Item]" = asyncio.Queue()
        self._request_done = False
        self._headers_sent = False
        # Sync handlers add callbacks from their threads.
        self._callbacks_lock = threading.Lock()
        self._callbacks: List[Callable[[], None]] = []
        # Cancelled by the router or expired: the client is gone.
        self.cancelled = False
        # Nothing more is sent for the call (its status went out, or it was cancelled).
        self.over = False
        # The handler returned its status (grpc.aio's ``done()``), sent or not.
        self.status_sent = False
        # Whether the handler runs in the thread pool.
        self._sync = False
        # ``add_done_callback`` callbacks: run when the handler's task ends.
        self._done_callbacks: List[Callable[[], None]] = []
        self._handler_finished = False
        # The handler's response generator, kept until the done callbacks ran,
        # so a generator stopped mid-stream is closed after them, as in grpc.aio.
        self._responses: Any = None
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
        self.task.add_done_callback(self._handler_done)

    def deliver(self, item: _Item) -> None:
        """A request message, chunk or the client's half-close (``None``). A
        request message over the bridge's limit fails the call at once
        (RESOURCE_EXHAUSTED), whether or not the handler reads, as a gRPC
        server fails it."""
        if self.over:
            return
        if isinstance(item, wire.Chunk):
            self._partial += len(item.data)
            if self._partial > self.link.max_message:
                self._refuse(f"more than {self.link.max_message} bytes")
                return
            if item.last:
                self._partial = 0
        elif item is not None and len(item) > self.link.max_message:
            self._refuse(f"{len(item)} bytes")
            return
        self._inbound.put_nowait(item)

    def _refuse(self, size: str) -> None:
        self.cancelled = True
        self.finish(_RESOURCE_EXHAUSTED, _too_large(size, self.link.max_message, self.link.instance_id), b"", [])
        if self.task is not None:
            self.task.cancel()

    def cancel(self) -> None:
        """The router cancelled the call: nothing more is sent for it, and the
        handler stops as the module docs say."""
        if self.over:
            return
        otel.end_span(self._span, _CANCELLED, "cancelled by the client")
        self._terminate()

    def expire(self) -> None:
        """The deadline passed: DEADLINE_EXCEEDED to the router, and the
        handler stops as after a cancel."""
        if self.over:
            return
        self.link.send(wire.encode_trailers(self.id, _DEADLINE_EXCEEDED, "deadline exceeded"))
        self._terminate()

    def _terminate(self) -> None:
        self.cancelled = True
        # Wakes a pending read first (with the end of the requests), then
        # stops the task a turn later: the order grpc.aio's own callbacks run in.
        self._end()
        self.loop.call_soon(self._stop_handler)

    def _stop_handler(self) -> None:
        task = self.task
        if task is not None and not task.done() and not self.status_sent:
            task.cancel()

    def time_remaining(self) -> Optional[float]:
        """Seconds to the deadline, or None."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.loop.time())

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Runs ``callback`` when the handler's task has finished (at once if
        it has)."""
        if self._handler_finished:
            callback()
        else:
            self._done_callbacks.append(callback)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Runs ``callback`` when the call ends (sync handlers: grpcio's
        ``add_callback``); False if it already has."""
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
                # grpc.aio reads the end of the requests from a cancelled call.
                if self.cancelled and not self._sync:
                    return None
                raise CallEnded()
            item = await self._inbound.get()
            if item is None:
                if self.over:
                    continue
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
        """The handler's status: sent once, unless the call already ended."""
        if self.status_sent:
            return
        self.status_sent = True
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
        if self._timer is not None:
            self._timer.cancel()
        # Wake a reader waiting for a request.
        self._inbound.put_nowait(_END)
        # A sync handler's writer waits in a task of its own: wake it with
        # CallEnded. An async handler waiting for credit is cancelled with its
        # task, as grpc.aio's is (the credit closes when the task ends).
        if self._sync or not self.cancelled:
            self.reply_credit.close()
        self.link.forget(self)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a callback's failure is the user's
                _LOGGER.exception("call %d: done callback failed", self.id)

    def _handler_done(self, task: "asyncio.Task[None]") -> None:
        self._handler_finished = True
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a callback's failure is the user's
                _LOGGER.exception("call %d: done callback failed", self.id)
        self.reply_credit.close()
        self._responses = None

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
                self._sync = True
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
            # ``deliver`` refuses such a message before a handler reads it.
            self.finish(_RESOURCE_EXHAUSTED, _too_large(f"more than {error.limit} bytes", error.limit, self.link.instance_id), b"", [])
        elif isinstance(error, CallEnded) or self.over:
            return
        elif isinstance(error, AbortError) or context._aborted:
            self._finish_from(context)
        elif isinstance(error, _Internal):
            self.finish(_INTERNAL, str(error), b"", [])
        else:
            # As grpcio does: a code the handler set before raising wins (the
            # generated base servicer's UNIMPLEMENTED), else UNKNOWN. The
            # message: a grpc.aio server's "Unexpected <type>: <error>"; a
            # sync server's details set before raising, else its own text.
            code, details, status_details, trailers = context.status()
            if context._code in (None, _OK):
                code = _UNKNOWN
            if self.link.aio_servicer:
                message = f"Unexpected {type(error)}: {error}"
            elif context._details is not None:
                message = context._details
            _LOGGER.error("call %d (%s): %s", self.id, self.start.path, message)
            self.finish(code, message, status_details, trailers)

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
                    self._responses = result
                    async for response in result:
                        await self.send_response(self.serialize(response))
                else:
                    await result
            else:
                response = await behavior(request, context)
                if self.over:
                    # Cancelled while the handler ran: as in grpc.aio, its
                    # status counts as returned (``done()``), and goes nowhere.
                    pass
                elif response is not None:
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
            if self.over:
                # Cancelled before its request: grpc.aio never runs the handler.
                raise CallEnded()
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


def _too_large(size: str, limit: int, instance_id: str) -> str:
    """The status message of a request over the bridge's limit."""
    return (
        f"request message of {size} exceeds instance `{instance_id}`'s limit of {limit} bytes "
        f"(raise it with BridgeOptions.max_message_size)"
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
