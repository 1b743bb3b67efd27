"""A Python instance of ``myservice.v1.Greeter`` behind a grpc-router router.

``GreeterServicer`` is an ordinary ``grpc.aio`` servicer, the same as one served
with ``grpc.aio.server()``: nothing in it knows about routers. It behaves like
the Rust example's ``GreeterImpl`` (``examples/myservice/src/greeter.rs``),
including its two test hooks: request metadata ``x-echo: 1`` copies the
request's ``x-*`` metadata into the response headers, and a ``name`` of
``fail:<code>`` fails the call with that status code and the message
``requested failure``.

Run it (a router on 127.0.0.1:50051, see the top-level README)::

    python examples/python-greeter/greeter.py --router http://127.0.0.1:50051 --id py-a

It prints ``registered as py-a`` once registered; Ctrl-C drains and leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any, AsyncIterator, Dict, List, Tuple

import grpc

import stubs

stubs.install()

from google.protobuf import empty_pb2  # noqa: E402
from myservice.v1 import myservice_pb2, myservice_pb2_grpc  # noqa: E402
from myservice.v1 import myservice_router_bridge  # noqa: E402

import grpc_router_bridge  # noqa: E402

#: The status message of a failure requested with ``name: "fail:<code>"``.
REQUESTED_FAILURE = "requested failure"


def echoed(context: Any) -> List[Tuple[str, Any]]:
    """The response headers for the call: its ``x-`` metadata when it carries
    ``x-echo: 1``, nothing otherwise."""
    metadata = context.invocation_metadata() or ()
    if not any(key == "x-echo" and value == "1" for key, value in metadata):
        return []
    return [(key, value) for key, value in metadata if key.startswith("x-")]


async def fail_if_requested(name: str, context: Any) -> None:
    """Aborts with the status ``name`` asks for (``fail:<code>``), if any."""
    if not name.startswith("fail:"):
        return
    code = name[len("fail:") :].strip()
    statuses: Dict[int, grpc.StatusCode] = {s.value[0]: s for s in grpc.StatusCode}
    if code.isdigit() and 1 <= int(code) <= 16:
        await context.abort(statuses[int(code)], REQUESTED_FAILURE)
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"`fail:` needs a status code from 1 to 16, got {code!r}"
    )


class GreeterServicer(myservice_pb2_grpc.GreeterServicer):
    """Answers every method and says which instance it is."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    async def SayHello(self, request: Any, context: Any) -> Any:
        await context.send_initial_metadata(echoed(context))
        await fail_if_requested(request.name, context)
        return myservice_pb2.HelloReply(
            message=f"Hello, {request.name}!", instance_id=self.instance_id, payload=request.payload
        )

    async def StreamGreetings(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await context.send_initial_metadata(echoed(context))
        await fail_if_requested(request.name, context)
        for i in range(request.count):
            yield myservice_pb2.HelloReply(
                message=f"Hello #{i}, {request.name}!",
                instance_id=self.instance_id,
                payload=bytes(request.payload_size),
            )

    async def Sum(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        await context.send_initial_metadata(echoed(context))
        total = count = 0
        async for number in request_iterator:
            total += number.value
            count += 1
        return myservice_pb2.SumReply(total=total, count=count, instance_id=self.instance_id)

    async def Chat(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        await context.send_initial_metadata(echoed(context))
        async for message in request_iterator:
            yield myservice_pb2.ChatMessage(text=f"{message.text} (from {self.instance_id})", seq=message.seq)

    async def WhoAmI(self, request: empty_pb2.Empty, context: Any) -> Any:
        await context.send_initial_metadata(echoed(context))
        return myservice_pb2.InstanceInfo(instance_id=self.instance_id)


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router", action="append", dest="routers", metavar="URL",
                        help="router endpoint, repeatable (default http://127.0.0.1:50051)")
    parser.add_argument("--id", default="py-instance", help="instance id")
    parser.add_argument("--label", action="append", default=[], metavar="K=V", help="label, repeatable")
    parser.add_argument("--weight", type=int, default=1, help="weight for the weighted strategy")
    parser.add_argument("--token", default=os.environ.get("GRPC_ROUTER_TOKEN"),
                        help="registration token, sent as `authorization: Bearer <token>` "
                             "(default: $GRPC_ROUTER_TOKEN)")
    parser.add_argument("--max-message-size", type=int, default=4 * 1024 * 1024,
                        help="largest request message in bytes")
    parser.add_argument("--resolve-every-secs", type=float, metavar="SECS",
                        help="resolve each router's host name to all its addresses every SECS "
                             "seconds and register with each (a router fleet behind one name)")
    parser.add_argument("--direct", metavar="ADDR",
                        help="serve the same servicer with an ordinary grpc.aio server on ADDR "
                             "instead of registering (for comparison); prints `listening on ADDR`")
    args = parser.parse_args(argv)
    for label in args.label:
        if "=" not in label:
            parser.error(f"--label {label!r}: expected key=value")
    return args


async def serve_direct(address: str, instance_id: str) -> None:
    """Serves the servicer as grpcio would without a router, until SIGINT/SIGTERM."""
    import signal

    server = grpc.aio.server()
    myservice_pb2_grpc.add_GreeterServicer_to_server(GreeterServicer(instance_id), server)
    port = server.add_insecure_port(address)
    await server.start()
    print(f"listening on {address.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(5)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.direct:
        asyncio.run(serve_direct(args.direct, args.id))
        return 0
    options = grpc_router_bridge.BridgeOptions(
        endpoints=args.routers or ["http://127.0.0.1:50051"],
        instance_id=args.id,
        labels=dict(label.split("=", 1) for label in args.label),
        weight=args.weight,
        max_message_size=args.max_message_size,
        resolve_interval=args.resolve_every_secs,
        register_metadata=[("authorization", f"Bearer {args.token}")] if args.token else [],
    )
    asyncio.run(
        grpc_router_bridge.serve(
            myservice_router_bridge.GREETER,
            myservice_pb2_grpc.add_GreeterServicer_to_server,
            GreeterServicer(args.id),
            options,
            on_registered=lambda: print(f"registered as {args.id}", flush=True),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
