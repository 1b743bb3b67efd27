"""Per-call credit windows and chunking, as in the Rust runtime's ``flow.rs``.

The sender holds a :class:`SendCredit`: it may send a frame while its credit is
positive and subtracts the frame's payload size (so it overshoots by at most
one frame; the router allows exactly that). The receiver holds a
:class:`CreditReturn`: it counts bytes the application consumed and says when
a quarter of the window has piled up, worth a ``WindowUpdate``. A call that runs
out of credit waits alone; the register stream keeps flowing for the others.

Everything here runs on the bridge's event loop thread.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional


class CreditClosed(Exception):
    """The call ended while a sender waited for credit."""


class SendCredit:
    """The sending side's credit for one call and direction."""

    def __init__(self, initial: int) -> None:
        self.available = initial
        self._closed = False
        self._wakeup = asyncio.Event()

    def grant(self, increment: int) -> None:
        """Adds credit returned by the receiver and wakes a waiting sender."""
        self.available += increment
        if self.available > 0:
            self._wakeup.set()

    def consume(self, length: int) -> None:
        """Takes ``length`` bytes of credit; the caller has checked it is positive."""
        self.available -= length

    def close(self) -> None:
        """Wakes any waiter for good: the call is over."""
        self._closed = True
        self._wakeup.set()

    async def ready(self) -> None:
        """Waits until there is credit to send one frame; raises
        :class:`CreditClosed` once the call is over."""
        while True:
            if self._closed:
                raise CreditClosed()
            if self.available > 0:
                return
            self._wakeup.clear()
            await self._wakeup.wait()


class CreditReturn:
    """The receiving side's count of consumed bytes for one call and direction."""

    def __init__(self, window: int) -> None:
        self._pending = 0
        self._threshold = max(window // 4, 1)

    def consumed(self, length: int) -> Optional[int]:
        """Records ``length`` consumed bytes; returns the increment to send back
        now, if any."""
        self._pending += length
        if self._pending >= self._threshold:
            increment, self._pending = self._pending, 0
            return increment
        return None


class MessageTooLarge(Exception):
    """A chunked message outgrew the bridge's message size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request message of more than {limit} bytes, the limit is {limit} bytes")
        self.limit = limit


class Assembler:
    """Reassembles a chunked message, refusing to hold more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit

    def push(self, data: bytes, last: bool) -> Optional[bytes]:
        """Adds a chunk; returns the whole message after its last chunk."""
        if len(self._buf) + len(data) > self._limit:
            raise MessageTooLarge(self._limit)
        self._buf += data
        if not last:
            return None
        whole = bytes(self._buf)
        self._buf = bytearray()
        return whole


async def send_with_credit(
    credit: SendCredit,
    max_frame: int,
    message: bytes,
    emit_whole: Callable[[bytes], None],
    emit_chunk: Callable[[bytes, bool], None],
) -> None:
    """Sends ``message`` as credit allows: whole when it fits in ``max_frame``,
    otherwise in chunks of at most ``max_frame`` bytes, each sent once the
    credit is positive."""
    max_frame = max(max_frame, 1)
    if len(message) <= max_frame:
        await credit.ready()
        credit.consume(len(message))
        emit_whole(message)
        return
    view = memoryview(message)
    offset = 0
    while offset < len(message):
        await credit.ready()
        piece = bytes(view[offset : offset + max_frame])
        offset += len(piece)
        credit.consume(len(piece))
        emit_chunk(piece, offset >= len(message))
