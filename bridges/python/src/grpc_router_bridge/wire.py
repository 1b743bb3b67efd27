"""The register-stream frames, encoded and decoded by hand.

Every generated ``<Service>RouterFrame`` / ``<Service>BridgeFrame`` is a
``oneof`` with fixed field numbers (see ``proto/router/v1/router.proto``). The
typed payload arms (``<Service>Call`` / ``<Service>Reply``) hold ``call_id = 1``
and one ``oneof method`` arm whose field number is the method's tag. A
message-typed arm is wire-identical to a ``bytes`` field with the same number,
so the bridge handles payloads as raw bytes and hands them to the servicer's
own deserializer: no generated code for the router proto is needed, and the
same codec serves every service.

The envelope messages are small and flat, so they are written and read here
directly (as the Rust runtime's ``wire.rs`` does) instead of through protobuf
classes. Decoders never raise anything but :class:`WireError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

#: A metadata value: ``str`` for ordinary keys, ``bytes`` for ``-bin`` keys.
MetadataValue = Union[str, bytes]
#: Metadata as ordered ``(key, value)`` pairs; a key may repeat.
MetadataList = List[Tuple[str, MetadataValue]]

_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5

# Router -> bridge frame fields.
ROUTER_WELCOME = 1
ROUTER_START = 2
ROUTER_CALL = 3
ROUTER_HALF_CLOSE = 4
ROUTER_CANCEL = 5
ROUTER_WINDOW_UPDATE = 6
ROUTER_PING = 7
ROUTER_GO_AWAY = 8
ROUTER_CHUNK = 9
ROUTER_PEERS = 10

#: The trailer of the ALREADY_EXISTS status a router refuses a second
#: registration of a bridge with (its ``Hello.registered_with`` lists the
#: router's id); its value is that id.
DUPLICATE_TRAILER = "router-duplicate"

# Bridge -> router frame fields.
BRIDGE_HELLO = 1
BRIDGE_HEADERS = 2
BRIDGE_REPLY = 3
BRIDGE_TRAILERS = 4
BRIDGE_WINDOW_UPDATE = 5
BRIDGE_HEARTBEAT = 6
BRIDGE_DRAIN = 7
BRIDGE_CHUNK = 8
BRIDGE_PONG = 9

#: ``router.v1.ProtocolVersion.PROTOCOL_VERSION_1``.
PROTOCOL_VERSION_1 = 1
#: ``router.v1.ServingStatus`` values.
SERVING = 1
NOT_SERVING = 2


class WireError(ValueError):
    """A frame could not be decoded; the message says what is wrong."""


# --- encoding ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _uint(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _varint(value) if value else b""


def _bytes(number: int, value: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(value)) + value if value else b""


def _str(number: int, value: str) -> bytes:
    return _bytes(number, value.encode("utf-8"))


def _message(number: int, body: bytes) -> bytes:
    """A message-typed field, written even when empty (oneof arms must be)."""
    return _key(number, _LEN) + _varint(len(body)) + body


def encode_metadata(entries: MetadataList) -> bytes:
    """The body of a ``router.v1.Metadata`` holding ``entries``."""
    out = bytearray()
    for key, value in entries:
        entry = _str(1, key)
        if isinstance(value, (bytes, bytearray, memoryview)):
            entry += _message(3, bytes(value))
        else:
            entry += _message(2, str(value).encode("utf-8"))
        out += _message(1, entry)
    return bytes(out)


@dataclass(frozen=True)
class MethodDescription:
    """``router.v1.MethodDescription``: one method as ``Hello.description`` lists it."""

    name: str
    path: str
    tag: int
    #: ``router.v1.MethodKind`` (1 unary ... 4 bidi streaming).
    kind: int
    #: Field numbers from the request message to its routing key.
    route_key: Tuple[int, ...] = ()
    idempotent: bool = False


def encode_description(
    name: str,
    methods: List[MethodDescription],
    default_strategy: str,
    file_descriptor_set: bytes,
) -> bytes:
    """The body of a ``router.v1.ServiceDescription``, byte for byte what the
    Rust bridge's prost encoding of the same values gives (fields in number
    order, ``route_key`` packed, defaults omitted)."""
    out = bytearray(_str(1, name))
    for m in methods:
        body = _str(1, m.name) + _str(2, m.path) + _uint(3, m.tag) + _uint(4, m.kind)
        if m.route_key:
            body += _bytes(5, b"".join(_varint(n) for n in m.route_key))
        body += _uint(6, 1 if m.idempotent else 0)
        out += _message(2, body)
    out += _str(3, default_strategy)
    out += _bytes(4, file_descriptor_set)
    return bytes(out)


@dataclass
class Hello:
    """``router.v1.Hello``: the bridge's first frame."""

    instance_id: str
    service: str
    labels: Dict[str, str] = field(default_factory=dict)
    weight: int = 1
    max_concurrent_calls: int = 0
    routing_keys: List[str] = field(default_factory=list)
    initial_window: int = 256 * 1024
    max_frame_size: int = 128 * 1024
    max_message_size: int = 4 * 1024 * 1024
    protocol_version: int = PROTOCOL_VERSION_1
    #: The bridge's random id, the same in all its ``Hello``s: its reconnect
    #: replaces its own stale registration, another process with the same
    #: instance id is refused with ALREADY_EXISTS.
    incarnation: str = ""
    #: The encoded ``router.v1.ServiceDescription`` (:func:`encode_description`):
    #: what the instance serves, which a learning router (the daemon) needs
    #: from a service's first registration.
    description: bytes = b""
    #: Whether the bridge takes ``Peers`` frames (it follows a router fleet);
    #: a router sends none to a bridge that leaves it unset.
    discovery: bool = False
    #: The router ids of a fleet this bridge holds a registration with already
    #: (a listed router refuses the registration, keeping the live one).
    registered_with: List[str] = field(default_factory=list)

    def encode(self) -> bytes:
        """The whole ``<Service>BridgeFrame`` carrying this ``Hello``."""
        body = bytearray(_uint(1, self.protocol_version))
        body += _str(2, self.instance_id)
        body += _str(3, self.service)
        for key, value in sorted(self.labels.items()):
            body += _message(4, _str(1, key) + _str(2, value))
        body += _uint(5, self.weight)
        body += _uint(6, self.max_concurrent_calls)
        for key in self.routing_keys:
            body += _message(7, key.encode("utf-8"))
        body += _uint(8, self.initial_window)
        body += _uint(9, self.max_frame_size)
        body += _uint(10, min(self.max_message_size, 0xFFFFFFFF))
        if self.description:
            body += _message(11, self.description)
        body += _str(12, self.incarnation)
        body += _uint(13, int(self.discovery))
        for router_id in self.registered_with:
            body += _message(14, router_id.encode("utf-8"))
        return _message(BRIDGE_HELLO, bytes(body))


