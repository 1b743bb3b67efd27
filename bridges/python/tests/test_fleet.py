"""A fleet behind one address, with the Python bridge: three ``grpc-router``
daemons whose ``[cluster] peers`` name each other tell a bridge given one
daemon's address of every replica, and it registers with all three."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import List

import grpc.aio
from conftest import Process
from harness import HookedGreeter, admin_instances, client, run, who_answers
from myservice.v1 import myservice_pb2_grpc as pb_grpc
from myservice.v1 import myservice_router_bridge

from grpc_router_bridge import Bridge, BridgeOptions


def _config(router_id: str, peers: List[str]) -> str:
    lines = [
        f'router_id = "{router_id}"',
        "[clients]",
        'address = "127.0.0.1:0"',
        "serve_admin = true",
        "[registrations]",
        'address = "127.0.0.1:0"',
        "[shutdown]",
        'grace = "1s"',
        "[log]",
        'level = "info"',
    ]
    if peers:
        lines += ["[cluster]", "peers = [" + ", ".join(f'"{p}"' for p in peers) + "]"]
    return "\n".join(lines) + "\n"


class _Daemon:
    def __init__(self, tmp: Path, router_id: str) -> None:
        self.router_id = router_id
        self.config = tmp / f"{router_id}.toml"
        self.config.write_text(_config(router_id, []))
        self.process = Process(router_id, ["grpc-router", "serve", "--config", str(self.config)], tmp)
        words = dict(w.split("=", 1) for w in self.process.first_line.split()[1:] if "=" in w)
        self.clients = words["clients"]
        self.registrations = words["registrations"]

    def join(self, peers: List[str]) -> None:
        """Reloads with ``[cluster] peers`` and waits until it applied them."""
        before = self.process.log.read_text(errors="replace").count("the fleet changed")
        self.config.write_text(_config(self.router_id, peers))
        self.process.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.process.log.read_text(errors="replace").count("the fleet changed") == before:
            assert time.monotonic() < deadline, f"{self.router_id} did not apply its [cluster]"
            time.sleep(0.01)


def test_a_python_bridge_given_one_daemon_registers_with_the_whole_fleet(tmp_path: Path) -> None:
    daemons = [_Daemon(tmp_path, f"r{i}") for i in (1, 2, 3)]
    try:
        peers = [d.registrations for d in daemons]
        for daemon in daemons:
            daemon.join(peers)

        async def scenario() -> float:
            bridge = Bridge(
                myservice_router_bridge.GREETER,
                pb_grpc.add_GreeterServicer_to_server,
                HookedGreeter("py-fleet"),
                BridgeOptions(endpoints=[f"http://{daemons[0].registrations}"], instance_id="py-fleet"),
            )
            started = time.monotonic()
            await bridge.start()
            try:
                await bridge.registered(3, timeout=5)
                took = time.monotonic() - started
                for daemon in daemons:
                    seen = await admin_instances(daemon.clients)
                    assert list(seen["instances"]) == ["py-fleet"], daemon.router_id
                    async with client(daemon.clients) as stub:
                        assert await who_answers(stub, 1) == {"py-fleet": 1}
                assert bridge.state.registered == 3
            finally:
                await bridge.shutdown()
            return took

        took = run(scenario())
        print(f"python bridge registered with 3 daemons through one address in {took * 1000:.0f} ms")
    finally:
        for daemon in daemons:
            daemon.process.stop()


async def _registered_with(daemon: _Daemon) -> bool:
    """Whether ``daemon`` holds a registration of ``py-fleet``."""
    try:
        seen = await admin_instances(daemon.clients)
    except (ValueError, grpc.aio.AioRpcError):
        return False  # the service is not learnt yet
    return "py-fleet" in seen["instances"]


async def _balancer(backends: List[str]) -> "asyncio.AbstractServer":
    """A round-robin TCP balancer: each connection is piped to the next backend."""
    turn = iter(range(1 << 30))

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = backends[next(turn) % len(backends)].rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(accept, "127.0.0.1", 0)


def test_a_python_bridge_behind_a_balancer_follows_a_replaced_replica_without_displacing_any(
    tmp_path: Path,
) -> None:
    daemons = [_Daemon(tmp_path, f"r{i}") for i in (1, 2, 3)]
    try:
        for daemon in daemons:
            daemon.join([d.registrations for d in daemons])

        async def scenario() -> None:
            front = await _balancer([d.registrations for d in daemons])
            address = front.sockets[0].getsockname()
            bridge = Bridge(
                myservice_router_bridge.GREETER,
                pb_grpc.add_GreeterServicer_to_server,
                HookedGreeter("py-fleet"),
                BridgeOptions(endpoints=[f"http://{address[0]}:{address[1]}"], instance_id="py-fleet"),
            )
            await bridge.start()
            try:
                await bridge.registered(3, timeout=5)
                for daemon in daemons:
                    seen = await admin_instances(daemon.clients)
                    assert list(seen["instances"]) == ["py-fleet"], daemon.router_id
                # The balancer's first connection went to r1: it dies, r4
                # takes its place, and the others learn of it.
                daemons[0].process.stop("KILL")
                daemons.append(_Daemon(tmp_path, "r4"))
                live = daemons[1:]
                for daemon in live:
                    await asyncio.to_thread(daemon.join, [d.registrations for d in live])
                deadline = time.monotonic() + 5
                while not await _registered_with(daemons[-1]):
                    assert time.monotonic() < deadline, "not registered with the replacement within 5 s"
                    await asyncio.sleep(0.01)
                await bridge.wait_for(lambda s: s.registered == 3, timeout=5)
                for daemon in live:
                    async with client(daemon.clients) as stub:
                        assert await who_answers(stub, 1) == {"py-fleet": 1}
                    log = daemon.process.log.read_text(errors="replace")
                    assert "re-registered" not in log, f"a registration was displaced on {daemon.router_id}"
            finally:
                await bridge.shutdown()
                front.close()

        run(scenario())
    finally:
        for daemon in daemons:
            daemon.process.stop()
