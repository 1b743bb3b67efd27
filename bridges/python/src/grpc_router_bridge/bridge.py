"""The public API: :class:`Bridge`, :class:`BridgeOptions` and :func:`serve`."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .descriptor import ServiceDescriptor
from .fleet import Discovery, follow
from .handlers import HandlerRecorder, record
from .session import Session, run_endpoint, run_resolved, split_endpoint, split_host_port

_LOGGER = logging.getLogger(__name__)


@dataclass
class TlsOptions:
    """TLS for ``https://`` router endpoints (PEM bytes)."""

    #: The CA certificates to trust; None for the system's.
    root_certificates: Optional[bytes] = None
    #: A client key, for mutual TLS.
    private_key: Optional[bytes] = None
    #: The client certificate chain, for mutual TLS.
    certificate_chain: Optional[bytes] = None
    #: The name to check the router's certificate against, when it differs
    #: from the endpoint's host.
    server_name: Optional[str] = None


@dataclass
class BridgeOptions:
    """How a bridge registers and behaves; the defaults match the Rust bridge."""

    #: Router endpoints (``http://host:port`` or ``https://host:port``); the
    #: bridge registers with every one of them.
    endpoints: List[str]
    #: The instance's stable id; a random one by default.
    instance_id: str = field(default_factory=lambda: f"instance-{uuid.uuid4().hex[:16]}")
    #: Labels routers can select on (zone, version, tenant ...).
    labels: Dict[str, str] = field(default_factory=dict)
    #: Weight for the weighted strategy.
    weight: int = 1
    #: The most calls the instance runs at once, through all routers; 0 for no limit.
    max_concurrent_calls: int = 0
    #: Routing keys this instance claims.
    routing_keys: List[str] = field(default_factory=list)
    #: Credit, in bytes, granted to the router for each call's requests.
    initial_window: int = 256 * 1024
    #: The largest frame payload accepted from the router.
    max_frame_size: int = 128 * 1024
    #: The largest request message the bridge reassembles, in bytes. Larger
    #: requests also need the router's limit raised (the daemon's
    #: ``max_request_message_bytes``; see the README's "Message size").
    max_message_size: int = 4 * 1024 * 1024
    #: First reconnect delay in seconds; doubles up to ``reconnect_max``, with jitter.
    reconnect_initial: float = 0.1
    #: Longest reconnect delay, in seconds.
    reconnect_max: float = 10.0
    #: How long to wait for a connection, in seconds.
    connect_timeout: float = 5.0
    #: How long a shutdown waits for calls in flight, in seconds.
    drain_timeout: float = 30.0
    #: Metadata sent with every ``Register`` call, for the router's
    #: ``authorize`` hook (for example ``("authorization", "Bearer ...")``).
    register_metadata: List[Tuple[str, str]] = field(default_factory=list)
    #: TLS settings for ``https://`` endpoints.
    tls: Optional[TlsOptions] = None
    #: When set, each endpoint's host name is resolved to all its addresses
    #: and re-resolved this often (seconds); the bridge registers with every
    #: address and drains the registration of an address that leaves DNS
    #: (a router fleet behind one name).
    resolve_interval: Optional[float] = None
    #: How names are resolved when ``resolve_interval`` is set:
    #: ``async (host, port) -> [(ip, port), ...]``; ``getaddrinfo`` by default.
    resolver: Optional[Callable[[str, int], Awaitable[Sequence[Tuple[str, int]]]]] = None
    #: Whether the bridge follows a router fleet: a router with ``[cluster]``
    #: lists its replicas and the bridge holds one registration per replica
    #: (at most 64), whatever endpoint it was given (a balancer, or one
    #: replica). Routers without a fleet list none: the bridge registers with
    #: its endpoints only, as when this is off.
    discovery: bool = True
    #: Threads running synchronous (non-``async``) handlers.
    max_workers: int = field(default_factory=lambda: min(32, (os.cpu_count() or 1) + 4))

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad option."""
        if not self.endpoints:
            raise ValueError("BridgeOptions.endpoints is empty: give at least one router endpoint")
        for endpoint in self.endpoints:
            split_endpoint(endpoint)
        if not self.instance_id:
            raise ValueError("BridgeOptions.instance_id must not be empty")
        for name in ("initial_window", "max_frame_size", "max_message_size", "max_workers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BridgeOptions.{name} must be positive, got {getattr(self, name)}")
        if self.max_frame_size < 1024:
            raise ValueError(f"BridgeOptions.max_frame_size must be at least 1024, got {self.max_frame_size}")
        if self.resolve_interval is not None and self.resolve_interval <= 0:
            raise ValueError(f"BridgeOptions.resolve_interval must be positive, got {self.resolve_interval}")
        if self.resolve_interval is not None:
            for endpoint in self.endpoints:
                split_host_port(endpoint)
        if self.reconnect_initial <= 0 or self.reconnect_max < self.reconnect_initial:
            raise ValueError("BridgeOptions needs 0 < reconnect_initial <= reconnect_max")
        for key, _ in self.register_metadata:
            if key != key.lower() or key.endswith("-bin"):
                raise ValueError(f"register metadata key `{key}` must be lowercase ASCII and not -bin")


@dataclass
class BridgeState:
    """The state of a bridge's registrations (as the Rust bridge's
    ``BridgeState``): read it with :attr:`Bridge.state`, wait on it with
    :meth:`Bridge.wait_for`, or follow it with ``on_state`` in :func:`serve`
    / :meth:`Bridge.on_state_change`."""

    #: How many routers the bridge is registered with now.
    registered: int = 0
    #: Why the last registration failed or ended (a refusal names what the
    #: router refused, for example a wrong token or an incompatible
    #: service); cleared by the next successful registration.
    last_error: Optional[str] = None
    #: How many routers hold this bridge's instance id for another bridge
    #: process: the registration there was replaced (the other process took
    #: the id over while this one did not answer a ping) or is refused as
    #: replaced. The bridge tries again there at its longest backoff; once
    #: registered there again it no longer counts it.
    replaced: int = 0


class Bridge:
    """Connects an ordinary grpcio servicer to routers as an instance of a
    routed service.

    ``add_servicer`` is the generated ``add_FooServicer_to_server`` function and
    ``servicer`` the object you would pass it; sync servicers run in a thread
    pool, ``async def`` (grpc.aio) servicers on the event loop::

        bridge = Bridge(
            myservice_router_bridge.GREETER,
            myservice_pb2_grpc.add_GreeterServicer_to_server,
            MyGreeter(),
            BridgeOptions(["http://127.0.0.1:50051"], instance_id="py-a"),
        )
        await bridge.start()
        await bridge.registered()
        ...
        await bridge.shutdown()  # drain: finish calls in flight, then leave
    """

    def __init__(
        self,
        service: ServiceDescriptor,
        add_servicer: Callable[[Any, Any], None],
        servicer: Any,
        options: BridgeOptions,
    ) -> None:
        options.validate()
        self.service = service
        self.options = options
        #: This bridge's random id, sent in every ``Hello``.
        self.incarnation = secrets.token_hex(16)
        #: The encoded service description sent in every ``Hello``.
        self.description = service.describe()
        self._recorder: HandlerRecorder = record(add_servicer, servicer)
        handlers = [self._recorder.lookup(m.path) for m in service.methods]
        if all(h is None for h in handlers):
            raise ValueError(
                f"the servicer registered none of `{service.name}`'s methods: "
                f"is `add_servicer` the function for this service?"
            )
        #: Whether the servicer is a grpc.aio one (any ``async`` method): its
        #: failures then end calls as a grpc.aio server ends them.
        self.aio_servicer = any(h is not None and _is_async(h) for h in handlers)
        if not service.file_descriptor_set:
            _LOGGER.warning(
                "the descriptor of `%s` has no file descriptor set (generated by an older "
                "protoc-gen-router): routers cannot serve reflection for it; regenerate the module",
                service.name,
            )
        self.executor = ThreadPoolExecutor(
            max_workers=options.max_workers, thread_name_prefix=f"bridge-{options.instance_id}"
        )
        self.active = 0
        self.serving = True
        self._sessions: Set[Session] = set()
        self._tasks: List["asyncio.Task[None]"] = []
        self._state = BridgeState()
        self._listeners: List[Callable[[BridgeState], None]] = []
        self._changed: Optional[asyncio.Condition] = None
        self._stopping = asyncio.Event()
        self._aborting = asyncio.Event()
        #: The router fleet as routers list it.
        self.discovery = Discovery()

    @property
    def instance_id(self) -> str:
        """The instance id this bridge registers as."""
        return self.options.instance_id

    @property
    def state(self) -> BridgeState:
        """The current registration state (a copy)."""
        return replace(self._state)

    async def start(self) -> None:
        """Registers with every endpoint in the background; returns at once."""
        if self._tasks:
            raise RuntimeError("Bridge.start() called twice")
        self._changed = asyncio.Condition()
        loop = asyncio.get_running_loop()
        interval = self.options.resolve_interval
        self._tasks = [
            loop.create_task(
                run_endpoint(self, e, self._stopping) if interval is None else run_resolved(self, e, interval)
            )
            for e in self.options.endpoints
        ]
        if self.options.discovery:
            self._tasks.append(loop.create_task(follow(self)))

    async def registered(self, n: int = 1, timeout: Optional[float] = None) -> None:
        """Waits until the bridge is registered with ``n`` routers; raises
        ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        await self.wait_for(lambda state: state.registered >= n, timeout)

    async def wait_for(self, predicate: Callable[[BridgeState], bool], timeout: Optional[float] = None) -> BridgeState:
        """Waits until ``predicate(state)`` holds for the registration state
        (for example ``lambda s: s.registered == 0``); raises
        ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        if self._changed is None:
            raise RuntimeError("Bridge.wait_for() before start()")
        changed = self._changed

        async def wait() -> None:
            async with changed:
                await changed.wait_for(lambda: predicate(self.state))

        await asyncio.wait_for(wait(), timeout)
        return self.state

    def on_state_change(self, callback: Callable[[BridgeState], None]) -> None:
        """Calls ``callback(state)`` (on the event loop) each time the
        registration state changes: a registration made or lost, a refusal."""
        self._listeners.append(callback)

    def set_serving(self, serving: bool) -> None:
        """Reports the instance serving or not serving to every router
        (``grpc.health.v1`` semantics): a not-serving instance gets no new calls
        until it serves again; its calls in flight continue."""
        if serving == self.serving:
            return
        self.serving = serving
        for session in list(self._sessions):
            session.send_heartbeat()

    async def shutdown(self) -> None:
        """Drains and leaves: tells every router to send no new calls, lets the
        calls in flight finish (up to ``drain_timeout``), then disconnects."""
        self._stopping.set()
        await self._join()

    async def abort(self) -> None:
        """Drops every registration at once, failing calls in flight, as a
        crash would. For tests and emergencies."""
        self._aborting.set()
        self._stopping.set()
        await self._join()

    async def _join(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> "Bridge":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()

    # --- bookkeeping, for sessions ---------------------------------------------

    def _acquire(self) -> None:
        self.active += 1

    def _release(self) -> None:
        self.active = max(0, self.active - 1)

    def _replaced_changed(self, delta: int) -> None:
        self._state.replaced = max(0, self._state.replaced + delta)
        self._registered_changed(0, None)

    def _registered_changed(self, delta: int, error: Optional[str]) -> None:
        self._state.registered = max(0, self._state.registered + delta)
        if delta > 0:
            self._state.last_error = None
        if error is not None:
            self._state.last_error = error
        for listener in list(self._listeners):
            try:
                listener(self.state)
            except Exception:  # noqa: BLE001 - the user's callback
                _LOGGER.exception("bridge state callback failed")
        changed = self._changed
        if changed is not None:

            async def notify() -> None:
                async with changed:
                    changed.notify_all()

            asyncio.get_running_loop().create_task(notify())


async def serve(
    service: ServiceDescriptor,
    add_servicer: Callable[[Any, Any], None],
    servicer: Any,
    options: BridgeOptions,
    on_registered: Optional[Callable[[], None]] = None,
    on_state: Optional[Callable[[BridgeState], None]] = None,
) -> None:
    """Runs a bridge until SIGINT or SIGTERM, then drains and returns: the
    usual ``main`` of an instance (``asyncio.run(serve(...))``).

    ``on_registered()`` runs once the bridge is first registered;
    ``on_state(state)`` runs at every change of its :class:`BridgeState`, so
    a refusal (``state.last_error``) reaches the program, not only the log."""
    bridge = Bridge(service, add_servicer, servicer, options)
    if on_state is not None:
        bridge.on_state_change(on_state)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    if on_registered is not None:
        waiter = loop.create_task(bridge.registered())
        waiter.add_done_callback(lambda t: t.cancelled() or t.exception() or on_registered())
    await stop.wait()
    await bridge.shutdown()


def _is_async(handler: Any) -> bool:
    behavior = (
        handler.stream_stream
        or handler.stream_unary
        or handler.unary_stream
        or handler.unary_unary
    )
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
