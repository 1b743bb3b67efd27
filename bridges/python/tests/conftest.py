"""Fixtures for the end-to-end tests: the Greeter stubs, the Rust example
binaries (``router``, ``instance``) and helpers that start them on loopback
port 0 and wait for their first stdout line (no sleeps).

The binaries come from ``$ROUTER_BIN_DIR`` (set by ``.ci/python-bridge.sh``),
else ``$CARGO_TARGET_DIR/debug``, else the repository's ``target/debug``.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Optional

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
    """Where the example binaries are."""
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
                f"{binary} does not exist: build it with `cargo build -p myservice-example --bins` "
                f"or set ROUTER_BIN_DIR"
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
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode


class Fleet:
    """Starts routers and Rust instances for one test and stops them after."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: List[Process] = []

    def router(
        self, *flags: str, listen: str = "127.0.0.1:0", name: str = "router", max_message_size: int = 20 * 1024 * 1024
    ) -> str:
        """Starts a router taking request messages of up to ``max_message_size``
        bytes; returns its ``host:port``."""
        args = ["router", "--listen", listen, "--max-message-size", str(max_message_size), *flags]
        process = Process(f"{name}-{len(self.processes)}", args, self.log_dir)
        self.processes.append(process)
        return process.first_line.removeprefix("listening on ")

    def rust_instance(self, router: str, instance_id: str) -> Process:
        """Starts the example Rust instance registered with ``router``."""
        process = Process(instance_id, ["instance", "--router", f"http://{router}", "--id", instance_id], self.log_dir)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Routers and Rust instances, stopped when the test ends."""
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def router(fleet: Fleet) -> str:
    """One router's ``host:port``."""
    return fleet.router()
