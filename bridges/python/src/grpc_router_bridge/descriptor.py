"""What the bridge knows about a routed service: the service descriptor that
``protoc-gen-router`` generates with ``python=true`` (``<file>_router_bridge.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


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
    """A routed service: its name, register path and methods."""

    #: The fully qualified service name, for example ``myservice.v1.Greeter``.
    name: str
    #: The path of the register call, ``/myservice.v1.GreeterRouter/Register``.
    register_path: str
    #: The methods, in proto order.
    methods: Tuple[MethodDescriptor, ...]
    #: The ``(router.v1.default_strategy)`` option, for information
    #: (``round_robin``, ``power_of_two_choices``, ``weighted``, ``consistent_hash``).
    default_strategy: str = "power_of_two_choices"
    _by_tag: Dict[int, MethodDescriptor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_tag = {m.tag: m for m in self.methods}
        if len(by_tag) != len(self.methods):
            raise ValueError(f"service `{self.name}` has two methods with one tag")
        object.__setattr__(self, "_by_tag", by_tag)

    def method_by_tag(self, tag: int) -> Optional[MethodDescriptor]:
        """The method whose oneof tag is ``tag``."""
        return self._by_tag.get(tag)
