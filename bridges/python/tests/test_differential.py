"""One servicer behind a plain ``grpc.aio`` server and behind the bridge: the
same calls must end the same way for the client and for the handler.

Each case names a method kind, what the servicer does and what the client
does. The outcome compared is everything either side can observe: the
client's status code and details, response messages, response headers and
trailers (``-bin`` values and ``grpc-status-details-bin`` included), and on the
servicer the ordered events its handler and its done callback record (what the
handler saw: a return, ``CancelledError``, ``GeneratorExit``, the end of its
requests; ``context.cancelled()`` and ``context.done()`` in the done callback).

Every case runs against both kinds of router. The one expected difference is
the details of DEADLINE_EXCEEDED: a client of a grpc.aio server reports its
own timer ("Deadline Exceeded"), a client of the router usually gets the
router's status first (it expires the call a millisecond early), so for
deadline cases only the code is compared.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

import grpc
import grpc.aio
import pytest
from conftest import Router
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from harness import TIMEOUT, clients, python_instance, run
from myservice.v1 import myservice_pb2 as pb
from myservice.v1 import myservice_pb2_grpc as pb_grpc

#: Request metadata naming the case the servicer plays.
CASE = "x-case"
#: Long enough to count as "never" in a test; every wait is bounded by TIMEOUT.
FOREVER = 3600.0


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


@dataclass
class Record:
    """What one call's handler and done callback observed, in order."""

    events: List[Tuple[Any, ...]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    read_one: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    callback_ran: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, *event: Any) -> None:
        self.events.append(event)


def _rich_status() -> _Status:
    info = error_details_pb2.ErrorInfo(reason="QUOTA", domain="example.com", metadata={"k": "v"})
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="out of quota", details=[detail]
    )
    rich = rpc_status.to_status(status)
    return _Status(rich.code, rich.details, (*rich.trailing_metadata, ("x-why-bin", b"\x00\x01\xfe")))


