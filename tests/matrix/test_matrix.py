"""The deployment matrix: the ``grpc-router`` daemon as an operator runs it.

One daemon process, one Rust instance (the example ``instance`` binary) and
one Python instance (``examples/python-greeter/greeter.py``) of
``myservice.v1.Greeter``, with and without registration tokens, client JWTs
and traffic policies. Each combination goes through:

1. every method kind (and a failing call) on each instance, pinned with
   ``x-router-instance``;
2. a reload (``SIGHUP``) that changes the configuration, then every method
   kind again (with policies: a call queued behind a held one under a
   method's ``max_concurrent_calls``, across the two instances);
3. ``SIGTERM`` while a client holds a server stream it stopped reading: the
   daemon exits within ``shutdown.grace`` + 1 s, and the stalled call ends
   with a status instead of hanging;
4. a restart on the same ports while the instances are stopped (``SIGSTOP``):
   the service answers UNAVAILABLE (retryable), then, once the instances
   resume and re-register, every method kind again.

Every call has a deadline, so a hang fails the test instead of stalling CI.
Run by ``.ci/matrix.sh`` (which builds the binaries and provides the venv).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import grpc
import grpc.aio
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ROUTER_BIN_DIR", ROOT / "target" / "debug"))
GREETER_PY = ROOT / "examples" / "python-greeter" / "greeter.py"
sys.path.insert(0, str(GREETER_PY.parent))

import stubs  # noqa: E402  (examples/python-greeter/stubs.py)

stubs.install()

from google.protobuf import empty_pb2  # noqa: E402
from myservice.v1 import myservice_pb2 as pb  # noqa: E402
from myservice.v1 import myservice_pb2_grpc as pb_grpc  # noqa: E402

SERVICE = "myservice.v1.Greeter"
#: The bound on every wait and the deadline of every call.
TIMEOUT = 20.0
#: `[shutdown] grace` of every daemon here.
GRACE = 2.0
TOKEN = "matrix-registration-token"
JWT_SECRET = "matrix-jwt-secret-of-32-bytes!!!"
ISSUER = "https://auth.matrix.test"
AUDIENCE = "grpc-router"


# --- processes ---------------------------------------------------------------


class Process:
    """A child process whose stdout and stderr lines are collected, so a test
    can wait for a line instead of sleeping."""

    def __init__(self, name: str, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.lines: List[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_line(self, matches: Callable[[str], bool], what: str, start: int = 0) -> str:
        """The first line from index `start` on that `matches`, waiting up to TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if matches(line):
                        return line
                if self.proc.poll() is not None and not self._changed.wait(0.2):
                    raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before {what}:\n{self.log()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no {what} within {TIMEOUT}s:\n{self.log()}")
                self._changed.wait(left)

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines[-60:])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(TIMEOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- credentials ----------------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jwt_hs256(claims: Dict[str, Any]) -> str:
    """An HS256 JWT signed with JWT_SECRET (what an identity provider issues)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = _b64(hmac.new(JWT_SECRET.encode(), header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def client_token() -> str:
    now = int(time.time())
    return jwt_hs256({"iss": ISSUER, "aud": AUDIENCE, "sub": "matrix-client", "role": "greeter",
                      "iat": now, "nbf": now - 5, "exp": now + 600})


# --- the combinations -----------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    tokens: bool = False
    jwt: bool = False
    policies: bool = False

    @property
    def id(self) -> str:
        parts = [name for name, on in (("tokens", self.tokens), ("jwt", self.jwt), ("policies", self.policies)) if on]
        return "+".join(parts) or "plain"


COMBINATIONS = [
    Combination(),
    Combination(tokens=True),
    Combination(jwt=True),
    Combination(tokens=True, jwt=True, policies=True),
]


@dataclass
class Ports:
    clients: int = field(default_factory=free_port)
    registrations: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)


def config(combo: Combination, ports: Ports, state: Path, strategy: str) -> str:
    """The daemon's configuration for `combo`; `strategy` is what a reload changes."""
    lines = [
        'router_id = "matrix"',
        "[clients]",
        f'address = "127.0.0.1:{ports.clients}"',
        "[registrations]",
        f'address = "127.0.0.1:{ports.registrations}"',
    ]
    if combo.tokens:
        lines.append(f'tokens_sha256 = ["{hashlib.sha256(TOKEN.encode()).hexdigest()}"]')
    lines += [
        "[admin]",
        f'address = "127.0.0.1:{ports.admin}"',
        "[shutdown]",
        f'grace = "{GRACE:g}s"',
        "[state]",
        f'file = "{state}"',
        "[log]",
        'level = "info"',
    ]
    if combo.jwt:
        lines += [
            "[auth.jwt]",
            f'issuer = "{ISSUER}"',
            f'audience = "{AUDIENCE}"',
            'hmac_secret_env = "MATRIX_JWT_SECRET"',
        ]
    lines += [f'[services."{SERVICE}"]', f'strategy = "{strategy}"']
    if combo.policies:
        lines += [
            "rate_limit = { per_second = 10000, burst = 1000 }",
            'client_rate_limit = { key = "peer", per_second = 10000, burst = 1000 }',
            "instance_rate_limit = { per_second = 10000, burst = 1000 }",
            'retry_policy = { max_attempts = 3, initial_backoff = "10ms", max_backoff = "100ms", '
            'backoff_multiplier = 2.0, retryable_status_codes = ["UNAVAILABLE"] }',
            'default_deadline = "10s"',
            "max_concurrent_calls = 1000",
            f'concurrency_queue = {{ timeout = "{TIMEOUT:g}s", max_waiting = 10 }}',
        ]
    if combo.jwt:
        lines += [f'[[services."{SERVICE}".allow]]', 'claims = { role = "greeter" }']
    if combo.policies:
        lines += [f'[services."{SERVICE}".methods.Sum]', "max_concurrent_calls = 1"]
    return "\n".join(lines) + "\n"


class Daemon:
    """A `grpc-router serve` process on fixed ports (so a restart keeps them)."""

    def __init__(self, combo: Combination, ports: Ports, workdir: Path) -> None:
        self.combo = combo
        self.ports = ports
        self.path = workdir / "router.toml"
        self.state = workdir / "router-state"
        self.process: Optional[Process] = None

    def write(self, strategy: str) -> None:
        self.path.write_text(config(self.combo, self.ports, self.state, strategy))

    def start(self) -> None:
        self.process = Process(
            "grpc-router",
            [str(BIN / "grpc-router"), "serve", "--config", str(self.path)],
            env={"MATRIX_JWT_SECRET": JWT_SECRET},
        )
        self.process.wait_line(lambda l: l.startswith("listening "), "listening line")

    @property
    def proc(self) -> Process:
        assert self.process is not None
        return self.process

    def reload(self, strategy: str) -> None:
        mark = len(self.proc.lines)
        self.write(strategy)
        self.proc.signal(signal.SIGHUP)
        line = self.proc.wait_line(lambda l: "reload" in l, "reload outcome", start=mark)
        assert "refused" not in line, f"the reload was refused: {line}"

    def terminate(self) -> float:
        """SIGTERM; the seconds until the process exited."""
        started = time.monotonic()
        self.proc.signal(signal.SIGTERM)
        try:
            self.proc.proc.wait(GRACE + 10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon still runs {GRACE + 10}s after SIGTERM:\n{self.proc.log()}")
        return time.monotonic() - started

    @property
    def clients(self) -> str:
        return f"127.0.0.1:{self.ports.clients}"

    @property
    def registrations(self) -> str:
        return f"http://127.0.0.1:{self.ports.registrations}"

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.ports.admin}"


def start_instances(daemon: Daemon, combo: Combination) -> List[Process]:
    env = {"GRPC_ROUTER_TOKEN": TOKEN} if combo.tokens else {}
    rust = Process("rust-instance", [str(BIN / "instance"), "--router", daemon.registrations, "--id", "rust-1"], env)
    python = Process("python-instance",
                     [sys.executable, str(GREETER_PY), "--router", daemon.registrations, "--id", "py-1"], env)
    for instance, id_ in ((rust, "rust-1"), (python, "py-1")):
        instance.wait_line(lambda l, id_=id_: l == f"registered as {id_}", "registration")
    return [rust, python]


# --- calls ------------------------------------------------------------------------


def metadata(combo: Combination, instance: Optional[str]) -> List[Any]:
    md = []
    if instance:
        md.append(("x-router-instance", instance))
    if combo.jwt:
        md.append(("authorization", f"Bearer {client_token()}"))
    return md


async def every_kind(stub: Any, combo: Combination, instance: str) -> None:
    """Every method kind on `instance`, and a failing call: the answers are the
    instance's own."""
    md = metadata(combo, instance)
    reply = await stub.SayHello(pb.HelloRequest(name="matrix"), metadata=md, timeout=TIMEOUT)
    assert (reply.message, reply.instance_id) == ("Hello, matrix!", instance)

    replies = [r async for r in stub.StreamGreetings(pb.StreamRequest(name="m", count=5), metadata=md, timeout=TIMEOUT)]
    assert [r.instance_id for r in replies] == [instance] * 5

    async def numbers() -> Any:
        for n in (1, 2, 3, 4):
            yield pb.Number(value=n)

    total = await stub.Sum(numbers(), metadata=md, timeout=TIMEOUT)
    assert (total.total, total.count, total.instance_id) == (10, 4, instance)

    async def chat() -> Any:
        for seq in range(3):
            yield pb.ChatMessage(text=f"m{seq}", seq=seq)

    echoed = [m async for m in stub.Chat(chat(), metadata=md, timeout=TIMEOUT)]
    assert [(m.text, m.seq) for m in echoed] == [(f"m{s} (from {instance})", s) for s in range(3)]

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.SayHello(pb.HelloRequest(name="fail:5"), metadata=md, timeout=TIMEOUT)
    assert (failed.value.code(), failed.value.details()) == (grpc.StatusCode.NOT_FOUND, "requested failure")


async def both_instances(daemon: Daemon, combo: Combination) -> None:
    async with grpc.aio.insecure_channel(daemon.clients) as channel:
        stub = pb_grpc.GreeterStub(channel)
        for instance in ("rust-1", "py-1"):
            await every_kind(stub, combo, instance)
        if combo.jwt:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SayHello(pb.HelloRequest(name="x"), timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def wait_serving(daemon: Daemon, combo: Combination) -> None:
    """Waits until both instances answer through `daemon` (they re-register
    after a restart at their own back-off)."""
    deadline = time.monotonic() + TIMEOUT
    async with grpc.aio.insecure_channel(daemon.clients) as channel:
        stub = pb_grpc.GreeterStub(channel)
        for instance in ("rust-1", "py-1"):
            while True:
                try:
                    await stub.WhoAmI(empty_pb2.Empty(),
                                      metadata=metadata(combo, instance), timeout=TIMEOUT)
                    break
                except grpc.aio.AioRpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, f"{instance}: {e.code()} {e.details()}"
                    assert time.monotonic() < deadline, f"{instance} did not come back within {TIMEOUT}s"
                    await asyncio.sleep(0.05)  # polling a remote state, not synchronising


# --- the test ------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBINATIONS, ids=lambda c: c.id)
def test_daemon_with_rust_and_python_instances(combo: Combination, tmp_path: Path) -> None:
    ports = Ports()
    daemon = Daemon(combo, ports, tmp_path)
    daemon.write("round-robin")
    daemon.start()
    instances: List[Process] = []
    try:
        instances = start_instances(daemon, combo)

        # 1. every method kind on each instance
        asyncio.run(both_instances(daemon, combo))

        # 2. a reload that changes the configuration; registrations stay
        daemon.reload("p2c")
        asyncio.run(both_instances(daemon, combo))
        if combo.policies:
            asyncio.run(queued_behind_a_held_call(daemon, combo))

        # 3. SIGTERM while a client holds a stream it stopped reading
        stalled_code = asyncio.run(sigterm_with_stalled_client(daemon, combo))
        assert stalled_code in (grpc.StatusCode.UNAVAILABLE,), stalled_code

        # 4. a restart while the instances are stopped: retryable, then served
        for instance in instances:
            instance.signal(signal.SIGSTOP)
        daemon.start()
        asyncio.run(unavailable_until_registered(daemon, combo))
        for instance in instances:
            instance.signal(signal.SIGCONT)
        asyncio.run(wait_serving(daemon, combo))
        asyncio.run(both_instances(daemon, combo))
    finally:
        for instance in instances:
            instance.stop()
        if daemon.process is not None:
            daemon.process.stop()


def sum_limit(daemon: Daemon) -> Dict[str, Any]:
    """The `Sum` concurrency limit as `/status.json` reports it."""
    with urllib.request.urlopen(f"http://{daemon.admin}/status.json", timeout=TIMEOUT) as response:
        status = json.load(response)
    service = next(s for s in status["services"] if s["name"] == SERVICE)
    return next(l for l in service["concurrency_limits"] if l["method"] == "Sum")


async def queued_behind_a_held_call(daemon: Daemon, combo: Combination) -> None:
    """`Sum` may run one call at a time (`max_concurrent_calls = 1`, with a
    queue): a call to the Rust instance waits while one to the Python instance
    is held open, then runs as soon as that one ends."""
    async with grpc.aio.insecure_channel(daemon.clients) as channel:
        stub = pb_grpc.GreeterStub(channel)
        held = stub.Sum(metadata=metadata(combo, "py-1"), timeout=TIMEOUT)
        await held.write(pb.Number(value=1))
        deadline = time.monotonic() + TIMEOUT
        while sum_limit(daemon)["in_flight"] != 1:
            assert time.monotonic() < deadline, "the held call never took its slot"
            await asyncio.sleep(0.02)  # polling a remote state, not synchronising

        async def numbers() -> Any:
            for n in (2, 3):
                yield pb.Number(value=n)

        queued = asyncio.ensure_future(stub.Sum(numbers(), metadata=metadata(combo, "rust-1"), timeout=TIMEOUT))
        while sum_limit(daemon)["waiting"] != 1:
            assert time.monotonic() < deadline, "the second call never queued"
            assert not queued.done(), "the second call ran beside the held one"
            await asyncio.sleep(0.02)  # polling a remote state, not synchronising
        await held.done_writing()
        first = await held
        assert (first.total, first.instance_id) == (1, "py-1")
        second = await asyncio.wait_for(queued, TIMEOUT)
        assert (second.total, second.instance_id) == (5, "rust-1")
        limit = sum_limit(daemon)
        assert (limit["in_flight"], limit["waiting"]) == (0, 0), limit


async def sigterm_with_stalled_client(daemon: Daemon, combo: Combination) -> grpc.StatusCode:
    """Opens a large server stream, reads one message, stops reading, sends
    SIGTERM: the daemon exits within grace + 1 s; the stream's status (read
    afterwards) is returned."""
    async with grpc.aio.insecure_channel(daemon.clients) as channel:
        stub = pb_grpc.GreeterStub(channel)
        call = stub.StreamGreetings(pb.StreamRequest(name="big", count=1_000_000, payload_size=4096),
                                    metadata=metadata(combo, "rust-1"), timeout=60)
        await call.read()  # the stream is open; now nobody reads
        exited_after = await asyncio.get_running_loop().run_in_executor(None, daemon.terminate)
        assert exited_after <= GRACE + 1.0, f"the daemon took {exited_after:.2f}s to exit after SIGTERM (grace {GRACE}s)"
        async def drain() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                while await call.read() is not grpc.aio.EOF:
                    pass

        await asyncio.wait_for(drain(), TIMEOUT)
        return await call.code()


async def unavailable_until_registered(daemon: Daemon, combo: Combination) -> None:
    """Right after a restart, before any instance is back, the service that
    was routed answers UNAVAILABLE (retryable), not UNIMPLEMENTED."""
    async with grpc.aio.insecure_channel(daemon.clients) as channel:
        stub = pb_grpc.GreeterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await stub.SayHello(pb.HelloRequest(name="early"), metadata=metadata(combo, None), timeout=TIMEOUT)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE, down.value.details()
