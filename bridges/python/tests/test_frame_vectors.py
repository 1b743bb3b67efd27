"""The golden frame vectors of ``grpc-router-runtime/tests/frames``, which the Rust
codec's test (``grpc-router-runtime/tests/frame_vectors.rs``) reads too.

Each ``<direction>_<kind>[_<variant>].txtpb`` is one generated
``<Service>RouterFrame`` (``router_``) or ``<Service>BridgeFrame``
(``bridge_``) in protobuf text format, its message named by its
``# proto-message:`` line (the example's Greeter, or the generator's
``pinned_tags`` output for method tags up to 536870911), and the ``.bin`` next
to it its exact encoding. Here: Python protobuf encodes
the text to the ``.bin`` (deterministically: map entries sorted by key); the
bridge decodes every golden router frame to the values the text holds; and the
bridge's encoders, given the values a golden bridge frame's text holds, write
its ``.bin`` byte for byte. (The bridge only reads router frames and only
writes bridge frames.)

A ``.bin`` that differs from protobuf's encoding of its text is stale or wrong:
regenerate the files with
``UPDATE_GOLDEN=1 cargo test -p grpc-router-runtime --test frame_vectors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import pytest
from conftest import ROOT
from google.protobuf import descriptor_pool, message_factory, text_format

from grpc_router_bridge import wire

FRAMES = ROOT / "grpc-router-runtime" / "tests" / "frames"
ROUTER_VECTORS = sorted(FRAMES.glob("router_*.txtpb"))
BRIDGE_VECTORS = sorted(FRAMES.glob("bridge_*.txtpb"))
PROTO_MESSAGE = "# proto-message:"
REGENERATE = "regenerate with UPDATE_GOLDEN=1 cargo test -p grpc-router-runtime --test frame_vectors"


def _parse(router_pb: Any, path: Path) -> Any:
    """The frame ``path`` holds, as the generated message its
    ``# proto-message:`` line names (``router_pb`` has them imported)."""
    text = path.read_text(encoding="utf-8")
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(PROTO_MESSAGE)]
    assert names, f"{path} has no `{PROTO_MESSAGE} <package>.<Service>RouterFrame` line"
    suffix = "RouterFrame" if path.name.startswith("router_") else "BridgeFrame"
    assert names[0].endswith(suffix), f"{path} must hold a <Service>{suffix}, not {names[0]}"
    descriptor = descriptor_pool.Default().FindMessageTypeByName(names[0])
    message = message_factory.GetMessageClass(descriptor)()
    text_format.Parse(text, message)
    return message


def _golden(path: Path) -> bytes:
    binary = path.with_suffix(".bin")
    assert binary.exists(), f"golden frame {binary} is missing; {REGENERATE}"
    return binary.read_bytes()


def _metadata(metadata: Any) -> wire.MetadataList:
    out: wire.MetadataList = []
    for entry in metadata.entries:
        arm = entry.WhichOneof("value")
        out.append((entry.key, entry.binary if arm == "binary" else entry.ascii))
    return out


def _method(payload: Any) -> Tuple[int, bytes]:
    """The method arm of a ``GreeterCall`` / ``GreeterReply``: its tag and its
    message's encoding."""
    arm = payload.WhichOneof("method")
    assert arm is not None, "the payload frame's text sets no method arm"
    number = payload.DESCRIPTOR.fields_by_name[arm].number
    return number, getattr(payload, arm).SerializeToString(deterministic=True)


def _router_frame_values(frame: Any) -> wire.RouterFrame:
    """What ``wire.decode_router_frame`` must return for ``frame``."""
    kind = frame.WhichOneof("frame")
    arm = getattr(frame, kind)
    if kind == "welcome":
        return wire.Welcome(
            arm.protocol_version,
            arm.router_id,
            arm.initial_window,
            arm.max_frame_size,
            arm.heartbeat_interval_ms,
            arm.heartbeat_timeout_ms,
            [wire.RouterPeer(p.router_id, p.address) for p in arm.peers],
        )
    if kind == "start":
        return wire.CallStart(
            arm.call_id,
            arm.method_tag,
            arm.path,
            _metadata(arm.metadata),
            arm.timeout_micros,
            arm.kind,
            arm.peer,
            arm.local,
            list(arm.peer_certificates),
        )
    if kind == "call":
        tag, message = _method(arm)
        return wire.Payload(arm.call_id, tag, message)
    if kind == "half_close":
        return wire.HalfClose(arm.call_id)
    if kind == "cancel":
        return wire.Cancel(arm.call_id, arm.code, arm.reason)
    if kind == "window_update":
        return wire.WindowUpdate(arm.call_id, arm.increment)
    if kind == "ping":
        return wire.Ping(arm.nonce)
    if kind == "go_away":
        return wire.GoAway(arm.reason, arm.refused)
    if kind == "chunk":
        return wire.Chunk(arm.call_id, arm.data, arm.last)
    if kind == "peers":
        return wire.Peers([wire.RouterPeer(p.router_id, p.address) for p in arm.peers])
    raise AssertionError(f"router frame kind {kind!r} has no expectation here: add it to _router_frame_values")


