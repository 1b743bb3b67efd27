"""What the bridge knows about a routed service: the service descriptor that
``protoc-gen-router`` generates with ``python=true`` (``<file>_router_bridge.py``).
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from . import wire

#: The balancing strategies by the names the ``grpc-router`` daemon uses
#: (``strategy = "..."`` in ``router.toml``) and ``Hello.description`` carries.
STRATEGIES = ("round-robin", "p2c", "weighted", "consistent-hash")

#: Names older generated modules wrote, deprecated; each maps to its daemon name.
_OLD_STRATEGY_NAMES = {
    "round_robin": "round-robin",
    "power_of_two_choices": "p2c",
    "consistent_hash": "consistent-hash",
}


class MethodKind(enum.IntEnum):
    """The streaming shape of a method (``router.v1.MethodKind``)."""

    UNARY = 1
    SERVER_STREAMING = 2
    CLIENT_STREAMING = 3
    BIDI_STREAMING = 4

    @property
    def request_streaming(self) -> bool:
        """Whether the client sends a stream of requests."""
        return self in (MethodKind.CLIENT_STREAMING, MethodKind.BIDI_STREAMING)

    @property
    def response_streaming(self) -> bool:
        """Whether the server sends a stream of responses."""
        return self in (MethodKind.SERVER_STREAMING, MethodKind.BIDI_STREAMING)


@dataclass(frozen=True)
class RouteKey:
    """A method's ``(router.v1.route_key)``: the request field hashed by the
    consistent-hash strategy."""

    #: The path as written in the option, for example ``user.id``.
    path: str
    #: The field numbers along the path, outermost first.
    field_numbers: Tuple[int, ...]


@dataclass(frozen=True)
class MethodDescriptor:
    """One method of a routed service."""

    #: The proto name, for example ``SayHello``.
    name: str
    #: The gRPC path, for example ``/myservice.v1.Greeter/SayHello``.
    path: str
    #: The method's oneof tag in ``<Service>Call`` / ``<Service>Reply``.
    tag: int
    #: The streaming shape.
    kind: MethodKind
    #: The request type, fully qualified (``myservice.v1.HelloRequest``).
    input_type: str
    #: The response type, fully qualified.
    output_type: str
    #: The ``(router.v1.route_key)`` option, if any.
    route_key: Optional[RouteKey] = None
    #: The ``(router.v1.idempotent)`` option.
    idempotent: bool = False


@dataclass(frozen=True)
class ServiceDescriptor:
    """A routed service: its name, register path, methods and the encoded
    ``FileDescriptorSet`` of its ``.proto`` files, as ``protoc-gen-router``
    generates it; the bridge sends all of it in ``Hello.description``, so a
    router that learns services (the ``grpc-router`` daemon) can route it and
    serve reflection for it."""

    #: The fully qualified service name, for example ``myservice.v1.Greeter``.
    name: str
    #: The path of the register call, ``/myservice.v1.GreeterRouter/Register``.
    register_path: str
    #: The methods, in proto order.
    methods: Tuple[MethodDescriptor, ...]
    #: The ``(router.v1.default_strategy)`` option, by the daemon's name:
    #: ``round-robin``, ``p2c``, ``weighted`` or ``consistent-hash``. The old
    #: names (``round_robin``, ``power_of_two_choices``, ``consistent_hash``)
    #: are accepted with a ``DeprecationWarning``.
    default_strategy: str = "p2c"
    #: The encoded ``google.protobuf.FileDescriptorSet`` of the service's file
    #: and its imports (for reflection on the router); empty in modules
    #: generated before it was embedded.
    file_descriptor_set: bytes = field(default=b"", repr=False)
    _by_tag: Dict[int, MethodDescriptor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_tag = {m.tag: m for m in self.methods}
        if len(by_tag) != len(self.methods):
            raise ValueError(f"service `{self.name}` has two methods with one tag")
        object.__setattr__(self, "_by_tag", by_tag)
        strategy = self.default_strategy
        if strategy in _OLD_STRATEGY_NAMES:
            warnings.warn(
                f"strategy name `{strategy}` is deprecated: use `{_OLD_STRATEGY_NAMES[strategy]}` "
                f"(regenerate the module with a current protoc-gen-router)",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "default_strategy", _OLD_STRATEGY_NAMES[strategy])
        elif strategy not in STRATEGIES:
            raise ValueError(
                f"service `{self.name}`: unknown strategy `{strategy}`; expected one of {', '.join(STRATEGIES)}"
            )

    def method_by_tag(self, tag: int) -> Optional[MethodDescriptor]:
        """The method whose oneof tag is ``tag``."""
        return self._by_tag.get(tag)

    def describe(self) -> bytes:
        """The encoded ``router.v1.ServiceDescription`` the bridge sends in
        every ``Hello``: the same bytes the Rust bridge sends for the same
        service (``ServiceDescriptor::describe``)."""
        return wire.encode_description(
            self.name,
            [
                wire.MethodDescription(
                    name=m.name,
                    path=m.path,
                    tag=m.tag,
                    kind=int(m.kind),
                    route_key=m.route_key.field_numbers if m.route_key is not None else (),
                    idempotent=m.idempotent,
                )
                for m in self.methods
            ],
            self.default_strategy,
            self.file_descriptor_set,
        )
