"""Credit windows, credit return and chunking, alone (``flow.py``)."""

from __future__ import annotations

import asyncio
from typing import List, Tuple

import pytest

from grpc_router_bridge.flow import (
    Assembler,
    CreditClosed,
    CreditReturn,
    MessageTooLarge,
    SendCredit,
    send_with_credit,
)


def test_a_sender_waits_for_credit_and_wakes_on_a_grant() -> None:
    async def scenario() -> None:
        credit = SendCredit(10)
        await credit.ready()
        credit.consume(25)
        assert credit.available == -15
        waiter = asyncio.ensure_future(credit.ready())
        await asyncio.sleep(0)
        credit.grant(10)
        await asyncio.sleep(0)
        assert not waiter.done()  # still -5: no credit yet
        credit.grant(10)
        await asyncio.wait_for(waiter, 5)

    asyncio.run(scenario())


def test_closing_releases_a_waiting_sender() -> None:
    async def scenario() -> None:
        credit = SendCredit(0)
        waiter = asyncio.ensure_future(credit.ready())
        await asyncio.sleep(0)
        credit.close()
        with pytest.raises(CreditClosed):
            await asyncio.wait_for(waiter, 5)

    asyncio.run(scenario())


def test_credit_goes_back_a_quarter_window_at_a_time() -> None:
    returns = CreditReturn(400)
    assert returns.consumed(60) is None
    assert returns.consumed(60) == 120
    assert returns.consumed(100) == 100


def test_large_messages_go_in_chunks_within_credit_and_come_back_whole() -> None:
    async def scenario() -> None:
        credit = SendCredit(150)
        message = bytes(range(250))
        whole: List[bytes] = []
        chunks: List[Tuple[bytes, bool]] = []
        sending = asyncio.ensure_future(
            send_with_credit(credit, 100, message, whole.append, lambda d, last: chunks.append((d, last)))
        )
        await asyncio.sleep(0)
        # 100 + 100 bytes sent on 150 of credit, then it waits.
        assert [len(d) for d, _ in chunks] == [100, 100] and not sending.done()
        credit.grant(60)
        await asyncio.wait_for(sending, 5)
        assert whole == [] and [last for _, last in chunks] == [False, False, True]
        assembler = Assembler(1000)
        results = [assembler.push(d, last) for d, last in chunks]
        assert results[:2] == [None, None] and results[2] == message

    asyncio.run(scenario())


def test_small_messages_go_whole() -> None:
    async def scenario() -> None:
        credit = SendCredit(10)
        whole: List[bytes] = []
        await send_with_credit(credit, 100, b"abc", whole.append, lambda d, last: None)
        assert whole == [b"abc"] and credit.available == 7

    asyncio.run(scenario())


def test_the_assembler_refuses_to_outgrow_its_limit() -> None:
    assembler = Assembler(10)
    assert assembler.push(b"12345", False) is None
    with pytest.raises(MessageTooLarge, match="the limit is 10 bytes"):
        assembler.push(b"123456", True)
