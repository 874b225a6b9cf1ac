"""Rate limits on a simulated clock: no wall-clock time in tests."""

from __future__ import annotations

import asyncio

import pytest

from still.models._ratelimit import RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def _run(lim: RateLimiter, tokens: list[float]) -> None:
    async def go() -> None:
        for t in tokens:
            await lim.acquire(t)

    asyncio.run(go())


def test_requests_per_minute_allow_a_burst_then_pace() -> None:
    t = FakeTime()
    lim = RateLimiter(rpm=60, clock=t.clock, sleep=t.sleep)
    _run(lim, [1] * 60)
    assert t.slept == [] and t.now == 0.0  # a minute's allowance at once
    _run(lim, [1] * 3)
    assert t.now == pytest.approx(3.0)  # then one per second


def test_tokens_per_minute_pace_large_requests() -> None:
    t = FakeTime()
    lim = RateLimiter(tpm=1000, clock=t.clock, sleep=t.sleep)
    _run(lim, [400, 400])
    assert t.now == 0.0
    _run(lim, [400])  # 200 left: wait for 200 more, at 1000/60 per second
    assert t.now == pytest.approx(12.0)


def test_both_limits_and_no_limit() -> None:
    t = FakeTime()
    lim = RateLimiter(rpm=120, tpm=600, clock=t.clock, sleep=t.sleep)
    _run(lim, [300, 300, 300])  # the token bucket binds first
    assert t.now == pytest.approx(30.0)
    free = RateLimiter(clock=t.clock, sleep=t.sleep)
    _run(free, [10**9] * 5)
    assert t.now == pytest.approx(30.0)


def test_concurrent_waiters_are_served_in_turn() -> None:
    t = FakeTime()
    lim = RateLimiter(rpm=60, clock=t.clock, sleep=t.sleep)
    _run(lim, [1] * 60)

    async def many() -> None:
        await asyncio.gather(*(lim.acquire(1) for _ in range(5)))

    asyncio.run(many())
    assert t.now == pytest.approx(5.0)


def test_the_limiter_survives_a_new_event_loop_per_batch() -> None:
    t = FakeTime()
    lim = RateLimiter(rpm=60, clock=t.clock, sleep=t.sleep)

    async def contended() -> None:
        await asyncio.gather(*(lim.acquire(1) for _ in range(40)))

    asyncio.run(contended())  # batch 1, loop A
    asyncio.run(contended())  # batch 2, loop B: waits, and must not trip over loop A's lock
    assert t.now == pytest.approx(20.0)
