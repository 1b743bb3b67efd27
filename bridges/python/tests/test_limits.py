"""Message size limits through the router to a Python instance, in every
method kind: a request over the router's limit or over the instance's fails
at once with RESOURCE_EXHAUSTED and a message naming the limit and the setting
that raises it, even while the client is still streaming."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import grpc
import grpc.aio
import pytest
from harness import MiB, TIMEOUT, HookedGreeter, clients, python_instance, run

#: Each Greeter method by the grpc.aio call shape it has.
METHODS = {
    "SayHello": "unary_unary",
    "StreamGreetings": "unary_stream",
    "Sum": "stream_unary",
    "Chat": "stream_stream",
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def message_of(size: int) -> bytes:
    """A valid message of every Greeter request type, ``size`` bytes long: one
    length-delimited field 15, which none of them declares."""
    length = size - 1
    while 1 + len(_varint(length)) + length != size:
        length -= 1
    return bytes([(15 << 3) | 2]) + _varint(length) + b"\xab" * length


@contextlib.asynccontextmanager
async def raw_channel(router: Any) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to ``router``'s clients' address that sends and takes
    messages of up to 32 MiB as bytes."""
    channel = grpc.aio.insecure_channel(
        clients(router),
        options=[("grpc.max_receive_message_length", 32 * MiB), ("grpc.max_send_message_length", 32 * MiB)],
    )
    try:
        yield channel
    finally:
        await channel.close()


async def failure_of(channel: grpc.aio.Channel, method: str, message: bytes) -> grpc.aio.AioRpcError:
    """Calls ``method`` with ``message`` first and, for a client stream, the
    request stream left open; the error the call ends with."""
    shape = METHODS[method]
    still_sending = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        yield message
        await still_sending.wait()

    multicallable: Any = getattr(channel, shape)(f"/myservice.v1.Greeter/{method}")
    call = multicallable(message if shape.startswith("unary") else requests(), timeout=TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        if shape.endswith("stream"):
            async for _ in call:
                pass
        else:
            await call
    return failure.value


def test_a_request_over_the_bridge_limit_fails_at_once_with_resource_exhausted_in_every_method_kind(router: Any) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py", max_message_size=1 * MiB), raw_channel(router) as channel:
            for method in METHODS:
                error = await failure_of(channel, method, message_of(2 * MiB))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (method, error.code(), error.details())
                for word in ("`py`", "1048576", "BridgeOptions.max_message_size"):
                    assert word in error.details(), (method, word, error.details())

    run(scenario())


def test_a_request_over_the_routers_limit_fails_at_once_with_resource_exhausted_in_every_method_kind(fleet: Any) -> None:
    router = fleet.router(max_message_size=1 * MiB)

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), raw_channel(router) as channel:
            message = message_of(2 * MiB)
            for method in METHODS:
                error = await failure_of(channel, method, message)
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (method, error.code(), error.details())
                for word in (str(len(message)), "1048576", "max_message_size"):
                    assert word in error.details(), (method, word, error.details())

    run(scenario())
