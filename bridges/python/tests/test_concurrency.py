"""Concurrency limits (``max_concurrent_calls``) in front of a Python
instance, on the compiled router and the daemon: past the limit a call fails
RESOURCE_EXHAUSTED at once naming the setting, or, with a queue, waits for the
held call to end and then runs on the instance."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import grpc
import grpc.aio
import pytest
from harness import TIMEOUT, HookedGreeter, admin_instances, client, python_instance, run
from myservice.v1 import myservice_pb2 as pb


class HeldSum:
    """A Sum call whose request stream stays open until :meth:`finish`: a
    call in flight on the instance until then."""

    def __init__(self, stub: Any) -> None:
        self.release = asyncio.Event()

        async def numbers() -> AsyncIterator[Any]:
            yield pb.Number(value=1)
            await self.release.wait()

        self.call = stub.Sum(numbers(), timeout=TIMEOUT)

    async def finish(self) -> Any:
        self.release.set()
        return await self.call


async def service_limit(router: Any) -> Any:
    (limit,) = (await admin_instances(router))["service"].concurrency_limits
    return limit


async def wait_for(router: Any, what: str, check: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check(await service_limit(router)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)  # polling a remote state, not synchronising


def test_a_call_over_the_limit_fails_at_once_naming_it(fleet: Any) -> None:
    router = fleet.router(max_concurrent_calls=1)

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            held = HeldSum(stub)
            await wait_for(router, "the held call's slot", lambda l: l.in_flight == 1)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SayHello(pb.HelloRequest(name="x"), timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
            assert "max_concurrent_calls" in refused.value.details(), refused.value.details()
            assert time.monotonic() - started < 2.0, "refused at once"
            reply = await held.finish()
            assert (reply.total, reply.instance_id) == (1, "py")
            await wait_for(router, "the slot to free", lambda l: l.in_flight == 0)
            assert (await stub.SayHello(pb.HelloRequest(name="x"), timeout=TIMEOUT)).instance_id == "py"

    run(scenario())


def test_a_queued_call_runs_on_the_instance_once_the_held_call_ends(fleet: Any) -> None:
    router = fleet.router(max_concurrent_calls=1, concurrency_queue_ms=int(TIMEOUT * 1000))

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py"), client(router) as stub:
            held = HeldSum(stub)
            await wait_for(router, "the held call's slot", lambda l: l.in_flight == 1)
            queued = asyncio.ensure_future(stub.SayHello(pb.HelloRequest(name="queued"), timeout=TIMEOUT))
            await wait_for(router, "the second call to wait", lambda l: l.waiting == 1)
            assert not queued.done(), "the queued call ran beside the held one"
            await held.finish()
            reply = await asyncio.wait_for(queued, TIMEOUT)
            assert (reply.message, reply.instance_id) == ("Hello, queued!", "py")
            limit = await service_limit(router)
            assert (limit.waiting, limit.refused) == (0, 0), limit

    run(scenario())
