"""All four method kinds through the Rust router to a Python instance, with
an async (grpc.aio) servicer and with a sync (thread-pool) servicer."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from conftest import Router
from harness import TIMEOUT, SyncGreeter, HookedGreeter, client, python_instance, run
from myservice.v1 import myservice_pb2 as pb


async def _all_four_kinds(router: Router, servicer: Any, instance_id: str) -> None:
    async with python_instance([router], servicer, instance_id), client(router) as stub:
        reply = await stub.SayHello(pb.HelloRequest(name="Ada"), timeout=TIMEOUT)
        assert (reply.message, reply.instance_id) == ("Hello, Ada!", instance_id)

        greetings = [r.message async for r in stub.StreamGreetings(pb.StreamRequest(name="Bo", count=5), timeout=TIMEOUT)]
        assert greetings == [f"Hello #{i}, Bo!" for i in range(5)]

        async def numbers() -> Any:
            for value in (1, 2, 3, 4):
                yield pb.Number(value=value)

        total = await stub.Sum(numbers(), timeout=TIMEOUT)
        assert (total.total, total.count, total.instance_id) == (10, 4, instance_id)

        # Bidi as ping-pong: each answer arrives before the next message is sent.
        chat = stub.Chat(timeout=TIMEOUT)
        for seq in range(3):
            await chat.write(pb.ChatMessage(text=f"m{seq}", seq=seq))
            answer = await chat.read()
            assert (answer.text, answer.seq) == (f"m{seq} (from {instance_id})", seq)
        await chat.done_writing()
        assert await chat.read() is grpc_eof()

        info = await stub.WhoAmI(empty_pb2.Empty(), timeout=TIMEOUT)
        assert info.instance_id == instance_id


def grpc_eof() -> Any:
    import grpc.aio

    return grpc.aio.EOF


def test_an_async_servicer_answers_every_method_kind_through_the_router(router: Router) -> None:
    run(_all_four_kinds(router, HookedGreeter("py-async"), "py-async"))


def test_a_sync_servicer_answers_every_method_kind_through_the_router(router: Router) -> None:
    run(_all_four_kinds(router, SyncGreeter("py-sync"), "py-sync"))


def test_empty_streams_end_with_ok(router: Router) -> None:
    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            replies = [r async for r in stub.StreamGreetings(pb.StreamRequest(name="none", count=0), timeout=TIMEOUT)]
            assert replies == []

            async def nothing() -> Any:
                return
                yield  # an async generator without items

            total = await stub.Sum(nothing(), timeout=TIMEOUT)
            assert (total.total, total.count) == (0, 0)

    run(scenario())
