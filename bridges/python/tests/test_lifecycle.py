"""A Python instance's registration over time: drain with no failed call, a
mixed fleet of Rust and Python instances, serving state, several routers,
reconnect, refusal, heartbeats and the concurrency limit."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Dict, List

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from harness import TIMEOUT, HookedGreeter, admin_instances, client, python_instance, run, who_answers
from myservice.v1 import myservice_pb2 as pb
from myservice.v1 import myservice_pb2_grpc as pb_grpc
from myservice.v1 import myservice_router_bridge

from grpc_router_bridge import Bridge, BridgeOptions


def test_a_draining_instance_finishes_its_calls_and_no_call_fails(fleet) -> None:
    router = fleet.router(strategy="round-robin")

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py-a"), "py-a") as a, python_instance(
            [router], HookedGreeter("py-b"), "py-b"
        ), client(router) as stub:
            answered: Dict[str, int] = {}
            failures: List[str] = []
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    try:
                        reply = await stub.SayHello(pb.HelloRequest(name="load"), timeout=TIMEOUT)
                        answered[reply.instance_id] = answered.get(reply.instance_id, 0) + 1
                    except grpc.aio.AioRpcError as e:
                        failures.append(f"{e.code()}: {e.details()}")

            # A stream on the draining instance, still in flight when it drains.
            stream = stub.StreamGreetings(
                pb.StreamRequest(name="drain", count=50), metadata=(("x-router-instance", "py-a"),), timeout=TIMEOUT
            )
            first = await stream.read()
            assert first.instance_id == "py-a"
            workers = [asyncio.ensure_future(load()) for _ in range(4)]
            while answered.get("py-a", 0) < 20:
                await asyncio.sleep(0)  # let the load run until py-a served some
                if failures:
                    break
            drained = asyncio.ensure_future(a.shutdown())
            rest = []
            while (reply := await stream.read()) is not grpc.aio.EOF:
                rest.append(reply.message)
            assert len(rest) == 49 and rest[-1] == "Hello #49, drain!"
            await asyncio.wait_for(drained, TIMEOUT)
            before = answered.get("py-b", 0)
            while answered.get("py-b", 0) < before + 20 and not failures:
                await asyncio.sleep(0)
            stop.set()
            await asyncio.gather(*workers)
            assert failures == []
            assert answered["py-a"] >= 20 and answered["py-b"] >= 20

    run(scenario())


def test_calls_spread_over_rust_and_python_instances_of_one_service(fleet) -> None:
    router = fleet.router(strategy="round-robin")
    rust = fleet.rust_instance(router, "rust-a")
    assert rust.first_line == "registered as rust-a"

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py-a"), "py-a", labels={"lang": "python"}), client(router) as stub:
            view = await admin_instances(router)
            assert sorted(view["instances"]) == ["py-a", "rust-a"]
            assert dict(view["instances"]["py-a"].labels) == {"lang": "python"}
            counts = await who_answers(stub, 40)
            assert counts == {"rust-a": 20, "py-a": 20}
            # The same answers from both stacks, for every kind.
            served = set()
            for _ in range(4):
                reply = await stub.SayHello(pb.HelloRequest(name="Ada"), timeout=TIMEOUT)
                assert reply.message == "Hello, Ada!"
                served.add(reply.instance_id)
                greetings = [r async for r in stub.StreamGreetings(pb.StreamRequest(name="Bo", count=3), timeout=TIMEOUT)]
                assert [g.message for g in greetings] == ["Hello #0, Bo!", "Hello #1, Bo!", "Hello #2, Bo!"]
                served.add(greetings[0].instance_id)
            assert served == {"rust-a", "py-a"}
            for instance in ("rust-a", "py-a"):
                with_failure = stub.SayHello(
                    pb.HelloRequest(name="fail:7"), metadata=(("x-router-instance", instance),), timeout=TIMEOUT
                )
                try:
                    await with_failure
                    raise AssertionError("fail:7 succeeded")
                except grpc.aio.AioRpcError as e:
                    assert (e.code(), e.details()) == (grpc.StatusCode.PERMISSION_DENIED, "requested failure")

    run(scenario())


def test_a_not_serving_instance_gets_no_new_calls_until_it_serves_again(fleet) -> None:
    router = fleet.router(strategy="round-robin")

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py-a"), "py-a") as a, python_instance(
            [router], HookedGreeter("py-b"), "py-b"
        ), client(router) as stub:
            a.set_serving(False)
            deadline = time.monotonic() + TIMEOUT
            # The heartbeat reporting NOT_SERVING goes out at once; wait
            # until the router has applied it, then no call may reach py-a.
            while (await admin_instances(router))["instances"]["py-a"].serving:
                assert time.monotonic() < deadline, "the router never saw py-a not serving"
            assert await who_answers(stub, 20) == {"py-b": 20}
            a.set_serving(True)
            while not (await admin_instances(router))["instances"]["py-a"].serving:
                assert time.monotonic() < deadline, "the router never saw py-a serving again"
            assert await who_answers(stub, 20) == {"py-a": 10, "py-b": 10}

    run(scenario())


def test_one_instance_registers_with_several_routers(fleet) -> None:
    first, second = fleet.router(), fleet.router()

    async def scenario() -> None:
        async with python_instance([first, second], HookedGreeter("py"), "py") as bridge:
            assert bridge.state.registered == 2
            for router in (first, second):
                async with client(router) as stub:
                    assert await who_answers(stub, 3) == {"py": 3}

    run(scenario())


def test_the_bridge_reconnects_when_its_router_restarts(fleet) -> None:
    router = fleet.router()

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py") as bridge:
            router.process.stop()
            state = await bridge.wait_for(lambda s: s.registered == 0, TIMEOUT)
            assert state.last_error is None or state.last_error
            fleet.router(listen=router)
            await bridge.registered(timeout=TIMEOUT)
            async with client(router) as stub:
                assert await who_answers(stub, 2) == {"py": 2}

    run(scenario())


def test_a_router_refusing_the_registration_is_reported(router) -> None:
    async def scenario() -> None:
        wrong = dataclasses.replace(myservice_router_bridge.GREETER, name="other.v1.Service")
        bridge = Bridge(
            wrong,
            pb_grpc.add_GreeterServicer_to_server,
            HookedGreeter("py"),
            BridgeOptions([f"http://{router.registrations}"], instance_id="py"),
        )
        await bridge.start()
        try:
            state = await bridge.wait_for(lambda s: s.last_error is not None, TIMEOUT)
            assert state.registered == 0
            assert "refused" in state.last_error and "other.v1.Service" in state.last_error
        finally:
            await bridge.abort()

    run(scenario())


def test_heartbeats_keep_a_registration_alive_past_the_routers_timeout(fleet) -> None:
    router = fleet.router(heartbeat_interval_ms=100, heartbeat_timeout_ms=400)

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py") as bridge, client(router) as stub:
            # Calls over several heartbeat timeouts: pings are answered with
            # pongs and heartbeats go out, so the router never drops py.
            until = time.monotonic() + 1.5
            calls = 0
            while time.monotonic() < until:
                assert await who_answers(stub, 1) == {"py": 1}
                calls += 1
            assert bridge.state.registered == 1 and calls > 0

    run(scenario())


def test_the_concurrency_limit_holds_across_routers_and_refused_calls_go_elsewhere(fleet) -> None:
    first, second = fleet.router(), fleet.router()
    fleet.rust_instance(second, "rust-a")

    async def scenario() -> None:
        servicer = HookedGreeter("py")
        async with python_instance([first, second], servicer, "py", max_concurrent_calls=1), client(first) as one, client(
            second
        ) as two:
            held = asyncio.ensure_future(one.SayHello(pb.HelloRequest(name="sleep"), timeout=TIMEOUT))
            await asyncio.wait_for(servicer.started.wait(), TIMEOUT)
            # The second router does not count the first one's call: the
            # bridge refuses what it sends py (not started) and it retries.
            counts = await who_answers(two, 20)
            assert counts == {"rust-a": 20}
            # Some of those picked py first and were refused without running.
            assert (await admin_instances(second))["service"].calls_retried > 0
            assert (await admin_instances(first))["instances"]["py"].outstanding_calls == 1
            held.cancel()

    run(scenario())


def test_a_silent_router_is_left_and_registered_with_again_when_it_answers(fleet) -> None:
    import signal

    router = fleet.router(heartbeat_interval_ms=100, heartbeat_timeout_ms=500)
    process = router.process.proc

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py"), "py", connect_timeout=1.0) as bridge:
            process.send_signal(signal.SIGSTOP)
            try:
                state = await bridge.wait_for(lambda s: s.registered == 0 and s.last_error is not None, TIMEOUT)
                assert "silent" in state.last_error
            finally:
                process.send_signal(signal.SIGCONT)
            await bridge.registered(timeout=TIMEOUT)
            async with client(router) as stub:
                assert await who_answers(stub, 2) == {"py": 2}

    run(scenario())


def test_a_router_fleet_behind_one_name_is_followed_as_dns_changes(fleet) -> None:
    first, second = fleet.router(), fleet.router()

    def address(router) -> tuple:
        host, port = router.registrations.rsplit(":", 1)
        return (host, int(port))

    answers = {"addresses": [address(first), address(second)], "fail": False}
    asked = []
    failures = []
    failed_thrice = asyncio.Event()

    async def resolver(host: str, port: int) -> list:
        asked.append((host, port))
        if answers["fail"]:
            failures.append(host)
            if len(failures) == 3:
                failed_thrice.set()
            raise OSError("name server down")
        return list(answers["addresses"])

    async def scenario() -> None:
        async with python_instance(
            ["routers.test:50051"], HookedGreeter("py"), "py", resolve_interval=0.05, resolver=resolver
        ) as bridge:
            await bridge.registered(2, timeout=TIMEOUT)
            assert asked[0] == ("routers.test", 50051)
            # A resolver failure keeps the routers that work.
            answers["fail"] = True
            await asyncio.wait_for(failed_thrice.wait(), TIMEOUT)
            assert bridge.state.registered == 2
            answers["fail"] = False
            # The second router leaves DNS: its registration drains and closes.
            answers["addresses"] = [address(first)]
            await bridge.wait_for(lambda s: s.registered == 1, TIMEOUT)
            assert (await admin_instances(second))["instances"] == {}
            async with client(first) as stub:
                assert await who_answers(stub, 2) == {"py": 2}

    run(scenario())


def test_a_replaced_bridge_reports_it_and_waits_its_longest_backoff(router: Any) -> None:
    async def scenario() -> None:
        from grpc_router_bridge import wire
        from harness import registrations

        options = BridgeOptions([f"http://{registrations(router)}"], instance_id="dup", reconnect_initial=0.001, reconnect_max=0.4)
        bridge = Bridge(myservice_router_bridge.GREETER, pb_grpc.add_GreeterServicer_to_server, HookedGreeter("py"), options)
        await bridge.start()
        try:
            await bridge.wait_for(lambda s: s.registered == 1, TIMEOUT)
            # A registration claiming the bridge's own process replaces it at
            # once: its stream ends ABORTED ("re-registered").
            async with grpc.aio.insecure_channel(registrations(router)) as channel:
                register = channel.stream_stream(myservice_router_bridge.GREETER.register_path)
                stream = register()
                hello = wire.Hello(instance_id="dup", service=myservice_router_bridge.GREETER.name, incarnation=bridge.incarnation)
                await stream.write(hello.encode())
                assert isinstance(wire.decode_router_frame(await stream.read()), wire.Welcome)
                state = await bridge.wait_for(lambda s: s.replaced == 1, TIMEOUT)
                since = time.monotonic()
                assert state.registered == 0
                assert state.last_error is not None and "replaced" in state.last_error and "re-registered" in state.last_error
                # It tries again only after its longest backoff (at least half
                # of it, with jitter), not at once.
                state = await bridge.wait_for(lambda s: s.registered == 1, TIMEOUT)
                assert time.monotonic() - since >= 0.2
                assert state.replaced == 0
                stream.cancel()
        finally:
            await bridge.abort()

    run(scenario())
