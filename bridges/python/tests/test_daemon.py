"""Python instances and the ``grpc-router`` daemon, which knows no service in
advance and learns each from its first registration's ``Hello.description``:
a Python-only service, reflection built from what a Python instance sent, a
daemon restart with only Python instances, Rust and Python instances of one
service in either order, and the errors that tell a user what to fix."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from typing import Any, AsyncIterator, Dict, List

import grpc
import grpc.aio
import pytest
from conftest import Fleet, Router
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2
from harness import TIMEOUT, HookedGreeter, admin_instances, client, python_instance, run, who_answers
from inventory.v1 import inventory_pb2 as inv
from inventory.v1 import inventory_pb2_grpc as inv_grpc
from inventory.v1 import inventory_router_bridge
from myservice.v1 import myservice_pb2 as pb
from myservice.v1 import myservice_pb2_grpc as pb_grpc
from myservice.v1 import myservice_router_bridge

from grpc_router_bridge import Bridge, BridgeOptions, BridgeState, serve


class PyInventory(inv_grpc.InventoryServicer):
    """``inventory.v1.Inventory`` in Python: a service no Rust code in the
    daemon knows."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    async def GetItem(self, request: Any, context: Any) -> Any:
        return inv.Item(sku=request.sku, name=f"item {request.sku}", quantity=7, served_by=self.instance_id)

    async def ListItems(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for i in range(request.limit):
            yield inv.Item(sku=f"sku-{i}", served_by=self.instance_id)

    async def AdjustStock(self, request_iterator: Any, context: Any) -> Any:
        count = total = 0
        async for adjustment in request_iterator:
            count += 1
            total += adjustment.delta
        return inv.StockSummary(adjustments=count, total_delta=total, served_by=self.instance_id)


def inventory_instance(router: Router, instance_id: str, **options: Any) -> Any:
    return python_instance(
        [router],
        PyInventory(instance_id),
        instance_id,
        service=inventory_router_bridge.INVENTORY,
        add_servicer=inv_grpc.add_InventoryServicer_to_server,
        **options,
    )


async def get_item(router: Router, sku: str = "a-1") -> Any:
    async with grpc.aio.insecure_channel(router.clients) as channel:
        return await inv_grpc.InventoryStub(channel).GetItem(inv.GetItemRequest(sku=sku), timeout=TIMEOUT)


def reflected_files(router: Router, symbol: str) -> List[bytes]:
    """The encoded ``FileDescriptorProto``s the router's reflection answers
    for ``symbol``, as sent: a raw ``grpc.reflection.v1`` call (its messages
    are the v1alpha ones grpcio-reflection ships, field for field)."""
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(router.clients) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        (response,) = list(info(iter([request]), timeout=TIMEOUT))
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return list(response.file_descriptor_response.file_descriptor_proto)


def test_a_python_only_service_is_learnt_by_the_daemon_and_serves_every_kind(daemon_fleet: Fleet) -> None:
    router = daemon_fleet.router()

    async def scenario() -> None:
        async with inventory_instance(router, "py-inventory"):
            async with grpc.aio.insecure_channel(router.clients) as channel:
                stub = inv_grpc.InventoryStub(channel)
                item = await stub.GetItem(inv.GetItemRequest(sku="a-1"), timeout=TIMEOUT)
                assert (item.sku, item.quantity, item.served_by) == ("a-1", 7, "py-inventory")
                items = [i.sku async for i in stub.ListItems(inv.ListItemsRequest(limit=3), timeout=TIMEOUT)]
                assert items == ["sku-0", "sku-1", "sku-2"]

                async def adjustments() -> AsyncIterator[Any]:
                    for delta in (5, -2, 4):
                        yield inv.StockAdjustment(sku="a-1", delta=delta)

                summary = await stub.AdjustStock(adjustments(), timeout=TIMEOUT)
                assert (summary.adjustments, summary.total_delta) == (3, 7)
            view = await admin_instances(router, "inventory.v1.Inventory")
            assert list(view["instances"]) == ["py-inventory"]
            # The strategy the proto asks for, from the description.
            assert view["service"].strategy == "STRATEGY_ROUND_ROBIN"

    run(scenario())


def test_reflection_through_the_daemon_lists_and_describes_a_python_only_service(daemon_fleet: Fleet) -> None:
    router = daemon_fleet.router()

    async def scenario() -> None:
        async with inventory_instance(router, "py-inventory"):

            def reflect() -> Dict[str, Any]:
                from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
                    ProtoReflectionDescriptorDatabase,
                )

                with grpc.insecure_channel(router.clients) as channel:
                    database = ProtoReflectionDescriptorDatabase(channel)
                    services = list(database.get_services())
                    pool = descriptor_pool.DescriptorPool(database)
                    service = pool.FindServiceByName("inventory.v1.Inventory")
                    item = pool.FindMessageTypeByName("inventory.v1.Item")
                    return {
                        "services": services,
                        "methods": {
                            m.name: (m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)
                            for m in service.methods
                        },
                        # A field of an imported file's type: the set carries the imports.
                        "updated_at": item.fields_by_name["updated_at"].message_type.full_name,
                    }

            found = await asyncio.to_thread(reflect)
            assert "inventory.v1.Inventory" in found["services"]
            assert found["methods"] == {
                "GetItem": ("inventory.v1.GetItemRequest", "inventory.v1.Item", False, False),
                "ListItems": ("inventory.v1.ListItemsRequest", "inventory.v1.Item", False, True),
                "AdjustStock": ("inventory.v1.StockAdjustment", "inventory.v1.StockSummary", True, False),
            }
            assert found["updated_at"] == "google.protobuf.Timestamp"

    run(scenario())


