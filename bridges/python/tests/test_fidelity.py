"""What a client sees of a Python instance behind the router: metadata both
ways (binary values included), statuses with details, deadlines,
cancellation, large messages, and per-call flow control."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from conftest import Router
from harness import MiB, TIMEOUT, HookedGreeter, SyncGreeter, client, python_instance, run
from myservice.v1 import myservice_pb2 as pb

#: How far gRPC core rounds a 10-100 s `grpc-timeout` up on the wire.
GRPC_TIMEOUT_ROUNDING = 0.1


def test_request_metadata_reaches_the_handler_and_comes_back_as_response_headers(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            call = stub.SayHello(
                pb.HelloRequest(name="m"),
                metadata=(("x-echo", "1"), ("x-tenant", "acme"), ("x-tenant", "beta"), ("x-trace-bin", b"\x00\xff\x01")),
                timeout=TIMEOUT,
            )
            await call
            headers = [(k, v) for k, v in await call.initial_metadata() if k.startswith("x-")]
            assert headers == [("x-echo", "1"), ("x-tenant", "acme"), ("x-tenant", "beta"), ("x-trace-bin", b"\x00\xff\x01")]

    run(scenario())


def test_trailing_metadata_with_binary_values_reaches_the_client(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            call = stub.SayHello(pb.HelloRequest(name="trailers"), timeout=TIMEOUT)
            await call
            trailers = [(k, v) for k, v in await call.trailing_metadata() if k.startswith("x-")]
            assert trailers == [("x-trailer", "t"), ("x-trailer-bin", b"\xff\x00")]
            assert await call.code() == grpc.StatusCode.OK

    run(scenario())


def test_a_requested_failure_reaches_the_client_with_its_code_and_message(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE):
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await stub.SayHello(pb.HelloRequest(name=f"fail:{code.value[0]}"), timeout=TIMEOUT)
                assert failure.value.code() == code
                assert failure.value.details() == "requested failure"

    run(scenario())


def test_status_details_from_abort_with_status_reach_the_client_decoded(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.SayHello(pb.HelloRequest(name="details"), timeout=TIMEOUT)
            error = failure.value
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.details() == "out of quota"
            status = rpc_status.from_call(error)
            assert status is not None and status.message == "out of quota"
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info)
            assert (info.reason, info.domain, dict(info.metadata)) == ("QUOTA", "example.com", {"k": "v"})
            trailers = dict((k, v) for k, v in error.trailing_metadata() if k.startswith("x-"))
            assert trailers == {"x-trailer": "t", "x-trailer-bin": b"\xff\x00"}

    run(scenario())


def test_sync_handlers_abort_and_raise_as_grpcio_servers_do(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], SyncGreeter("py"), "py"), client(router) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as aborted:
                await stub.SayHello(pb.HelloRequest(name="fail:5"), timeout=TIMEOUT)
            assert (aborted.value.code(), aborted.value.details()) == (grpc.StatusCode.NOT_FOUND, "requested failure")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.SayHello(pb.HelloRequest(name="raise"), timeout=TIMEOUT)
            assert raised.value.code() == grpc.StatusCode.UNKNOWN
            assert raised.value.details() == "Exception calling application: boom"
            call = stub.SayHello(pb.HelloRequest(name="ok"), timeout=TIMEOUT)
            await call
            assert ("x-sync", "yes") in list(await call.trailing_metadata())

    run(scenario())


def test_the_deadline_reaches_the_handler_and_expiry_cancels_it(router: Router) -> None:
    async def scenario() -> None:
        servicer = HookedGreeter("py")
        async with python_instance([router], servicer, "py"), client(router) as stub:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.SayHello(pb.HelloRequest(name="sleep"), timeout=1.0)
            assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 5
            # grpcio rounds the grpc-timeout it sends up to a compact value
            # (1 s can go out as a little over 1000 ms), so the handler may
            # see slightly more than the client's own 1.0 s.
            assert servicer.time_remaining is not None and 0.3 < servicer.time_remaining <= 1.05
            await asyncio.wait_for(servicer.cancelled.wait(), TIMEOUT)
            await asyncio.wait_for(servicer.done_callbacks.wait(), TIMEOUT)

    run(scenario())


def test_a_client_cancel_cancels_the_async_handler(router: Router) -> None:
    async def scenario() -> None:
        servicer = HookedGreeter("py")
        async with python_instance([router], servicer, "py"), client(router) as stub:
            call = stub.StreamGreetings(pb.StreamRequest(name="slow"), timeout=TIMEOUT)
            first = await call.read()
            assert first.message == "first"
            await asyncio.wait_for(servicer.started.wait(), TIMEOUT)
            call.cancel()
            await asyncio.wait_for(servicer.cancelled.wait(), TIMEOUT)

    run(scenario())


def test_a_client_cancel_is_visible_to_a_sync_handler(router: Router) -> None:
    async def scenario() -> None:
        servicer = SyncGreeter("py")
        async with python_instance([router], servicer, "py"), client(router) as stub:
            call = stub.SayHello(pb.HelloRequest(name="sleep"), timeout=TIMEOUT)
            assert await asyncio.to_thread(servicer.started.wait, TIMEOUT)
            # grpc-timeout "may round up arbitrarily" (gRPC core encodes a 10-100 s
            # timeout in 100 ms units, rounded up), so the deadline the client
            # announces, and a plain grpc.aio server sees, can be up to 100 ms
            # past its own: CI saw 20.098 s here.
            assert servicer.time_remaining is not None
            assert 0 < servicer.time_remaining <= TIMEOUT + GRPC_TIMEOUT_ROUNDING
            call.cancel()
            assert await asyncio.to_thread(servicer.callback_ran.wait, TIMEOUT)
            assert await asyncio.to_thread(servicer.saw_inactive.wait, TIMEOUT)

    run(scenario())


def test_a_16_mib_message_goes_through_both_ways_in_chunks(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            payload = bytes(range(256)) * (16 * MiB // 256)
            reply = await stub.SayHello(pb.HelloRequest(name="big", payload=payload), timeout=60)
            assert len(reply.payload) == 16 * MiB
            assert reply.payload == payload

    run(scenario())


def test_a_stalled_stream_does_not_block_other_calls(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            # 200 x 64 KiB greetings (12.5 MiB) that the client does not read
            # yet: the call's credit window fills and its sender waits, alone.
            stalled = stub.StreamGreetings(pb.StreamRequest(name="flood", count=200, payload_size=64 * 1024), timeout=60)
            first = await stalled.read()
            assert first.message == "Hello #0, flood!"
            for i in range(20):
                reply = await stub.SayHello(pb.HelloRequest(name=f"n{i}"), timeout=5)
                assert reply.message == f"Hello, n{i}!"
            # Reading again returns credit; the stream resumes and completes,
            # never beyond the router's window (it would fail the call).
            rest = 0
            while (reply := await stalled.read()) is not grpc.aio.EOF:
                assert reply.message == f"Hello #{rest + 1}, flood!" and len(reply.payload) == 64 * 1024
                rest += 1
            assert rest == 199
            assert await stalled.code() == grpc.StatusCode.OK

    run(scenario())


def test_large_messages_in_a_bidi_stream_are_chunked_both_ways(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            chat = stub.Chat(timeout=60)
            for seq in range(4):
                text = chr(ord("a") + seq) * (3 * MiB)
                await chat.write(pb.ChatMessage(text=text, seq=seq))
                answer = await chat.read()
                assert answer.seq == seq and answer.text == f"{text} (from py)"
            await chat.done_writing()
            assert await chat.read() is grpc.aio.EOF

    run(scenario())


def test_methods_the_servicer_leaves_to_the_generated_base_answer_unimplemented(router: Router) -> None:
    from google.protobuf import empty_pb2
    from myservice.v1 import myservice_pb2_grpc as pb_grpc

    class Partial(pb_grpc.GreeterServicer):
        """Implements nothing: grpcio's generated base class answers."""

    async def scenario() -> None:
        async with python_instance([router], Partial(), "py"), client(router) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.WhoAmI(empty_pb2.Empty(), timeout=TIMEOUT)
            assert (failure.value.code(), failure.value.details()) == (
                grpc.StatusCode.UNIMPLEMENTED,
                "Method not implemented!",
            )

    run(scenario())