class Probe(pb_grpc.GreeterServicer):
    """A grpc.aio servicer whose behaviour the request's ``x-case`` picks,
    recording what each handler sees. ``WhoAmI`` is left to the generated base
    class (UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.records: Dict[str, Record] = {}

    def records_for(self, metadata: Any) -> Record:
        """The record of the case ``metadata`` names."""
        return self.records.setdefault(dict(metadata)[CASE], Record())

    def _begin(self, context: Any) -> Tuple[str, Record]:
        case = dict(context.invocation_metadata())[CASE]
        record = self.records_for(context.invocation_metadata())

        def done(ctx: Any) -> None:
            record.add("done callback", "cancelled", ctx.cancelled(), "done", ctx.done())
            record.callback_ran.set()

        context.add_done_callback(done)
        record.started.set()
        return case, record

    @staticmethod
    def _echo(context: Any) -> List[Tuple[str, Any]]:
        return [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-") and k != CASE]

    async def SayHello(self, request: Any, context: Any) -> Any:
        case, record = self._begin(context)
        try:
            if case == "unary ok":
                await context.send_initial_metadata(self._echo(context))
                context.set_trailing_metadata([("x-trailer", "t"), ("x-trailer-bin", b"\xff\x00")])
                return pb.HelloReply(message=f"Hello, {request.name}!")
            if case == "unary abort with details":
                await context.abort_with_status(_rich_status())
            if case == "unary set code":
                context.set_code(grpc.StatusCode.NOT_FOUND)
                context.set_details("no such greeting")
                context.set_trailing_metadata([("x-trailer", "t")])
                return None
            if case == "unary raise":
                raise ValueError("boom")
            if case == "unary abort cancelled":
                await context.abort(grpc.StatusCode.CANCELLED, "gave up")
            # "unary deadline", "unary cancel": wait to be stopped.
            await asyncio.sleep(FOREVER)
            return pb.HelloReply(message="too late")
        except BaseException as e:
            record.add("handler", type(e).__name__)
            raise
        finally:
            record.add("handler exit")
            record.finished.set()

    async def StreamGreetings(self, request: Any, context: Any) -> AsyncIterator[Any]:
        case, record = self._begin(context)
        try:
            if case == "server streaming ok":
                await context.send_initial_metadata(self._echo(context))
                for i in range(3):
                    yield pb.HelloReply(message=f"#{i}")
                context.set_trailing_metadata([("x-trailer-bin", b"\x01\x02")])
                return
            if case == "server streaming abort after two":
                yield pb.HelloReply(message="#0")
                yield pb.HelloReply(message="#1")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no third")
            if case == "server streaming empty":
                return
            if case == "server streaming cancel while writing":
                # Writes until flow control holds the generator at a yield.
                while True:
                    yield pb.HelloReply(message="flood", payload=bytes(64 * 1024))
            # "... cancel while sleeping", "... deadline": one message, then wait.
            yield pb.HelloReply(message="first")
            await asyncio.sleep(FOREVER)
        except BaseException as e:
            record.add("handler", type(e).__name__)
            raise
        finally:
            record.add("handler exit")
            record.finished.set()

    async def Sum(self, request_iterator: Any, context: Any) -> Any:
        case, record = self._begin(context)
        count = 0
        try:
            if case == "client streaming abort before reading":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
            async for number in request_iterator:
                count += 1
                record.read_one.set()
                if case.endswith("while sleeping"):
                    await asyncio.sleep(FOREVER)
            record.add("handler", "requests ended", count)
            if case.endswith("then await"):
                # grpc.aio cancels the task at its next wait after the end.
                await asyncio.sleep(0)
                record.add("handler", "after the wait")
            return pb.SumReply(total=count, count=count)
        except BaseException as e:
            record.add("handler", type(e).__name__, count)
            raise
        finally:
            record.add("handler exit")
            record.finished.set()

    async def Chat(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        case, record = self._begin(context)
        count = 0
        try:
            if case == "bidi read with context.read":
                while (message := await context.read()) is not grpc.aio.EOF:
                    count += 1
                    record.read_one.set()
                    await context.write(pb.ChatMessage(text=f"echo {message.text}", seq=message.seq))
                record.add("handler", "read EOF", count)
                return
            async for message in request_iterator:
                count += 1
                record.read_one.set()
                yield pb.ChatMessage(text=f"echo {message.text}", seq=message.seq)
            record.add("handler", "requests ended", count)
            context.set_trailing_metadata([("x-count", str(count))])
        except BaseException as e:
            record.add("handler", type(e).__name__, count)
            raise
        finally:
            record.add("handler exit")
            record.finished.set()


@dataclass
class Outcome:
    """What the client saw and what the servicer recorded for one case."""

    code: grpc.StatusCode
    details: Optional[str]
    responses: List[str]
    headers: List[Tuple[str, Any]]
    trailers: List[Tuple[str, Any]]
    status_details: List[str]
    server: List[Tuple[Any, ...]]


def _visible(metadata: Any) -> List[Tuple[str, Any]]:
    return [(k, v) for k, v in (metadata or ()) if k.startswith("x-")]


def _status_details(trailers: Any) -> List[str]:
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            return [f"{status.code} {status.message}"] + [d.type_url for d in status.details]
    return []


#: A case: the client's side of it, given a stub, the servicer's record and
#: the metadata to send. Returns the call object and the responses it read.
Client = Callable[[pb_grpc.GreeterStub, "Probe", Tuple[Tuple[str, Any], ...]], Any]


async def _unary(stub: Any, probe: Probe, md: Any, timeout: float = TIMEOUT) -> Any:
    call = stub.SayHello(pb.HelloRequest(name="Ada"), metadata=md, timeout=timeout)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    return call, []


async def _unary_cancelled(stub: Any, probe: Probe, md: Any) -> Any:
    call = stub.SayHello(pb.HelloRequest(name="Ada"), metadata=md, timeout=TIMEOUT)
    await _wait(probe.records_for(md).started)
    call.cancel()
    return call, []


async def _server_stream(stub: Any, probe: Probe, md: Any, timeout: float = TIMEOUT, cancel_after: int = 0) -> Any:
    call = stub.StreamGreetings(pb.StreamRequest(name="Bo"), metadata=md, timeout=timeout)
    responses: List[str] = []
    with contextlib.suppress(grpc.aio.AioRpcError):
        while (reply := await call.read()) is not grpc.aio.EOF:
            responses.append(reply.message)
            if cancel_after and len(responses) == cancel_after:
                call.cancel()
                break
    return call, responses


async def _client_stream(stub: Any, probe: Probe, md: Any, timeout: float = TIMEOUT, cancel: bool = False) -> Any:
    call = stub.Sum(metadata=md, timeout=timeout)
    stopped = cancel or timeout < TIMEOUT
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        # One message when the call is stopped while the handler reads, so
        # it has read exactly one by then.
        for value in (1,) if stopped else (1, 2):
            await call.write(pb.Number(value=value))
        if stopped:
            await _wait(probe.records_for(md).read_one)
            if cancel:
                call.cancel()
        else:
            await call.done_writing()
        await call
    return call, []


async def _client_stream_refused(stub: Any, probe: Probe, md: Any) -> Any:
    # Nothing written: writes racing the handler's status make a grpc.aio
    # server's client see INTERNAL or the status, from run to run.
    call = stub.Sum(metadata=md, timeout=TIMEOUT)
    await _wait(probe.records_for(md).finished)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    return call, []


async def _bidi(stub: Any, probe: Probe, md: Any, timeout: float = TIMEOUT, cancel: bool = False) -> Any:
    call = stub.Chat(metadata=md, timeout=timeout)
    responses: List[str] = []
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        for seq in range(2):
            await call.write(pb.ChatMessage(text=f"m{seq}", seq=seq))
            answer = await call.read()
            responses.append(answer.text)
        if cancel:
            call.cancel()
        elif timeout >= TIMEOUT:
            await call.done_writing()
            while (answer := await call.read()) is not grpc.aio.EOF:
                responses.append(answer.text)
        await call.wait_for_connection()
    return call, responses


async def _unimplemented(stub: Any, probe: Probe, md: Any) -> Any:
    from google.protobuf import empty_pb2

    call = stub.WhoAmI(empty_pb2.Empty(), metadata=md, timeout=TIMEOUT)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    return call, []


SHORT = 0.5

#: case name -> the client's side.
CASES: Dict[str, Client] = {
    "unary ok": _unary,
    "unary abort with details": _unary,
    "unary set code": _unary,
    "unary raise": _unary,
    "unary abort cancelled": _unary,
    "unary unimplemented": _unimplemented,
    "unary deadline": lambda s, p, md: _unary(s, p, md, timeout=SHORT),
    "unary cancel": _unary_cancelled,
    "server streaming ok": _server_stream,
    "server streaming empty": _server_stream,
    "server streaming abort after two": _server_stream,
    "server streaming deadline": lambda s, p, md: _server_stream(s, p, md, timeout=SHORT),
    "server streaming cancel while sleeping": lambda s, p, md: _server_stream(s, p, md, cancel_after=1),
    "server streaming cancel while writing": lambda s, p, md: _server_stream(s, p, md, cancel_after=1),
    "client streaming ok": _client_stream,
    "client streaming abort before reading": _client_stream_refused,
    "client streaming cancel while reading": lambda s, p, md: _client_stream(s, p, md, cancel=True),
    "client streaming cancel while reading then await": lambda s, p, md: _client_stream(s, p, md, cancel=True),
    "client streaming cancel while sleeping": lambda s, p, md: _client_stream(s, p, md, cancel=True),
    "client streaming deadline while reading": lambda s, p, md: _client_stream(s, p, md, timeout=SHORT),
    "bidi ok": _bidi,
    "bidi read with context.read": _bidi,
    "bidi cancel while reading": lambda s, p, md: _bidi(s, p, md, cancel=True),
    "bidi deadline while reading": lambda s, p, md: _bidi(s, p, md, timeout=SHORT),
}

#: Request metadata every case sends: text, a repeated key and a binary value.
METADATA = (("x-tenant", "acme"), ("x-tenant", "beta"), ("x-trace-bin", b"\x00\xff\x01"))


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), TIMEOUT)


async def outcome(stub: pb_grpc.GreeterStub, probe: Probe, case: str) -> Outcome:
    """Plays ``case`` against ``stub`` and collects what both sides saw."""
    md = ((CASE, case), *METADATA)
    call, responses = await CASES[case](stub, probe, md)
    code = await call.code()
    record = probe.records_for(md)
    if case != "unary unimplemented":
        # The handler ran: wait until it and its done callback are through.
        await _wait(record.finished)
        await _wait(record.callback_ran)
    return Outcome(
        code=code,
        details=await call.details(),
        responses=responses,
        headers=_visible(await call.initial_metadata()),
        trailers=_visible(await call.trailing_metadata()),
        status_details=_status_details(await call.trailing_metadata()),
        server=list(record.events),
    )


@contextlib.asynccontextmanager
async def direct_server() -> AsyncIterator[Tuple[pb_grpc.GreeterStub, Probe]]:
    """The servicer on an ordinary grpc.aio server, and a client of it."""
    probe = Probe()
    server = grpc.aio.server()
    pb_grpc.add_GreeterServicer_to_server(probe, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.GreeterStub(channel), probe
    finally:
        await channel.close()
        await server.stop(None)


@contextlib.asynccontextmanager
async def bridged(router: Router) -> AsyncIterator[Tuple[pb_grpc.GreeterStub, Probe]]:
    """The servicer behind the bridge and ``router``, and a client of the router."""
    probe = Probe()
    async with python_instance([router], probe, "probe"):
        channel = grpc.aio.insecure_channel(clients(router))
        try:
            yield pb_grpc.GreeterStub(channel), probe
        finally:
            await channel.close()


def _either_cancel_order(server: List[Tuple[Any, ...]]) -> List[Tuple[Any, ...]]:
    """``server`` with the two endings a client's cancel can give a handler
    that reads made one. grpc.aio ends a pending read (the requests end) and
    cancels the handler's task a loop turn later; a handler still in another
    await (sending its last response, slowly on a loaded machine) gets the
    ``CancelledError`` there instead, and its status is then not returned
    (``done()`` False). The reference server shows either from run to run,
    so either is grpc.aio's behaviour; the rest of what both sides saw must
    still match exactly."""
    ended = []
    for record in server:
        if record[:2] in (("handler", "requests ended"), ("handler", "CancelledError")):
            record = ("handler", "requests ended or CancelledError", *record[2:])
        elif record[:1] == ("done callback",):
            record = (*record[:-1], "either")
        ended.append(record)
    return ended


#: Cases the bridge cannot match yet, and why.
KNOWN = {
    "bidi cancel while reading": (
        "the grpc.aio reference ends a cancelled bidi handler in one of three orders, by load: "
        "its requests end; CancelledError while it sends its last response; or GeneratorExit after "
        "the done callback ran. The bridge gives the first, so the case fails on a loaded machine "
        "whenever the reference takes another (seen in CI)"
    ),
    "client streaming cancel while reading then await": (
        "the router forwards a client's cancel of a request stream as HalfClose then Cancel, "
        "so the handler sees a normal end of its requests first (issue 27)"
    ),
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN[c], strict=False)) if c in KNOWN else c for c in CASES],
)
def test_a_call_through_the_bridge_ends_as_on_a_grpc_aio_server(router: Router, case: str) -> None:
    async def scenario() -> None:
        async with direct_server() as (stub, probe):
            expected = await outcome(stub, probe, case)
        async with bridged(router) as (stub, probe):
            actual = await outcome(stub, probe, case)
        if "deadline" in case:
            assert expected.code == actual.code == grpc.StatusCode.DEADLINE_EXCEEDED
            expected.details = actual.details = None
        if "cancel while reading" in case:
            expected.server = _either_cancel_order(expected.server)
            actual.server = _either_cancel_order(actual.server)
        assert actual == expected

    run(scenario())