def test_reflection_serves_the_same_descriptors_whether_a_python_or_a_rust_instance_defined_the_service(
    daemon_fleet: Fleet,
) -> None:
    router = daemon_fleet.router()

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py-a"), "py-a") as bridge:
            from_python = await asyncio.to_thread(reflected_files, router, "myservice.v1.Greeter")
            await bridge.shutdown()
        # The service had no instance left: the Rust instance defines it anew.
        deadline = time.monotonic() + TIMEOUT
        while (await admin_instances(router))["instances"]:
            assert time.monotonic() < deadline, "py-a never left"
        rust = daemon_fleet.rust_instance(router, "rust-a")
        assert rust.first_line == "registered as rust-a"
        from_rust = await asyncio.to_thread(reflected_files, router, "myservice.v1.Greeter")
        def by_name(files: List[bytes]) -> Dict[str, bytes]:
            return {descriptor_pb2.FileDescriptorProto.FromString(f).name: f for f in files}

        python_files, rust_files = by_name(from_python), by_name(from_rust)
        assert "myservice/v1/myservice.proto" in python_files
        assert python_files.keys() == rust_files.keys()
        # The service's own files byte for byte; google/protobuf/*.proto are
        # the ones bundled with whichever compiler ran (protox for the Rust
        # build, protoc or buf for the plugin) and differ between versions.
        ours = [name for name in python_files if not name.startswith("google/protobuf/")]
        assert ours and all(python_files[n] == rust_files[n] for n in ours)

    run(scenario())


@pytest.mark.parametrize("first", ["python", "rust"])
def test_rust_and_python_instances_of_one_service_share_the_daemon_in_either_order(
    daemon_fleet: Fleet, first: str
) -> None:
    router = daemon_fleet.router(strategy="round-robin")

    async def scenario() -> None:
        if first == "rust":
            daemon_fleet.rust_instance(router, "rust-a")
        async with python_instance([router], HookedGreeter("py-a"), "py-a"), client(router) as stub:
            if first == "python":
                daemon_fleet.rust_instance(router, "rust-a")
            assert sorted((await admin_instances(router))["instances"]) == ["py-a", "rust-a"]
            assert await who_answers(stub, 20) == {"py-a": 10, "rust-a": 10}
            for instance in ("py-a", "rust-a"):
                greetings = stub.StreamGreetings(
                    pb.StreamRequest(name="Bo", count=2), metadata=(("x-router-instance", instance),), timeout=TIMEOUT
                )
                assert [g.instance_id async for g in greetings] == [instance, instance]

    run(scenario())


def test_a_python_instance_incompatible_with_the_registered_rust_one_is_refused_naming_the_method(
    daemon_fleet: Fleet,
) -> None:
    router = daemon_fleet.router()
    daemon_fleet.rust_instance(router, "rust-a")
    greeter = myservice_router_bridge.GREETER
    moved = tuple(dataclasses.replace(m, tag=99) if m.name == "WhoAmI" else m for m in greeter.methods)
    incompatible = dataclasses.replace(greeter, methods=moved)

    async def scenario() -> None:
        bridge = Bridge(
            incompatible,
            pb_grpc.add_GreeterServicer_to_server,
            HookedGreeter("py-a"),
            BridgeOptions([f"http://{router.registrations}"], instance_id="py-a"),
        )
        await bridge.start()
        try:
            state = await bridge.wait_for(lambda s: s.last_error is not None, TIMEOUT)
            assert state.registered == 0
            assert "method `WhoAmI` has tag 99 here but 14 in the registered instances" in state.last_error
        finally:
            await bridge.abort()

    run(scenario())


