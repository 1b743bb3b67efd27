"""Puts the Greeter's Python modules on ``sys.path``.

``myservice_pb2`` / ``myservice_pb2_grpc`` are generated from
``examples/myservice/proto`` with ``grpcio-tools`` on first use (into
``$GREETER_STUBS_DIR``, default ``examples/python-greeter/.stubs``), and the
checked-in ``examples/myservice/gen`` holds ``myservice_router_bridge.py``, the
descriptor ``protoc-gen-router`` emits with ``python=true``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "examples" / "myservice" / "proto"
GEN = ROOT / "examples" / "myservice" / "gen"
# admin.proto: the router's admin service, for tools (and the bridge's tests);
# inventory.proto: the second example service (a Python-only service in the
# bridge's tests with the daemon).
FILES = (
    "myservice/v1/myservice.proto",
    "inventory/v1/inventory.proto",
    "router/v1/options.proto",
    "router/v1/admin.proto",
)


def generate(out: Path) -> None:
    """Generates the message and grpcio modules into ``out``."""
    from grpc_tools import protoc  # grpcio-tools
    import grpc_tools

    out.mkdir(parents=True, exist_ok=True)
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        # router/v1/options.proto lives in the generator, admin.proto in the runtime.
        f"-I{ROOT / 'protoc-gen-router' / 'proto'}",
        f"-I{ROOT / 'grpc-router-runtime' / 'proto'}",
        f"-I{wkt}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"grpc_tools.protoc failed for {FILES}")


def install() -> None:
    """Generates the stubs if needed and puts them and ``gen`` on ``sys.path``."""
    out = Path(os.environ.get("GREETER_STUBS_DIR", Path(__file__).parent / ".stubs"))
    if not all((out / f.replace(".proto", "_pb2.py")).exists() for f in FILES):
        generate(out)
    for path in (str(out), str(GEN)):
        if path not in sys.path:
            sys.path.insert(0, path)
