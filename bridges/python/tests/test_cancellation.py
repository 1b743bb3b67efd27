"""A client's reset reaches a Python handler as a cancellation, never as the
end of its input: a handler that took a reset for a half-close would finish
its work and answer OK to a client that gave up on it. (As grpc.aio does, the
cancel first ends a read the handler waits on, then cancels its task on the
loop's next turn: the handler below takes that turn before it counts its
input as complete.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, AsyncIterator, Dict, Tuple

import greeter
import grpc
from harness import TIMEOUT, client, python_instance, run
from myservice.v1 import myservice_pb2 as pb

#: Client resets per method kind.
RUNS = 200


class Recording(greeter.GreeterServicer):
    """Sum and Chat read their whole input, then answer; each reports when it
    has read the first two messages and how its input ended."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self.received: "asyncio.Queue[str]" = asyncio.Queue()
        self.ended: "asyncio.Queue[Tuple[str, str]]" = asyncio.Queue()

    async def _consume(self, requests: AsyncIterator[Any], context: Any) -> None:
        call = dict(context.invocation_metadata()).get("x-call", "?")
        read = 0
        try:
            async for _ in requests:
                read += 1
                if read == 2:
                    self.received.put_nowait(call)
            # As on a grpc.aio server, a cancel ends a pending read first and
            # cancels the handler's task on the loop's next turn: a handler
            # that goes on after its input ended learns it then. After a real
            # half-close it goes on.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        except (asyncio.CancelledError, grpc.RpcError):
            # A cancelled task, or the bridge's error for reading after the
            # call ended.
            self.ended.put_nowait((call, "cancelled"))
            raise
        except Exception as e:
            self.ended.put_nowait((call, f"error {type(e).__name__}"))
            raise
        self.ended.put_nowait((call, "end of input"))

    async def Sum(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        await self._consume(request_iterator, context)
        return pb.SumReply(instance_id=self.instance_id)

    async def Chat(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        await self._consume(request_iterator, context)
        return
        yield  # an async generator, as a bidi handler is


async def _cancel_repeatedly(router: str, method: str) -> Dict[str, int]:
    servicer = Recording("py")
    ends: Counter[str] = Counter()
    async with python_instance([router], servicer, "py"), client(router) as stub:
        for n in range(RUNS):
            call_id = str(n)
            still_sending = asyncio.Event()

            async def requests() -> AsyncIterator[Any]:
                for i in (1, 2):
                    yield pb.Number(value=i) if method == "Sum" else pb.ChatMessage(text="hi", seq=i)
                await still_sending.wait()

            call = getattr(stub, method)(requests(), metadata=(("x-call", call_id),), timeout=TIMEOUT)
            while (await asyncio.wait_for(servicer.received.get(), TIMEOUT)) != call_id:
                pass
            # The client gives up with its request stream open: RST_STREAM.
            call.cancel()
            while True:
                ended, how = await asyncio.wait_for(servicer.ended.get(), TIMEOUT)
                if ended == call_id:
                    break
            ends[how] += 1
            still_sending.set()
    print(f"{method}: {RUNS} client resets, handler ends: {dict(ends)}")
    return dict(ends)


def test_a_client_reset_of_a_client_stream_reaches_the_handler_as_a_cancel_never_as_end_of_input(router: str) -> None:
    ends = run(_cancel_repeatedly(router, "Sum"))
    assert "end of input" not in ends, ends


def test_a_client_reset_of_a_bidi_stream_reaches_the_handler_as_a_cancel_never_as_end_of_input(router: str) -> None:
    ends = run(_cancel_repeatedly(router, "Chat"))
    assert "end of input" not in ends, ends
