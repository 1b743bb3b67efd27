"""The hand codec against protobuf's own classes for the generated router
proto (``examples/myservice/gen``): frames the bridge writes parse as
``GreeterBridgeFrame``, frames protobuf writes as ``GreeterRouterFrame``
decode to the same values, and garbage raises only ``WireError``."""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from grpc_router_bridge import wire


@pytest.fixture(scope="module")
def router_pb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``myservice_router_pb2``, compiled from the checked-in router proto."""
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("router_pb")
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT / 'examples/myservice/gen'}",
        f"-I{ROOT / 'examples/myservice/proto'}",
        f"-I{ROOT / 'protoc-gen-router/proto'}",
        f"-I{wkt}",
        f"--python_out={out}",
        "router/v1/router.proto",
        "myservice/v1/myservice_router.proto",
    ]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("myservice.v1.myservice_router_pb2")
    finally:
        sys.path.remove(str(out))


def test_bridge_frames_parse_as_the_generated_bridge_frame(router_pb: Any) -> None:
    from myservice.v1 import myservice_pb2 as pb

    parse = router_pb.GreeterBridgeFrame.FromString
    hello = parse(
        wire.Hello(
            instance_id="py-a",
            service="myservice.v1.Greeter",
            labels={"zone": "eu", "tier": ""},
            weight=3,
            max_concurrent_calls=7,
            routing_keys=["k1", "k2"],
            max_message_size=1 << 40,
        ).encode()
    ).hello
    assert (hello.protocol_version, hello.instance_id, hello.service) == (1, "py-a", "myservice.v1.Greeter")
    assert dict(hello.labels) == {"zone": "eu", "tier": ""}
    assert (hello.weight, hello.max_concurrent_calls, list(hello.routing_keys)) == (3, 7, ["k1", "k2"])
    assert (hello.initial_window, hello.max_frame_size, hello.max_message_size) == (256 * 1024, 128 * 1024, 0xFFFFFFFF)

    headers = parse(wire.encode_headers(2**64 - 1, [("x-a", "1"), ("x-b-bin", b"\x00"), ("x-e", "")])).headers
    assert headers.call_id == 2**64 - 1
    assert [(e.key, e.WhichOneof("value"), getattr(e, e.WhichOneof("value"))) for e in headers.metadata.entries] == [
        ("x-a", "ascii", "1"),
        ("x-b-bin", "binary", b"\x00"),
        ("x-e", "ascii", ""),
    ]

    reply = pb.HelloReply(message="hi", instance_id="py-a")
    frame = parse(wire.encode_reply(9, 10, reply.SerializeToString()))
    assert frame.reply.call_id == 9 and frame.reply.say_hello == reply
    # A tag beyond one varint byte, and an empty message.
    assert parse(wire.encode_reply(9, 14, b"")).reply.WhichOneof("method") == "who_am_i"

    trailers = parse(wire.encode_trailers(5, -1, "bad", b"\x08\x05", [("x-t", "v")], not_started=True)).trailers
    assert (trailers.call_id, trailers.code, trailers.message, trailers.details) == (5, -1, "bad", b"\x08\x05")
    assert trailers.not_started and trailers.metadata.entries[0].key == "x-t"

    assert parse(wire.encode_window_update(3, 65536)).window_update.increment == 65536
    beat = parse(wire.encode_heartbeat(4, False)).heartbeat
    assert (beat.active_calls, beat.status) == (4, 2)
    assert parse(wire.encode_drain("bye")).drain.reason == "bye"
    chunk = parse(wire.encode_chunk(1, b"abc", True)).chunk
    assert (chunk.call_id, chunk.data, chunk.last) == (1, b"abc", True)
    assert parse(wire.encode_pong(77)).pong.nonce == 77


def test_router_frames_written_by_protobuf_decode_to_the_same_values(router_pb: Any) -> None:
    from myservice.v1 import myservice_pb2 as pb

    Frame = router_pb.GreeterRouterFrame
    router = sys.modules["router.v1.router_pb2"]

    welcome = wire.decode_router_frame(
        Frame(welcome=router.Welcome(protocol_version=1, router_id="r", initial_window=1000, max_frame_size=2048, heartbeat_interval_ms=10, heartbeat_timeout_ms=30)).SerializeToString()
    )
    assert welcome == wire.Welcome(1, "r", 1000, 2048, 10, 30)

    metadata = router.Metadata(
        entries=[router.MetadataEntry(key="x-a", ascii="1"), router.MetadataEntry(key="x-b-bin", binary=b"\xff")]
    )
    start = wire.decode_router_frame(
        Frame(start=router.CallStart(call_id=2**63, method_tag=11, path="/myservice.v1.Greeter/StreamGreetings", metadata=metadata, timeout_micros=5_000_000, kind=2, peer="127.0.0.1:9", local="127.0.0.1:1")).SerializeToString()
    )
    assert start == wire.CallStart(2**63, 11, "/myservice.v1.Greeter/StreamGreetings", [("x-a", "1"), ("x-b-bin", b"\xff")], 5_000_000, 2, "127.0.0.1:9", "127.0.0.1:1")

    request = pb.HelloRequest(name="Ada", payload=b"\x00" * 300)
    call = wire.decode_router_frame(Frame(call=router_pb.GreeterCall(call_id=4, say_hello=request)).SerializeToString())
    assert call == wire.Payload(4, 10, request.SerializeToString())
    empty = wire.decode_router_frame(Frame(call=router_pb.GreeterCall(call_id=4, who_am_i={})).SerializeToString())
    assert empty == wire.Payload(4, 14, b"")

    assert wire.decode_router_frame(Frame(half_close=router.HalfClose(call_id=8)).SerializeToString()) == wire.HalfClose(8)
    assert wire.decode_router_frame(Frame(cancel=router.Cancel(call_id=8, code=4, reason="late")).SerializeToString()) == wire.Cancel(8, 4, "late")
    assert wire.decode_router_frame(Frame(window_update=router.WindowUpdate(call_id=8, increment=9)).SerializeToString()) == wire.WindowUpdate(8, 9)
    assert wire.decode_router_frame(Frame(ping=router.Ping(nonce=3)).SerializeToString()) == wire.Ping(3)
    assert wire.decode_router_frame(Frame(go_away=router.GoAway(reason="bye", refused=True)).SerializeToString()) == wire.GoAway("bye", True)
    assert wire.decode_router_frame(Frame(chunk=router.MessageChunk(call_id=1, data=b"xy", last=True)).SerializeToString()) == wire.Chunk(1, b"xy", True)


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