def encode_headers(call_id: int, metadata: MetadataList) -> bytes:
    """A ``Headers`` frame: the call's response headers."""
    return _message(BRIDGE_HEADERS, _uint(1, call_id) + _message(2, encode_metadata(metadata)))


def encode_reply(call_id: int, tag: int, message: bytes) -> bytes:
    """A ``Reply`` frame: one whole response message under the method's tag."""
    return _message(BRIDGE_REPLY, _uint(1, call_id) + _message(tag, message))


def encode_trailers(
    call_id: int,
    code: int,
    message: str = "",
    details: bytes = b"",
    metadata: Optional[MetadataList] = None,
    not_started: bool = False,
) -> bytes:
    """A ``Trailers`` frame: the end of a call with its status."""
    body = _uint(1, call_id) + _uint(2, code) + _str(3, message) + _bytes(4, details)
    if metadata:
        body += _message(5, encode_metadata(metadata))
    body += _uint(6, 1 if not_started else 0)
    return _message(BRIDGE_TRAILERS, body)


def encode_window_update(call_id: int, increment: int) -> bytes:
    """A ``WindowUpdate`` frame returning credit for a call's requests."""
    return _message(BRIDGE_WINDOW_UPDATE, _uint(1, call_id) + _uint(2, increment))


def encode_heartbeat(active_calls: int, serving: bool, routers: int = 0) -> bytes:
    """A ``Heartbeat`` frame with the instance's load, serving state and how
    many routers it is registered with."""
    status = SERVING if serving else NOT_SERVING
    return _message(
        BRIDGE_HEARTBEAT,
        _uint(1, min(active_calls, 0xFFFFFFFF)) + _uint(2, status) + _uint(3, min(routers, 0xFFFFFFFF)),
    )


