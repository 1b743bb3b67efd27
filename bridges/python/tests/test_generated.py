"""The plugin's ``python=true`` output (the golden cases and the example's
checked-in module) imports and describes its services correctly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import ROOT

from grpc_router_bridge import MethodKind, ServiceDescriptor

GOLDEN = sorted((ROOT / "protoc-gen-router" / "tests" / "golden").glob("*/expected/**/*_router_bridge.py"))
EXAMPLE = ROOT / "examples" / "myservice" / "gen" / "myservice" / "v1" / "myservice_router_bridge.py"


def load(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"generated_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", [*GOLDEN, EXAMPLE], ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_descriptor_modules_import_and_export_service_descriptors(path: Path) -> None:
    module = load(path)
    names = getattr(module, "__all__")
    assert names
    for name in names:
        service = getattr(module, name)
        assert isinstance(service, ServiceDescriptor)
        assert service.register_path == f"/{service.name}Router/Register"
        for method in service.methods:
            assert method.path == f"/{service.name}/{method.name}"
            assert method.tag >= 10


def test_the_example_descriptor_matches_the_greeter_proto() -> None:
    greeter = getattr(load(EXAMPLE), "GREETER")
    assert greeter.name == "myservice.v1.Greeter"
    kinds = {m.name: (m.tag, m.kind) for m in greeter.methods}
    assert kinds == {
        "SayHello": (10, MethodKind.UNARY),
        "StreamGreetings": (11, MethodKind.SERVER_STREAMING),
        "Sum": (12, MethodKind.CLIENT_STREAMING),
        "Chat": (13, MethodKind.BIDI_STREAMING),
        "WhoAmI": (14, MethodKind.UNARY),
    }
    say_hello = greeter.method_by_tag(10)
    assert say_hello is not None and say_hello.route_key is not None
    assert (say_hello.route_key.path, say_hello.route_key.field_numbers) == ("name", (1,))
    assert greeter.method_by_tag(14).idempotent


def test_the_golden_cases_are_found() -> None:
    # A moved folder must fail here, not leave the parametrised test above
    # with the example alone.
    assert GOLDEN, "no *_router_bridge.py under protoc-gen-router/tests/golden/*/expected"