def test_a_daemon_restart_with_only_python_instances_is_serving_again_within_two_seconds(
    daemon_fleet: Fleet,
) -> None:
    router = daemon_fleet.router()

    async def serving(call: Any) -> None:
        # A new channel each try: a channel's own reconnect backoff (1 s and
        # more) must not count against the bridges.
        while True:
            try:
                await call()
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.01)

    async def who_am_i(router: Router) -> None:
        async with grpc.aio.insecure_channel(router.clients) as channel:
            await pb_grpc.GreeterStub(channel).WhoAmI(empty_pb2.Empty(), timeout=1)

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py-a"), "py-a") as greeter, inventory_instance(
            router, "py-inventory"
        ) as inventory, client(router) as stub:
            assert await who_answers(stub, 1) == {"py-a": 1}
            router.process.stop("KILL")
            await greeter.wait_for(lambda s: s.registered == 0, TIMEOUT)
            await inventory.wait_for(lambda s: s.registered == 0, TIMEOUT)
            restarted = daemon_fleet.router(listen=router)
            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(
                    serving(lambda: who_am_i(restarted)),
                    serving(lambda: get_item(restarted)),
                ),
                TIMEOUT,
            )
            took = time.monotonic() - started
            assert took < 2.0, f"the Python instances served again {took:.2f}s after the restart"

    run(scenario())


def test_a_call_waits_for_a_python_instance_when_the_last_one_left(daemon_fleet: Fleet) -> None:
    """Scale to zero with a Python instance: with ``wait_for_instance``, a
    call made while the service has no instance waits (the admin service
    shows it) and the next Python instance to register answers it."""
    router = daemon_fleet.router(wait_for_instance="30s")

    async def scenario() -> None:
        async with python_instance([router], HookedGreeter("py-first"), "py-first") as first:
            await first.shutdown()
        async with client(router) as stub:
            call = asyncio.ensure_future(stub.SayHello(pb.HelloRequest(name="cold"), timeout=TIMEOUT))
            deadline = time.monotonic() + TIMEOUT
            while (await admin_instances(router))["service"].waiting_calls != 1:
                assert time.monotonic() < deadline, "the call never waited"
                await asyncio.sleep(0.01)
            assert not call.done()
            async with python_instance([router], HookedGreeter("py-late"), "py-late"):
                reply = await call
            assert reply.instance_id == "py-late"

    run(scenario())


def test_an_undescribed_python_registration_is_told_to_upgrade_the_python_bridge(daemon_fleet: Fleet) -> None:
    router = daemon_fleet.router()

    async def scenario() -> None:
        bridge = Bridge(
            myservice_router_bridge.GREETER,
            pb_grpc.add_GreeterServicer_to_server,
            HookedGreeter("py-old"),
            BridgeOptions([f"http://{router.registrations}"], instance_id="py-old"),
        )
        bridge.description = b""  # as a bridge from before descriptions did
        await bridge.start()
        try:
            state = await bridge.wait_for(lambda s: s.last_error is not None, TIMEOUT)
            assert "must describe the service" in state.last_error
            assert "Python bridge" in state.last_error and "grpc-router-bridge" in state.last_error
            assert "rebuild" not in state.last_error
        finally:
            await bridge.abort()

    run(scenario())


def test_a_bridge_pointed_at_the_clients_port_says_this_address_serves_clients(daemon_fleet: Fleet) -> None:
    router = daemon_fleet.router()

    async def scenario() -> None:
        bridge = Bridge(
            myservice_router_bridge.GREETER,
            pb_grpc.add_GreeterServicer_to_server,
            HookedGreeter("py-a"),
            BridgeOptions([f"http://{router.clients}"], instance_id="py-a"),
        )
        await bridge.start()
        try:
            state = await bridge.wait_for(lambda s: s.last_error is not None, TIMEOUT)
            assert "this address serves clients, not registrations" in state.last_error, state.last_error
            assert "/myservice.v1.GreeterRouter/Register" in state.last_error
        finally:
            await bridge.abort()

    run(scenario())


def test_a_refused_connection_is_reported_as_refused_not_as_a_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.

    async def scenario() -> None:
        bridge = Bridge(
            myservice_router_bridge.GREETER,
            pb_grpc.add_GreeterServicer_to_server,
            HookedGreeter("py-a"),
            BridgeOptions([f"http://127.0.0.1:{port}"], instance_id="py-a", connect_timeout=TIMEOUT),
        )
        await bridge.start()
        try:
            state = await bridge.wait_for(lambda s: s.last_error is not None, TIMEOUT)
            assert state.last_error == f"connection refused by 127.0.0.1:{port}: is the router listening there?"
        finally:
            await bridge.abort()

    run(scenario())


def test_serve_reports_a_refusal_through_its_state_callback(daemon_fleet: Fleet) -> None:
    import os
    import signal

    router = daemon_fleet.router(register_token="s3cret")
    states: List[BridgeState] = []

    def on_state(state: BridgeState) -> None:
        states.append(state)
        if state.last_error is not None:
            os.kill(os.getpid(), signal.SIGTERM)  # serve() drains and returns

    async def scenario() -> None:
        await serve(
            myservice_router_bridge.GREETER,
            pb_grpc.add_GreeterServicer_to_server,
            HookedGreeter("py-a"),
            BridgeOptions(
                [f"http://{router.registrations}"],
                instance_id="py-a",
                register_metadata=[("authorization", "Bearer wrong")],
            ),
            on_state=on_state,
        )

    run(scenario())
    refused = [s for s in states if s.last_error]
    assert refused and "router refused registration" in refused[0].last_error
    assert refused[0].registered == 0