def encode_drain(reason: str) -> bytes:
    """A ``Drain`` frame: route no new calls here."""
    return _message(BRIDGE_DRAIN, _str(1, reason))


def encode_chunk(call_id: int, data: bytes, last: bool) -> bytes:
    """A ``MessageChunk`` frame: one piece of a large response message."""
    return _message(BRIDGE_CHUNK, _uint(1, call_id) + _bytes(2, data) + _uint(3, 1 if last else 0))


def encode_pong(nonce: int) -> bytes:
    """A ``Pong`` frame answering a ``Ping``."""
    return _message(BRIDGE_PONG, _uint(1, nonce))


# --- decoding ---------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & ((1 << 64) - 1), pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def fields(buf: bytes) -> List[Tuple[int, int, Union[int, bytes]]]:
    """Splits a message into ``(number, wire_type, value)`` triples: ints for
    varints, bytes for length-delimited fields; fixed-width fields are skipped.
    """
    out: List[Tuple[int, int, Union[int, bytes]]] = []
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
            out.append((number, wire_type, value))
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise WireError(f"field {number} runs past the end of the frame")
            out.append((number, wire_type, buf[pos : pos + length]))
            pos += length
        elif wire_type == _I64:
            pos += 8
        elif wire_type == _I32:
            pos += 4
        else:
            raise WireError(f"unexpected wire type {wire_type} (groups are not used in frames)")
        if pos > end:
            raise WireError("truncated frame")
    return out


def _text(value: Union[int, bytes], what: str) -> str:
    if not isinstance(value, bytes):
        raise WireError(f"{what} is not length-delimited")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireError(f"{what} is not valid UTF-8: {e}") from None


def _int(value: Union[int, bytes], what: str) -> int:
    if not isinstance(value, int):
        raise WireError(f"{what} is not a varint")
    return value


def _blob(value: Union[int, bytes], what: str) -> bytes:
    if not isinstance(value, bytes):
        raise WireError(f"{what} is not length-delimited")
    return value


def decode_metadata(buf: bytes) -> MetadataList:
    """The entries of a ``router.v1.Metadata`` body, in order."""
    entries: MetadataList = []
    for number, _, value in fields(buf):
        if number != 1:
            continue
        key = ""
        item: MetadataValue = ""
        for n, _, v in fields(_blob(value, "Metadata.entries")):
            if n == 1:
                key = _text(v, "MetadataEntry.key")
            elif n == 2:
                item = _text(v, "MetadataEntry.ascii")
            elif n == 3:
                item = _blob(v, "MetadataEntry.binary")
        entries.append((key, item))
    return entries


@dataclass
class RouterPeer:
    """``router.v1.RouterPeer``: one router replica of a fleet."""

    router_id: str = ""
    address: str = ""


