"""The hand codec's behaviour beyond the bytes of the golden frame vectors
(``test_frame_vectors.py``, which hold every frame kind against protobuf's own
encoding): values clamped to their field's range, the empty payload oneof,
garbage raising only ``WireError``, and the ``Hello``'s service description as
the Rust bridge encodes it."""

from __future__ import annotations

import random
from typing import Any

import pytest

from grpc_router_bridge import wire


def test_hello_clamps_sizes_beyond_uint32_and_keeps_empty_label_values(router_pb: Any) -> None:
    hello = router_pb.GreeterBridgeFrame.FromString(
        wire.Hello(
            instance_id="py-a",
            service="myservice.v1.Greeter",
            labels={"zone": "eu", "tier": ""},
            max_message_size=1 << 40,
        ).encode()
    ).hello
    assert hello.max_message_size == 0xFFFFFFFF
    assert dict(hello.labels) == {"zone": "eu", "tier": ""}
    # The dataclass's defaults are what the bridge sends when not told otherwise.
    assert (hello.protocol_version, hello.weight) == (1, 1)
    assert (hello.initial_window, hello.max_frame_size, hello.max_message_size) == (256 * 1024, 128 * 1024, 0xFFFFFFFF)


def test_heartbeat_clamps_active_calls_beyond_uint32(router_pb: Any) -> None:
    beat = router_pb.GreeterBridgeFrame.FromString(wire.encode_heartbeat(1 << 40, True)).heartbeat
    assert (beat.active_calls, beat.status) == (0xFFFFFFFF, wire.SERVING)


def test_an_empty_payload_oneof_is_an_error_naming_the_call(router_pb: Any) -> None:
    frame = router_pb.GreeterRouterFrame(call=router_pb.GreeterCall(call_id=5)).SerializeToString()
    with pytest.raises(wire.WireError, match="call 5 carries no message"):
        wire.decode_router_frame(frame)


def test_garbage_raises_only_wire_errors() -> None:
    rng = random.Random(7)
    for length in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(length % 64))
        try:
            wire.decode_router_frame(data)
        except wire.WireError:
            pass


def test_the_hello_describes_the_service_as_the_rust_bridge_encodes_it(router_pb: Any) -> None:
    from google.protobuf import descriptor_pb2
    from myservice.v1 import myservice_router_bridge

    greeter = myservice_router_bridge.GREETER
    encoded = greeter.describe()
    frame = router_pb.GreeterBridgeFrame.FromString(
        wire.Hello(instance_id="py-a", service=greeter.name, description=encoded).encode()
    )
    description = frame.hello.description
    assert description.name == "myservice.v1.Greeter"
    assert description.default_strategy == "p2c"
    methods = [(m.name, m.path, m.tag, m.kind, list(m.route_key), m.idempotent) for m in description.methods]
    assert methods == [
        ("SayHello", "/myservice.v1.Greeter/SayHello", 10, 1, [1], False),
        ("StreamGreetings", "/myservice.v1.Greeter/StreamGreetings", 11, 2, [], False),
        ("Sum", "/myservice.v1.Greeter/Sum", 12, 3, [], False),
        ("Chat", "/myservice.v1.Greeter/Chat", 13, 4, [], False),
        ("WhoAmI", "/myservice.v1.Greeter/WhoAmI", 14, 1, [], True),
    ]
    # Field order, packed route keys and omitted defaults as prost writes
    # them: protobuf's own (deterministic) encoding gives the same bytes.
    assert description.SerializeToString(deterministic=True) == encoded
    files = descriptor_pb2.FileDescriptorSet.FromString(description.file_descriptor_set).file
    # The service's file after its imports, as the Rust glue's set has them.
    assert [f.name for f in files][-1] == "myservice/v1/myservice.proto"
    assert {"google/protobuf/empty.proto", "router/v1/options.proto"} <= {f.name for f in files}
    assert files[-1].service[0].name == "Greeter"
