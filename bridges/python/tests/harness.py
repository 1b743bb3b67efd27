"""Helpers for the end-to-end tests: a Python instance in the test's event
loop, a grpc.aio client of the router, and the servicers the tests use."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Sequence, Union

import grpc
import grpc.aio
from google.protobuf import any_pb2, empty_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from myservice.v1 import myservice_pb2 as pb
from myservice.v1 import myservice_pb2_grpc as pb_grpc
from myservice.v1 import myservice_router_bridge

import greeter
from grpc_router_bridge import Bridge, BridgeOptions

#: Bounds every wait in the tests.
TIMEOUT = 20.0

#: A router under test (``conftest.Router``) or a plain ``host:port`` serving
#: both clients and registrations.
Address = Union[str, Any]


def registrations(router: Address) -> str:
    """Where bridges register with ``router``."""
    return str(getattr(router, "registrations", router))


def clients(router: Address) -> str:
    """Where clients call ``router``."""
    return str(getattr(router, "clients", router))

MiB = 1024 * 1024


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class HookedGreeter(greeter.GreeterServicer):
    """The example greeter plus hooks for the scenarios (by request name):
    ``details`` aborts with rich status details, ``trailers`` sets trailing
    metadata, ``sleep`` waits for its deadline or cancellation, and a
    ``StreamGreetings`` named ``slow`` sends one greeting then waits."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self.time_remaining: Optional[float] = None
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.done_callbacks = asyncio.Event()

    async def SayHello(self, request: Any, context: Any) -> Any:
        if request.name == "details":
            info = error_details_pb2.ErrorInfo(reason="QUOTA", domain="example.com", metadata={"k": "v"})
            detail = any_pb2.Any()
            detail.Pack(info)
            status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="out of quota", details=[detail])
            rich = rpc_status.to_status(status)
            # abort_with_status replaces the trailers with the status's own.
            await context.abort_with_status(
                _Status(rich.code, rich.details, (*rich.trailing_metadata, ("x-trailer", "t"), ("x-trailer-bin", b"\xff\x00")))
            )
        if request.name == "trailers":
            context.set_trailing_metadata([("x-trailer", "t"), ("x-trailer-bin", b"\xff\x00")])
            context.set_code(grpc.StatusCode.OK)
        if request.name == "sleep":
            self.time_remaining = context.time_remaining()
            context.add_done_callback(lambda _: self.done_callbacks.set())
            self.started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return await super().SayHello(request, context)

    async def StreamGreetings(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if request.name != "slow":
            async for reply in super().StreamGreetings(request, context):
                yield reply
            return
        yield pb.HelloReply(message="first", instance_id=self.instance_id)
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class SyncGreeter(pb_grpc.GreeterServicer):
    """A synchronous (thread-pool) servicer of all four kinds; ``sleep`` blocks
    until the call ends and records what the context said."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.started = threading.Event()
        self.callback_ran = threading.Event()
        self.saw_inactive = threading.Event()
        self.time_remaining: Optional[float] = None

    def SayHello(self, request: Any, context: Any) -> Any:
        if request.name == "sleep":
            self.time_remaining = context.time_remaining()
            context.add_callback(self.callback_ran.set)
            self.started.set()
            if self.callback_ran.wait(TIMEOUT) and not context.is_active():
                self.saw_inactive.set()
            return pb.HelloReply(message="too late")
        if request.name.startswith("fail:"):
            context.abort(grpc.StatusCode.NOT_FOUND, greeter.REQUESTED_FAILURE)
        if request.name == "raise":
            raise ValueError("boom")
        context.send_initial_metadata(greeter.echoed(context))
        context.set_trailing_metadata([("x-sync", "yes")])
        return pb.HelloReply(message=f"Hello, {request.name}!", instance_id=self.instance_id, payload=request.payload)

    def StreamGreetings(self, request: Any, context: Any) -> Iterator[Any]:
        for i in range(request.count):
            yield pb.HelloReply(message=f"Hello #{i}, {request.name}!", instance_id=self.instance_id)

    def Sum(self, request_iterator: Iterator[Any], context: Any) -> Any:
        numbers = [n.value for n in request_iterator]
        return pb.SumReply(total=sum(numbers), count=len(numbers), instance_id=self.instance_id)

    def Chat(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for message in request_iterator:
            yield pb.ChatMessage(text=f"{message.text} (from {self.instance_id})", seq=message.seq)

    def WhoAmI(self, request: empty_pb2.Empty, context: Any) -> Any:
        return pb.InstanceInfo(instance_id=self.instance_id)


@contextlib.asynccontextmanager
async def python_instance(
    routers: Sequence[Address],
    servicer: Any,
    instance_id: str,
    service: Any = None,
    add_servicer: Any = None,
    **options: Any,
) -> AsyncIterator[Bridge]:
    """A registered Python instance (of the Greeter unless ``service`` and
    ``add_servicer`` say otherwise), aborted at the end unless the test shut
    it down."""
    bridge = Bridge(
        service or myservice_router_bridge.GREETER,
        add_servicer or pb_grpc.add_GreeterServicer_to_server,
        servicer,
        BridgeOptions(
            endpoints=[f"http://{registrations(r)}" for r in routers],
            instance_id=instance_id,
            **{"max_message_size": 20 * MiB, **options},
        ),
    )
    await bridge.start()
    try:
        await bridge.registered(len(routers), timeout=TIMEOUT)
        yield bridge
    finally:
        await bridge.abort()


@contextlib.asynccontextmanager
async def client(router: Address) -> AsyncIterator[pb_grpc.GreeterStub]:
    """An ordinary grpc.aio Greeter client of ``router``."""
    channel = grpc.aio.insecure_channel(
        clients(router),
        options=[
            ("grpc.max_receive_message_length", 32 * MiB),
            ("grpc.max_send_message_length", 32 * MiB),
        ],
    )
    try:
        yield pb_grpc.GreeterStub(channel)
    finally:
        await channel.close()


async def who_answers(stub: pb_grpc.GreeterStub, calls: int) -> Dict[str, int]:
    """How many of ``calls`` WhoAmI calls each instance answered."""
    counts: Dict[str, int] = {}
    for _ in range(calls):
        info = await stub.WhoAmI(empty_pb2.Empty(), timeout=TIMEOUT)
        counts[info.instance_id] = counts.get(info.instance_id, 0) + 1
    return counts


async def admin_instances(router: Address, service: str = "myservice.v1.Greeter") -> Dict[str, Any]:
    """The router's view of ``service`` (``router.v1.RouterAdmin``): its
    ``ServiceStatus`` and the instances by id."""
    from router.v1 import admin_pb2, admin_pb2_grpc

    async with grpc.aio.insecure_channel(clients(router)) as channel:
        response = await admin_pb2_grpc.RouterAdminStub(channel).ListServices(
            admin_pb2.ListServicesRequest(service=service), timeout=TIMEOUT
        )
    (service,) = response.services
    return {"service": service, "instances": {i.id: i for i in service.instances}}


def run(coroutine: Any) -> Any:
    """Runs one scenario in a fresh event loop."""
    return asyncio.run(asyncio.wait_for(coroutine, 120))