@dataclass
class Welcome:
    """``router.v1.Welcome``: the registration is accepted."""

    protocol_version: int = 0
    router_id: str = ""
    initial_window: int = 0
    max_frame_size: int = 0
    heartbeat_interval_ms: int = 0
    heartbeat_timeout_ms: int = 0
    #: The router replicas of its fleet (itself included); empty without one.
    peers: List[RouterPeer] = field(default_factory=list)


@dataclass
class Peers:
    """``router.v1.Peers``: the router's fleet changed (sent only to
    bridges whose ``Hello`` set ``discovery``)."""

    peers: List[RouterPeer] = field(default_factory=list)


@dataclass
class CallStart:
    """``router.v1.CallStart``: a new call."""

    call_id: int = 0
    method_tag: int = 0
    path: str = ""
    metadata: MetadataList = field(default_factory=list)
    timeout_micros: int = 0
    kind: int = 0
    peer: str = ""
    local: str = ""
    #: The client's TLS certificates (DER, its own first) when the router
    #: terminated TLS with client authentication; empty otherwise.
    peer_certificates: List[bytes] = field(default_factory=list)


@dataclass
class Payload:
    """One whole request message of a call (a ``<Service>Call`` frame)."""

    call_id: int
    tag: int
    message: bytes


@dataclass
class HalfClose:
    """The client sent its last request."""

    call_id: int = 0


@dataclass
class Cancel:
    """The client cancelled the call or its deadline passed."""

    call_id: int = 0
    code: int = 0
    reason: str = ""


@dataclass
class WindowUpdate:
    """Credit returned for a call's responses."""

    call_id: int = 0
    increment: int = 0


@dataclass
class Ping:
    """A liveness probe."""

    nonce: int = 0


@dataclass
class GoAway:
    """The router closes this registration (or acknowledges a drain)."""

    reason: str = ""
    refused: bool = False


@dataclass
class Chunk:
    """A piece of a large request message."""

    call_id: int = 0
    data: bytes = b""
    last: bool = False


RouterFrame = Union[
    Welcome, CallStart, Payload, HalfClose, Cancel, WindowUpdate, Ping, GoAway, Chunk, Peers
]


def _decode_peer(body: bytes) -> RouterPeer:
    p = RouterPeer()
    for n, _, v in fields(body):
        if n == 1:
            p.router_id = _text(v, "RouterPeer.router_id")
        elif n == 2:
            p.address = _text(v, "RouterPeer.address")
    return p


def _decode_peers(body: bytes) -> Peers:
    p = Peers()
    for n, _, v in fields(body):
        if n == 1:
            p.peers.append(_decode_peer(_blob(v, "Peers.peers")))
    return p


def _decode_welcome(body: bytes) -> Welcome:
    w = Welcome()
    for n, _, v in fields(body):
        if n == 1:
            w.protocol_version = _int(v, "Welcome.protocol_version")
        elif n == 2:
            w.router_id = _text(v, "Welcome.router_id")
        elif n == 3:
            w.initial_window = _int(v, "Welcome.initial_window")
        elif n == 4:
            w.max_frame_size = _int(v, "Welcome.max_frame_size")
        elif n == 5:
            w.heartbeat_interval_ms = _int(v, "Welcome.heartbeat_interval_ms")
        elif n == 6:
            w.heartbeat_timeout_ms = _int(v, "Welcome.heartbeat_timeout_ms")
        elif n == 7:
            w.peers.append(_decode_peer(_blob(v, "Welcome.peers")))
    return w


def _decode_start(body: bytes) -> CallStart:
    s = CallStart()
    for n, _, v in fields(body):
        if n == 1:
            s.call_id = _int(v, "CallStart.call_id")
        elif n == 2:
            s.method_tag = _int(v, "CallStart.method_tag")
        elif n == 3:
            s.path = _text(v, "CallStart.path")
        elif n == 4:
            s.metadata = decode_metadata(_blob(v, "CallStart.metadata"))
        elif n == 5:
            s.timeout_micros = _int(v, "CallStart.timeout_micros")
        elif n == 6:
            s.kind = _int(v, "CallStart.kind")
        elif n == 7:
            s.peer = _text(v, "CallStart.peer")
        elif n == 8:
            s.local = _text(v, "CallStart.local")
        elif n == 9:
            s.peer_certificates.append(_blob(v, "CallStart.peer_certificates"))
    return s