def _encode_bridge_frame(frame: Any) -> bytes:
    """``frame``'s values written by the bridge's own encoders."""
    kind = frame.WhichOneof("frame")
    arm = getattr(frame, kind)
    if kind == "hello":
        description = b""
        if arm.HasField("description"):
            d = arm.description
            methods = [
                wire.MethodDescription(m.name, m.path, m.tag, m.kind, tuple(m.route_key), m.idempotent)
                for m in d.methods
            ]
            description = wire.encode_description(d.name, methods, d.default_strategy, d.file_descriptor_set)
        return wire.Hello(
            instance_id=arm.instance_id,
            service=arm.service,
            labels=dict(arm.labels),
            weight=arm.weight,
            max_concurrent_calls=arm.max_concurrent_calls,
            routing_keys=list(arm.routing_keys),
            initial_window=arm.initial_window,
            max_frame_size=arm.max_frame_size,
            max_message_size=arm.max_message_size,
            protocol_version=arm.protocol_version,
            incarnation=arm.incarnation,
            description=description,
            discovery=arm.discovery,
            registered_with=list(arm.registered_with),
        ).encode()
    if kind == "headers":
        return wire.encode_headers(arm.call_id, _metadata(arm.metadata))
    if kind == "reply":
        tag, message = _method(arm)
        return wire.encode_reply(arm.call_id, tag, message)
    if kind == "trailers":
        metadata = _metadata(arm.metadata) if arm.HasField("metadata") else None
        return wire.encode_trailers(arm.call_id, arm.code, arm.message, arm.details, metadata, arm.not_started)
    if kind == "window_update":
        return wire.encode_window_update(arm.call_id, arm.increment)
    if kind == "heartbeat":
        assert arm.status in (wire.SERVING, wire.NOT_SERVING), "the bridge reports serving or not serving"
        return wire.encode_heartbeat(arm.active_calls, arm.status == wire.SERVING, arm.routers)
    if kind == "drain":
        return wire.encode_drain(arm.reason)
    if kind == "chunk":
        return wire.encode_chunk(arm.call_id, arm.data, arm.last)
    if kind == "pong":
        return wire.encode_pong(arm.nonce)
    raise AssertionError(f"bridge frame kind {kind!r} has no encoder here: add it to _encode_bridge_frame")


def _ids(paths: List[Path]) -> List[str]:
    return [p.stem for p in paths]


@pytest.mark.parametrize("path", ROUTER_VECTORS + BRIDGE_VECTORS, ids=_ids(ROUTER_VECTORS + BRIDGE_VECTORS))
def test_protobuf_encodes_each_vectors_text_to_its_golden_bytes(router_pb: Any, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), f"{path} must start with a `#` comment saying what it shows"
    frame = _parse(router_pb, path)
    kind = frame.WhichOneof("frame")
    prefix = f"{path.name.split('_', 1)[0]}_{kind}"
    assert path.stem == prefix or path.stem.startswith(f"{prefix}_"), f"{path} holds a {kind!r} frame"
    encoded = frame.SerializeToString(deterministic=True)
    golden = _golden(path)
    assert encoded == golden, (
        f"golden frame {path.with_suffix('.bin')} differs from Python protobuf's encoding of {path}; {REGENERATE}\n"
        f"  protobuf: {encoded.hex(' ')}\n  golden:   {golden.hex(' ')}"
    )
    assert type(frame).FromString(golden) == frame


@pytest.mark.parametrize("path", ROUTER_VECTORS, ids=_ids(ROUTER_VECTORS))
def test_the_bridge_decodes_each_golden_router_frame_to_what_its_text_says(router_pb: Any, path: Path) -> None:
    frame = _parse(router_pb, path)
    assert wire.decode_router_frame(_golden(path)) == _router_frame_values(frame)


@pytest.mark.parametrize("path", BRIDGE_VECTORS, ids=_ids(BRIDGE_VECTORS))
def test_the_bridge_encodes_each_golden_bridge_frame_byte_for_byte(router_pb: Any, path: Path) -> None:
    frame = _parse(router_pb, path)
    golden = _golden(path)
    encoded = _encode_bridge_frame(frame)
    assert encoded == golden, (
        f"wire.py encodes {path} differently from golden frame {path.with_suffix('.bin')}\n"
        f"  wire.py: {encoded.hex(' ')}\n  golden:  {golden.hex(' ')}"
    )


def test_every_frame_kind_in_both_directions_has_a_vector(router_pb: Any) -> None:
    for message, paths in (
        (router_pb.GreeterRouterFrame, ROUTER_VECTORS),
        (router_pb.GreeterBridgeFrame, BRIDGE_VECTORS),
    ):
        kinds = {f.name for f in message.DESCRIPTOR.oneofs_by_name["frame"].fields}
        covered = {_parse(router_pb, p).WhichOneof("frame") for p in paths}
        assert kinds - covered == set(), f"{message.DESCRIPTOR.full_name} kinds without a vector in {FRAMES}"
