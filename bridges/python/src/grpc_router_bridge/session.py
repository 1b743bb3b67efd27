"""One registration: connect, ``Hello``, serve calls, drain; and the reconnect
loop around it."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from dataclasses import dataclass
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

import grpc
import grpc.aio

from . import wire
from .call import Call

if TYPE_CHECKING:  # pragma: no cover
    from .bridge import Bridge

_LOGGER = logging.getLogger(__name__)

#: Statuses by which a router refuses a registration: retrying at once would
#: only be refused again.
REFUSED_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)

_RESOURCE_EXHAUSTED = 8


def _user_agent() -> str:
    """``grpc-router-bridge-python/<version>``: routers name the bridge's
    kind in refusals (``grpc.primary_user_agent``, before grpcio's own)."""
    try:
        from importlib.metadata import version

        return f"grpc-router-bridge-python/{version('grpc-router-bridge')}"
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "grpc-router-bridge-python"


USER_AGENT = _user_agent()


@dataclass
class SessionEnd:
    """How a session ended: ``stopped`` (shutdown or abort: stop for good),
    ``lost`` (reconnect), ``refused`` (reconnect after the longest pause) or
    ``replaced`` (another bridge process holds the instance id: the router
    closed this registration, or refuses this process, with ABORTED;
    reconnect after the longest pause) or ``duplicate`` (the registration
    reached a fleet replica this bridge holds already; tried again while
    some replica is missing)."""

    kind: str
    reason: str = ""


def split_endpoint(endpoint: str) -> Tuple[str, bool]:
    """``http://host:port`` / ``https://host:port`` into a grpcio target and
    whether it uses TLS."""
    for scheme, tls in (("http://", False), ("https://", True)):
        if endpoint.startswith(scheme):
            target = endpoint[len(scheme) :].rstrip("/")
            if not target or "/" in target:
                raise ValueError(f"invalid router endpoint `{endpoint}`: expected {scheme}host:port")
            return target, tls
    raise ValueError(f"invalid router endpoint `{endpoint}`: expected http://host:port or https://host:port")


def jitter(delay: float) -> float:
    """A delay between 50% and 100% of ``delay`` ("equal jitter"), so bridges
    that lost the same router do not reconnect in lockstep."""
    return delay / 2 + random.random() * delay / 2


class Session:
    """The register stream of one bridge with one router."""

    def __init__(
        self,
        bridge: "Bridge",
        endpoint: str,
        stop: asyncio.Event,
        server_name: Optional[str],
        listed: Optional[str] = None,
    ) -> None:
        self.bridge = bridge
        self.endpoint = endpoint
        #: The fleet address this session dials (``None``: a configured endpoint).
        self.listed = listed
        #: The replica this registration holds (see ``Discovery.claim``).
        self.claimed: Optional[Tuple[str, int]] = None
        # Set to drain and leave: the bridge's shutdown, or the router's
        # address gone from DNS.
        self.stop = stop
        # The host name TLS checks when the endpoint is a resolved address.
        self.server_name = server_name
        self.loop = asyncio.get_running_loop()
        self.executor: Executor = bridge.executor
        self.aio_servicer = bridge.aio_servicer
        options = bridge.options
        self.request_window = options.initial_window
        self.max_message = options.max_message_size
        self.instance_id = options.instance_id
        self.reply_window = 1
        self.max_frame = 1024
        self.calls: Dict[int, Call] = {}
        self._out: "asyncio.Queue[Optional[bytes]]" = asyncio.Queue()
        self._ended: "asyncio.Future[SessionEnd]" = self.loop.create_future()
        self._draining = False
        self._acked = False
        self._drained = asyncio.Event()
        self._last_seen = self.loop.time()
        self.registered = False
        #: Whether this endpoint counts in ``BridgeState.replaced``; the
        #: session's ``Welcome`` clears it.
        self.was_replaced = False

    # --- Link, for calls ------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queues one frame for the router."""
        self._out.put_nowait(frame)

    def forget(self, call: Call) -> None:
        """A call ended: free its slot."""
        if self.calls.pop(call.id, None) is not None:
            self.bridge._release()
        self._check_drained()

    # --- state ----------------------------------------------------------------

    def _end(self, end: SessionEnd) -> None:
        if not self._ended.done():
            self._ended.set_result(end)

    def _check_drained(self) -> None:
        if self._acked and not self.calls:
            self._drained.set()

    def send_heartbeat(self) -> None:
        """Reports the instance's load and serving state now."""
        bridge = self.bridge
        self.send(wire.encode_heartbeat(bridge.active, bridge.serving, bridge._state.registered))

    # --- the stream -------------------------------------------------------------

    async def run(self) -> SessionEnd:
        """Registers and serves until the registration ends."""
        options = self.bridge.options
        try:
            target, tls = split_endpoint(self.endpoint)
        except ValueError as e:
            return SessionEnd("refused", str(e))
        channel_options: List[Tuple[str, Any]] = [
            ("grpc.max_receive_message_length", options.max_frame_size + 64 * 1024),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.max_pings_without_data", 0),
            # One connection per router: never share one with another session.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.primary_user_agent", USER_AGENT),
        ]
        if tls:
            tls_options = options.tls
            if tls_options is None:
                credentials = grpc.ssl_channel_credentials()
            else:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=tls_options.root_certificates,
                    private_key=tls_options.private_key,
                    certificate_chain=tls_options.certificate_chain,
                )
            server_name = (tls_options.server_name if tls_options else None) or self.server_name
            if server_name:
                channel_options.append(("grpc.ssl_target_name_override", server_name))
            channel = grpc.aio.secure_channel(target, credentials, options=channel_options)
        else:
            channel = grpc.aio.insecure_channel(target, options=channel_options)
        try:
            return await self._run_on(channel)
        finally:
            for call in list(self.calls.values()):
                call.cancel()
            await channel.close(grace=None)

    async def _until_stopped(self, awaitable: "asyncio.Future[Any]") -> bool:
        """Waits for ``awaitable``; False (and it is cancelled) if the bridge
        stops first."""
        stop = asyncio.ensure_future(self.stop.wait())
        try:
            waiting: Set["asyncio.Future[Any]"] = {awaitable, stop}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if awaitable in done:
            return True
        awaitable.cancel()
        return False

    async def _connected(self, channel: grpc.aio.Channel) -> bool:
        """Waits until the channel connects or fails to (a refused connection
        fails at once); False if it does neither within ``connect_timeout``."""
        connectivity = grpc.ChannelConnectivity
        deadline = self.loop.time() + self.bridge.options.connect_timeout
        while True:
            state = channel.get_state(try_to_connect=True)
            if state in (connectivity.READY, connectivity.TRANSIENT_FAILURE):
                return True
            left = deadline - self.loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), left)
            except asyncio.TimeoutError:
                return False

    async def _run_on(self, channel: grpc.aio.Channel) -> SessionEnd:
        bridge = self.bridge
        options = bridge.options
        connecting = asyncio.ensure_future(self._connected(channel))
        if not await self._until_stopped(connecting):
            return SessionEnd("stopped")
        if not connecting.result():
            target = split_endpoint(self.endpoint)[0]
            return SessionEnd(
                "lost", f"cannot connect to {target} within {options.connect_timeout}s: no answer"
            )
        # Connected, or the connection failed: then the register call fails
        # at once with the cause (refused, TLS handshake ...), see `_failed`.
        register = channel.stream_stream(bridge.service.register_path)
        stream = register(metadata=tuple(options.register_metadata) or None)
        writer = self.loop.create_task(self._write(stream))
        try:
            self.send(
                wire.Hello(
                    instance_id=options.instance_id,
                    service=bridge.service.name,
                    labels=dict(options.labels),
                    weight=options.weight,
                    max_concurrent_calls=options.max_concurrent_calls,
                    routing_keys=list(options.routing_keys),
                    initial_window=options.initial_window,
                    max_frame_size=options.max_frame_size,
                    max_message_size=options.max_message_size,
                    incarnation=bridge.incarnation,
                    description=bridge.description,
                    discovery=options.discovery,
                    registered_with=bridge.discovery.held_ids() if options.discovery else [],
                ).encode()
            )
            first = asyncio.ensure_future(stream.read())
            if not await self._until_stopped(first):
                return SessionEnd("stopped")
            try:
                raw = first.result()
            except grpc.aio.AioRpcError as e:
                return self._failed(e)
            if raw is grpc.aio.EOF:
                return SessionEnd("lost", "router closed the stream before Welcome")
            try:
                welcome = wire.decode_router_frame(raw)
            except wire.WireError as e:
                return SessionEnd("lost", f"router sent a bad first frame: {e}")
            if not isinstance(welcome, wire.Welcome):
                return SessionEnd("lost", "router's first frame was not Welcome")
            if options.discovery:
                self.claimed = bridge.discovery.claim(welcome, self.listed)
            return await self._serve(stream, welcome, writer)
        finally:
            bridge.discovery.release(self.claimed)
            self.claimed = None
            writer.cancel()
            stream.cancel()

    def _failed(self, error: grpc.aio.AioRpcError) -> SessionEnd:
        code, details = error.code(), error.details() or ""
        for key, value in error.trailing_metadata() or ():
            if key == wire.DUPLICATE_TRAILER:
                return SessionEnd("duplicate", f"router `{value}` holds a registration of this bridge already")
        if code == grpc.StatusCode.ABORTED:
            return SessionEnd("replaced", f"router replaced this registration: {details}")
        if code in REFUSED_CODES:
            return SessionEnd("refused", f"router refused registration: {details}")
        target = split_endpoint(self.endpoint)[0]
        if code == grpc.StatusCode.UNIMPLEMENTED and not self.registered:
            return SessionEnd(
                "refused",
                f"{self.endpoint} does not serve {self.bridge.service.register_path} (UNIMPLEMENTED): "
                f"this address serves clients, not registrations (or is a router compiled for another "
                f"service); point the bridge at the router's registrations address "
                f"(the daemon's `[registrations] address`)",
            )
        if code == grpc.StatusCode.UNAVAILABLE and not self.registered:
            if "connection refused" in details.lower():
                return SessionEnd("lost", f"connection refused by {target}: is the router listening there?")
            return SessionEnd("lost", f"cannot connect to {target}: {details}")
        return SessionEnd("lost", f"register call failed: {code.name}: {details}")

    async def _write(self, stream: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                frame = await self._out.get()
                if frame is None:
                    await stream.done_writing()
                    return
                await stream.write(frame)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the stream broke
            self._end(SessionEnd("lost", f"register stream write failed: {e}"))

    async def _serve(self, stream: grpc.aio.StreamStreamCall, welcome: wire.Welcome, writer: "asyncio.Task[None]") -> SessionEnd:
        bridge = self.bridge
        self.reply_window = max(welcome.initial_window, 1)
        self.max_frame = max(welcome.max_frame_size, 1024)
        self.registered = True
        bridge._registered_changed(+1, None)
        if self.was_replaced:
            self.was_replaced = False
            bridge._replaced_changed(-1)
        _LOGGER.info("registered with %s (router %s)", self.endpoint, welcome.router_id)
        bridge._sessions.add(self)
        self._last_seen = self.loop.time()
        reader = self.loop.create_task(self._read(stream))
        heartbeat = self.loop.create_task(
            self._heartbeat(
                max(welcome.heartbeat_interval_ms, 100) / 1000,
                max(welcome.heartbeat_timeout_ms, 300) / 1000,
            )
        )
        stop = self.loop.create_task(self.stop.wait())
        abort = self.loop.create_task(bridge._aborting.wait())
        try:
            first: Set["asyncio.Future[Any]"] = {self._ended, stop}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if self._ended.done() or bridge._aborting.is_set():
                return self._ended.result() if self._ended.done() else SessionEnd("stopped")
            # Drain: the router stops routing here and answers with GoAway,
            # ordered after every call it already started; finish those, leave.
            self._draining = True
            self.send(wire.encode_drain("bridge shutting down"))
            drained = self.loop.create_task(self._drained.wait())
            draining: Set["asyncio.Future[Any]"] = {self._ended, drained, abort}
            done, _ = await asyncio.wait(
                draining,
                timeout=bridge.options.drain_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            drained.cancel()
            if bridge._aborting.is_set():
                return SessionEnd("stopped")
            if not done:
                _LOGGER.warning("drain timed out with %d calls in flight; dropping them", len(self.calls))
            elif self._ended.done() and not self._drained.is_set():
                return self._ended.result()
            # Flush what is queued (the last trailers), then close our side.
            self._out.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(writer), 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            return SessionEnd("stopped")
        finally:
            for task in (reader, heartbeat, stop, abort):
                task.cancel()
            bridge._sessions.discard(self)
            bridge._registered_changed(-1, None)

    async def _read(self, stream: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                raw = await stream.read()
                if raw is grpc.aio.EOF:
                    self._end(SessionEnd("lost", "router closed the register stream"))
                    return
                self._last_seen = self.loop.time()
                try:
                    frame = wire.decode_router_frame(raw)
                except wire.WireError as e:
                    self._end(SessionEnd("lost", f"router sent a bad frame: {e}"))
                    return
                self._dispatch(frame)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            self._end(self._failed(e))
        except Exception as e:  # noqa: BLE001 - a bug here must not hang the bridge
            _LOGGER.exception("register stream reader failed")
            self._end(SessionEnd("lost", f"register stream reader failed: {e}"))

    async def _heartbeat(self, interval: float, timeout: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.loop.time() - self._last_seen > timeout:
                self._end(SessionEnd("lost", f"router silent for {timeout}s"))
                return
            self.send_heartbeat()

    def _dispatch(self, frame: wire.RouterFrame) -> None:
        if isinstance(frame, wire.Payload):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.deliver(frame.message)
        elif isinstance(frame, wire.CallStart):
            self._start(frame)
        elif isinstance(frame, wire.WindowUpdate):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.reply_credit.grant(frame.increment)
        elif isinstance(frame, wire.Chunk):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.deliver(frame)
        elif isinstance(frame, wire.HalfClose):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.deliver(None)
        elif isinstance(frame, wire.Cancel):
            call = self.calls.get(frame.call_id)
            if call is not None:
                call.cancel()
        elif isinstance(frame, wire.Ping):
            self.send(wire.encode_pong(frame.nonce))
        elif isinstance(frame, wire.Peers):
            self.bridge.discovery.offer(frame.peers)
        elif isinstance(frame, wire.GoAway):
            if self._draining:
                _LOGGER.debug("router acknowledged drain: %s", frame.reason)
                self._acked = True
                self._check_drained()
            elif frame.refused:
                self._end(SessionEnd("refused", frame.reason))
            else:
                self._end(SessionEnd("lost", f"router going away: {frame.reason}"))

    def _start(self, start: wire.CallStart) -> None:
        bridge = self.bridge
        limit = bridge.options.max_concurrent_calls
        # Each router counts only its own calls: with several routers the limit
        # is enforced here, and a call refused before it ran may go elsewhere.
        if limit and bridge.active >= limit:
            self.send(
                wire.encode_trailers(
                    start.call_id,
                    _RESOURCE_EXHAUSTED,
                    f"instance `{bridge.options.instance_id}` is at its limit of {limit} concurrent calls",
                    not_started=True,
                )
            )
            return
        path = start.path
        if not path:
            method = bridge.service.method_by_tag(start.method_tag)
            path = method.path if method is not None else ""
        handler = bridge._recorder.lookup(path, tuple(start.metadata))
        call = Call(self, start, handler)
        old = self.calls.pop(start.call_id, None)
        if old is not None:
            bridge._release()
            old.cancel()
        self.calls[start.call_id] = call
        bridge._acquire()
        call.begin()


async def run_endpoint(
    bridge: "Bridge",
    endpoint: str,
    stop: asyncio.Event,
    server_name: Optional[str] = None,
    listed: Optional[str] = None,
) -> None:
    """Keeps one endpoint's registration alive until ``stop`` is set,
    reconnecting with exponential, jittered, capped backoff, while it is
    wanted (``Discovery.wait_until_wanted``; ``listed``: the fleet address
    it dials, ``None`` for a configured endpoint)."""
    options = bridge.options
    delay = options.reconnect_initial
    # Whether this endpoint counts in ``BridgeState.replaced``.
    replaced = False
    try:
        while not stop.is_set():
            if not await bridge.discovery.wait_until_wanted(listed, stop):
                return
            session = Session(bridge, endpoint, stop, server_name, listed)
            session.was_replaced = replaced
            try:
                end = await session.run()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reconnect whatever went wrong
                _LOGGER.exception("registration with %s failed", endpoint)
                end = SessionEnd("lost", f"bridge error: {e}")
            replaced = session.was_replaced
            if end.kind == "stopped":
                return
            if session.registered:
                delay = options.reconnect_initial
            if end.kind in ("refused", "replaced"):
                # Trying again at once would be refused again, or (replaced)
                # start a takeover loop with the process holding the id.
                delay = options.reconnect_max
            if end.kind == "replaced" and not replaced:
                replaced = True
                bridge._replaced_changed(+1)
            if end.kind != "duplicate":
                bridge._registered_changed(0, end.reason)
            wait = jitter(delay)
            if end.kind == "duplicate":
                _LOGGER.debug("second registration with a replica closed at %s: %s", endpoint, end.reason)
            elif end.kind == "replaced":
                _LOGGER.error("another process holds this instance id at %s: %s; retrying in %.2fs", endpoint, end.reason, wait)
            elif end.kind == "refused":
                _LOGGER.error("registration with %s refused: %s; retrying in %.2fs", endpoint, end.reason, wait)
            else:
                _LOGGER.warning("registration with %s lost: %s; retrying in %.2fs", endpoint, end.reason, wait)
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, options.reconnect_max)
    finally:
        if replaced:
            bridge._replaced_changed(-1)


def split_host_port(endpoint: str) -> Tuple[str, str, int]:
    """``https://host:port`` into its scheme, host and port (80/443 by default)."""
    target, tls = split_endpoint(endpoint)
    scheme = "https" if tls else "http"
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:
        host, port = target, ""
    if not port:
        return scheme, host, 443 if tls else 80
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid router endpoint `{endpoint}`: bad port `{port}`")
    return scheme, host, int(port)


async def system_resolver(host: str, port: int) -> List[Tuple[str, int]]:
    """Every address ``host`` resolves to (``getaddrinfo``), with ``port``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({(str(info[4][0]), int(info[4][1])) for info in infos})


async def run_resolved(bridge: "Bridge", endpoint: str, interval: float) -> None:
    """Registers with every address ``endpoint``'s host resolves to,
    re-resolving every ``interval`` seconds: a new address gets a
    registration, a vanished one is drained and closed. For a router fleet
    behind one DNS name (for example a Kubernetes headless service)."""
    scheme, host, port = split_host_port(endpoint)
    resolver = bridge.options.resolver or system_resolver
    sessions: Dict[Tuple[str, int], Tuple[asyncio.Event, "asyncio.Task[None]"]] = {}
    try:
        while not bridge._stopping.is_set():
            try:
                wanted = set(await resolver(host, port))
            except Exception as e:  # noqa: BLE001 - a DNS hiccup keeps what works
                _LOGGER.warning("router name %s did not resolve (%s); keeping current routers", host, e)
                wanted = set(sessions)
            for address in [a for a in sessions if a not in wanted]:
                _LOGGER.info("router address %s gone from DNS; draining its registration", address)
                sessions.pop(address)[0].set()
            for address in sorted(wanted - set(sessions)):
                ip, address_port = address
                target = f"[{ip}]:{address_port}" if ":" in ip else f"{ip}:{address_port}"
                stop = asyncio.Event()
                task = asyncio.get_running_loop().create_task(
                    run_endpoint(bridge, f"{scheme}://{target}", stop, server_name=host)
                )
                sessions[address] = (stop, task)
            try:
                await asyncio.wait_for(bridge._stopping.wait(), interval)
            except asyncio.TimeoutError:
                pass
    finally:
        for stop, _ in sessions.values():
            stop.set()
        if sessions:
            await asyncio.gather(*(task for _, task in sessions.values()), return_exceptions=True)