def _decode_payload(body: bytes) -> Payload:
    call_id = 0
    arm: Optional[Tuple[int, bytes]] = None
    for n, wire_type, v in fields(body):
        if n == 1 and wire_type == _VARINT:
            call_id = _int(v, "call_id")
        elif n != 1 and wire_type == _LEN:
            arm = (n, _blob(v, "payload"))
    if arm is None:
        raise WireError(f"payload frame for call {call_id} carries no message")
    return Payload(call_id, arm[0], arm[1])


def _decode_call_id(body: bytes, what: str) -> int:
    call_id = 0
    for n, _, v in fields(body):
        if n == 1:
            call_id = _int(v, f"{what}.call_id")
    return call_id


def _decode_cancel(body: bytes) -> Cancel:
    c = Cancel()
    for n, _, v in fields(body):
        if n == 1:
            c.call_id = _int(v, "Cancel.call_id")
        elif n == 2:
            code = _int(v, "Cancel.code")
            c.code = code - (1 << 64) if code >= 1 << 63 else code
        elif n == 3:
            c.reason = _text(v, "Cancel.reason")
    return c


def _decode_window(body: bytes) -> WindowUpdate:
    w = WindowUpdate()
    for n, _, v in fields(body):
        if n == 1:
            w.call_id = _int(v, "WindowUpdate.call_id")
        elif n == 2:
            w.increment = _int(v, "WindowUpdate.increment")
    return w


def _decode_ping(body: bytes) -> Ping:
    p = Ping()
    for n, _, v in fields(body):
        if n == 1:
            p.nonce = _int(v, "Ping.nonce")
    return p


def _decode_go_away(body: bytes) -> GoAway:
    g = GoAway()
    for n, _, v in fields(body):
        if n == 1:
            g.reason = _text(v, "GoAway.reason")
        elif n == 2:
            g.refused = bool(_int(v, "GoAway.refused"))
    return g


def _decode_chunk(body: bytes) -> Chunk:
    c = Chunk()
    for n, _, v in fields(body):
        if n == 1:
            c.call_id = _int(v, "MessageChunk.call_id")
        elif n == 2:
            c.data = _blob(v, "MessageChunk.data")
        elif n == 3:
            c.last = bool(_int(v, "MessageChunk.last"))
    return c


def decode_router_frame(buf: bytes) -> RouterFrame:
    """Decodes one ``<Service>RouterFrame``; the last oneof arm wins."""
    arm: Optional[Tuple[int, bytes]] = None
    for n, wire_type, v in fields(buf):
        if wire_type == _LEN:
            arm = (n, _blob(v, "frame"))
    if arm is None:
        raise WireError("frame carries no known frame kind (empty oneof)")
    number, body = arm
    if number == ROUTER_WELCOME:
        return _decode_welcome(body)
    if number == ROUTER_START:
        return _decode_start(body)
    if number == ROUTER_CALL:
        return _decode_payload(body)
    if number == ROUTER_HALF_CLOSE:
        return HalfClose(_decode_call_id(body, "HalfClose"))
    if number == ROUTER_CANCEL:
        return _decode_cancel(body)
    if number == ROUTER_WINDOW_UPDATE:
        return _decode_window(body)
    if number == ROUTER_PING:
        return _decode_ping(body)
    if number == ROUTER_GO_AWAY:
        return _decode_go_away(body)
    if number == ROUTER_CHUNK:
        return _decode_chunk(body)
    if number == ROUTER_PEERS:
        return _decode_peers(body)
    raise WireError(f"frame carries no known frame kind (field {number})")
