"""Sequential unary latency through the router to a Rust instance and to a
Python instance of the Greeter, side by side in one run.

Starts a router (the example's compiled ``router``, or with ``--router
daemon`` the ``grpc-router`` daemon), the Rust example ``instance`` and the
Python example (``examples/python-greeter/greeter.py``), each a separate
process on loopback, plus the same servicers without a router for reference:
the Rust ``GreeterImpl`` on a plain tonic server (``direct``) and the Python
servicer on a plain ``grpc.aio`` server. Then makes ``--calls`` sequential
``SayHello`` calls to each target (routed ones pinned with
``x-router-instance``) from one synchronous grpcio client, in alternating
rounds so machine noise hits every target alike. Prints p50/p99 per target,
what the hop adds for each language (routed minus direct) and the Python
bridge's cost over the Rust bridge (routed Python minus routed Rust).

    cargo build --release -p myservice --bins -p grpc-router
    python router-bench/python_bridge_latency.py --bin-dir target/release --calls 2000
    python router-bench/python_bridge_latency.py --bin-dir target/release --router daemon
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "python-greeter"
sys.path.insert(0, str(EXAMPLE))

import stubs  # noqa: E402

stubs.install()

import grpc  # noqa: E402
from myservice.v1 import myservice_pb2 as pb  # noqa: E402
from myservice.v1 import myservice_pb2_grpc as pb_grpc  # noqa: E402


def start(args: List[str], log: Path) -> Tuple[subprocess.Popen, str]:
    """Starts a process and returns it with its first stdout line."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "wb"), stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise SystemExit(f"{args[0]} did not start; see {log}")
    return proc, line


def percentile(samples: List[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug")
    parser.add_argument("--calls", type=int, default=2000, help="calls per target")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--router", choices=["compiled", "daemon"], default="compiled",
                        help="the example's compiled router or the grpc-router daemon")
    args = parser.parse_args()

    procs: List[subprocess.Popen] = []
    config_dir = tempfile.TemporaryDirectory()
    try:
        if args.router == "daemon":
            config = Path(config_dir.name) / "router.toml"
            config.write_text(
                '[clients]\naddress = "127.0.0.1:0"\n[registrations]\naddress = "127.0.0.1:0"\n'
                '[log]\nlevel = "warn"\n'
            )
            router, line = start([str(args.bin_dir / "grpc-router"), "serve", "--config", str(config)],
                                 args.log_dir / "bench-router.log")
            words = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
            address, registrations = words["clients"], words["registrations"]
        else:
            router, line = start([str(args.bin_dir / "router"), "--listen", "127.0.0.1:0"],
                                 args.log_dir / "bench-router.log")
            address = registrations = line.removeprefix("listening on ")
        procs.append(router)
        rust, _ = start([str(args.bin_dir / "instance"), "--router", f"http://{registrations}", "--id", "rust"],
                        args.log_dir / "bench-rust.log")
        procs.append(rust)
        python, _ = start([sys.executable, str(EXAMPLE / "greeter.py"), "--router", f"http://{registrations}",
                           "--id", "python"], args.log_dir / "bench-python.log")
        procs.append(python)
        direct, line = start([sys.executable, str(EXAMPLE / "greeter.py"), "--direct", "127.0.0.1:0", "--id", "direct"],
                             args.log_dir / "bench-direct.log")
        procs.append(direct)
        direct_address = line.removeprefix("listening on ")
        rust_direct, line = start([str(args.bin_dir / "direct"), "--listen", "127.0.0.1:0", "--id", "rust-direct"],
                                  args.log_dir / "bench-rust-direct.log")
        procs.append(rust_direct)
        rust_direct_address = line.removeprefix("listening on ")

        routed = pb_grpc.GreeterStub(grpc.insecure_channel(address))
        plain = pb_grpc.GreeterStub(grpc.insecure_channel(direct_address))
        plain_rust = pb_grpc.GreeterStub(grpc.insecure_channel(rust_direct_address))
        request = pb.HelloRequest(name="bench")
        targets = {
            "router -> Rust instance": (routed, (("x-router-instance", "rust"),), "rust"),
            "router -> Python instance": (routed, (("x-router-instance", "python"),), "python"),
            "Rust servicer on tonic, direct": (plain_rust, (), "rust-direct"),
            "Python servicer on grpc.aio, direct": (plain, (), "direct"),
        }
        samples: Dict[str, List[float]] = {name: [] for name in targets}
        for name, (stub, metadata, expected) in targets.items():  # warm up
            for _ in range(200):
                assert stub.SayHello(request, metadata=metadata, timeout=10).instance_id == expected
        per_round = max(1, args.calls // args.rounds)
        for _ in range(args.rounds):
            for name, (stub, metadata, _expected) in targets.items():
                for _ in range(per_round):
                    started = time.perf_counter()
                    stub.SayHello(request, metadata=metadata, timeout=10)
                    samples[name].append((time.perf_counter() - started) * 1e6)
    finally:
        config_dir.cleanup()
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"sequential unary SayHello through the {args.router} router, "
          f"{per_round * args.rounds} calls per target, one grpcio client")
    print(f"{'target':<40} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    stats = {}
    for name, values in samples.items():
        stats[name] = (percentile(values, 0.5), percentile(values, 0.99))
        print(f"{name:<40} {stats[name][0]:>9.0f} {stats[name][1]:>9.0f} {statistics.fmean(values):>9.0f}")
    rust_p50, rust_p99 = stats["router -> Rust instance"]
    py_p50, py_p99 = stats["router -> Python instance"]
    rust_direct_p50, rust_direct_p99 = stats["Rust servicer on tonic, direct"]
    py_direct_p50, py_direct_p99 = stats["Python servicer on grpc.aio, direct"]
    print(f"added by the hop, Rust bridge:   p50 {rust_p50 - rust_direct_p50:+.0f} us, "
          f"p99 {rust_p99 - rust_direct_p99:+.0f} us (routed Rust minus direct tonic)")
    print(f"added by the hop, Python bridge: p50 {py_p50 - py_direct_p50:+.0f} us, "
          f"p99 {py_p99 - py_direct_p99:+.0f} us (routed Python minus direct grpc.aio)")
    print(f"Python bridge over Rust bridge: p50 {py_p50 - rust_p50:+.0f} us, p99 {py_p99 - rust_p99:+.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
