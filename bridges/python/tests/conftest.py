"""Fixtures for the end-to-end tests: the Greeter stubs, the Rust example
binaries (``router``, ``instance``) and helpers that start them on loopback
port 0 and wait for their first stdout line (no sleeps).

Every test that takes ``router`` or ``fleet`` runs twice: against the example's
compiled Greeter router and against the ``grpc-router`` daemon (``Router.kind``;
one address for the compiled router, separate clients' and registrations'
listeners for the daemon). The binaries come from ``$ROUTER_BIN_DIR`` (set by
``.ci/python-bridge.sh``), else ``$CARGO_TARGET_DIR/debug``, else the
repository's ``target/debug``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "python-greeter"


def _stubs_dir() -> Path:
    return Path(os.environ.get("GREETER_STUBS_DIR", EXAMPLE / ".stubs"))


# The example's stubs module generates myservice_pb2 once and puts it and the
# generated bridge descriptor on sys.path; the tests import the example too.
sys.path.insert(0, str(EXAMPLE))
import stubs as _stubs  # noqa: E402

_stubs.install()


def bin_dir() -> Path:
    """Where the example binaries and ``grpc-router`` are."""
    if os.environ.get("ROUTER_BIN_DIR"):
        return Path(os.environ["ROUTER_BIN_DIR"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug"


class Process:
    """A child process whose first stdout line was read."""

    def __init__(self, name: str, args: List[str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        binary = bin_dir() / args[0]
        if not binary.exists():
            raise RuntimeError(
                f"{binary} does not exist: build it with "
                f"`cargo build -p myservice --bins -p grpc-router` or set ROUTER_BIN_DIR"
            )
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(binary), *args[1:]],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            stdin=subprocess.DEVNULL,
        )
        lines: "queue.Queue[Optional[bytes]]" = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            line = None
        if line is None:
            self.stop()
            raise RuntimeError(f"{name} did not start; its log:\n{self.log.read_text(errors='replace')}")
        self.first_line = line.decode().strip()

    def stop(self, signal_name: str = "TERM", timeout: float = 15) -> int:
        """Signals the process and waits for it; kills it if it lingers."""
        if self.proc.poll() is None:
            if signal_name == "INT":
                self.proc.send_signal(2)
            elif signal_name == "KILL":
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log_file.closed:
            self._log_file.close()
        return self.proc.returncode


#: The routers the end-to-end tests run against: the example's compiled
#: Greeter router (``router``) and the ``grpc-router`` daemon, which learns
#: every service from its registrations.
ROUTER_KINDS = ("compiled", "daemon")


@dataclass(frozen=True)
class Router:
    """One router under test: where clients call and where bridges register
    (one address for the compiled router; two listeners for the daemon)."""

    kind: str
    #: ``host:port`` of the clients' listener.
    clients: str
    #: ``host:port`` of the registrations' listener.
    registrations: str
    #: The process, to stop, signal or kill it.
    process: "Process" = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.clients


#: The router settings the tests use, as one keyword each.
_FLAGS = {
    "strategy": "--strategy",
    "heartbeat_interval_ms": "--heartbeat-interval-ms",
    "heartbeat_timeout_ms": "--heartbeat-timeout-ms",
    "register_token": "--register-token",
    "max_message_size": "--max-message-size",
    "max_concurrent_calls": "--max-concurrent-calls",
    "concurrency_queue_ms": "--concurrency-queue-ms",
}


#: Settings only the daemon's configuration has: ``wait_for_instance``
#: (a duration, e.g. ``"30s"``: calls wait for an instance).
_DAEMON_ONLY = ("wait_for_instance",)


def daemon_config(
    clients: str,
    registrations: str,
    strategy: Optional[str] = None,
    heartbeat_interval_ms: Optional[int] = None,
    heartbeat_timeout_ms: Optional[int] = None,
    register_token: Optional[str] = None,
    tls: Optional[Tuple[Path, Path]] = None,
    max_message_size: int = 20 * 1024 * 1024,
    max_concurrent_calls: Optional[int] = None,
    concurrency_queue_ms: Optional[int] = None,
    wait_for_instance: Optional[str] = None,
) -> str:
    """A ``router.toml`` for ``grpc-router serve`` with the settings the
    example router takes as flags."""
    lines = [
        'router_id = "test-daemon"',
        "[clients]",
        f'address = "{clients}"',
        # The tests read the admin service where they call (loopback only).
        "serve_admin = true",
        "[registrations]",
        f'address = "{registrations}"',
    ]
    if register_token is not None:
        digest = hashlib.sha256(register_token.encode()).hexdigest()
        lines.append(f'tokens_sha256 = ["{digest}"]')
    if tls is not None:
        cert, key = tls
        lines.append(f'tls = {{ cert = "{cert}", key = "{key}" }}')
    lines += ["[shutdown]", 'grace = "5s"', "[log]", 'level = "info"', "[defaults]"]
    lines.append(f"max_request_message_bytes = {max_message_size}")
    if strategy is not None:
        lines.append(f'strategy = "{strategy}"')
    if heartbeat_interval_ms is not None:
        lines.append(f'heartbeat_interval = "{heartbeat_interval_ms}ms"')
    if heartbeat_timeout_ms is not None:
        lines.append(f'heartbeat_timeout = "{heartbeat_timeout_ms}ms"')
    if max_concurrent_calls is not None:
        lines.append(f"max_concurrent_calls = {max_concurrent_calls}")
    if concurrency_queue_ms is not None:
        lines.append(f'concurrency_queue = {{ timeout = "{concurrency_queue_ms}ms" }}')
    if wait_for_instance is not None:
        lines.append(f'wait_for_instance = "{wait_for_instance}"')
    return "\n".join(lines) + "\n"


class Fleet:
    """Starts routers (of the test's kind) and Rust instances for one test
    and stops them after."""

    def __init__(self, log_dir: Path, kind: str = "compiled") -> None:
        self.log_dir = log_dir
        self.kind = kind
        self.processes: List[Process] = []

    def router(
        self,
        listen: Optional[Router] = None,
        name: str = "router",
        tls: Optional[Tuple[Path, Path]] = None,
        **settings: Any,
    ) -> Router:
        """Starts a router of the fleet's kind (``listen``: on the addresses
        of an earlier one, a restart). ``settings``: ``strategy``,
        ``heartbeat_interval_ms``, ``heartbeat_timeout_ms``, ``register_token``,
        ``max_message_size`` (request messages, default 20 MiB),
        ``max_concurrent_calls``, ``concurrency_queue_ms``, and for the
        daemon ``wait_for_instance``;
        ``tls``: a certificate and key for the registrations (and, on the
        compiled router, the clients) listener."""
        unknown = set(settings) - set(_FLAGS) - set(_DAEMON_ONLY)
        if unknown:
            raise TypeError(f"unknown router settings {sorted(unknown)}")
        if self.kind != "daemon" and set(settings) & set(_DAEMON_ONLY):
            raise TypeError(f"{sorted(set(settings) & set(_DAEMON_ONLY))}: daemon settings only")
        name = f"{name}-{self.kind}-{len(self.processes)}"
        if self.kind == "daemon":
            config = self.log_dir / f"{name}.toml"
            config.write_text(
                daemon_config(
                    listen.clients if listen else "127.0.0.1:0",
                    listen.registrations if listen else "127.0.0.1:0",
                    tls=tls,
                    **settings,
                )
            )
            process = Process(name, ["grpc-router", "serve", "--config", str(config)], self.log_dir)
            self.processes.append(process)
            words = dict(w.split("=", 1) for w in process.first_line.split()[1:] if "=" in w)
            return Router("daemon", words["clients"], words["registrations"], process)
        args = ["router", "--listen", listen.clients if listen else "127.0.0.1:0"]
        args += ["--max-message-size", str(settings.pop("max_message_size", 20 * 1024 * 1024))]
        for key, value in settings.items():
            args += [_FLAGS[key], str(value)]
        if tls is not None:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        process = Process(name, args, self.log_dir)
        self.processes.append(process)
        address = process.first_line.removeprefix("listening on ")
        return Router("compiled", address, address, process)

    def rust_instance(self, router: Router, instance_id: str, *flags: str) -> Process:
        """Starts the example Rust instance registered with ``router``."""
        process = Process(
            instance_id,
            ["instance", "--router", f"http://{router.registrations}", "--id", instance_id, *flags],
            self.log_dir,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture(params=ROUTER_KINDS)
def router_kind(request: Any) -> str:
    """Each end-to-end test runs once against each kind of router."""
    return str(request.param)


@pytest.fixture
def fleet(tmp_path: Path, router_kind: str) -> Iterator[Fleet]:
    """Routers (of the test's kind) and Rust instances, stopped when the test ends."""
    fleet = Fleet(tmp_path, router_kind)
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def daemon_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet of ``grpc-router`` daemons, for tests only the daemon can pass
    (services it learns, reflection built from registrations)."""
    fleet = Fleet(tmp_path, "daemon")
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def router(fleet: Fleet) -> Router:
    """One router of the test's kind."""
    return fleet.router()


@pytest.fixture(scope="session")
def router_pb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``myservice_router_pb2`` (``GreeterRouterFrame``, ``GreeterBridgeFrame``),
    compiled from the checked-in generated router proto; its import
    ``router.v1.router_pb2`` is then in ``sys.modules``. The generator's
    ``pinned_tags`` golden output (method tags up to 536870911) is compiled
    and imported too, for the golden frame vectors that use it."""
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("router_pb")
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    pinned = ROOT / "protoc-gen-router/tests/golden/pinned_tags"
    args = [
        "protoc",
        f"-I{ROOT / 'examples/myservice/gen'}",
        f"-I{ROOT / 'examples/myservice/proto'}",
        f"-I{pinned / 'expected'}",
        f"-I{pinned / 'input'}",
        f"-I{ROOT / 'protoc-gen-router/proto'}",
        f"-I{wkt}",
        f"--python_out={out}",
        "router/v1/router.proto",
        "myservice/v1/myservice_router.proto",
        "pinned/v1/pinned.proto",
        "pinned/v1/pinned_router.proto",
    ]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    try:
        importlib.import_module("pinned.v1.pinned_router_pb2")
        return importlib.import_module("myservice.v1.myservice_router_pb2")
    finally:
        sys.path.remove(str(out))
