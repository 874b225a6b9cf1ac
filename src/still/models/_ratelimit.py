"""Client-side rate limits: requests and tokens per minute, as token buckets.

Remote APIs enforce per-minute limits and answer 429 past them; pacing requests on our side
keeps a large capture from spending its retries on self-inflicted 429s. Each bucket holds
one minute's allowance and refills continuously. Token counts are estimates made before the
call (prompt characters / 4 + max_tokens): conservative for English text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Bucket:
    """`per_minute` units per minute, at most `per_minute` at once."""

    per_minute: float
    level: float = -1.0  # set to full on first use
    stamp: float = 0.0

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` fits (0 if it fits now); refills up to `now` first."""
        if self.level < 0:
            self.level, self.stamp = self.per_minute, now
        self.level = min(self.per_minute, self.level + (now - self.stamp) * self.per_minute / 60)
        self.stamp = now
        amount = min(amount, self.per_minute)  # one huge request must still go, eventually
        return 0.0 if self.level >= amount else (amount - self.level) * 60 / self.per_minute

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.per_minute)


@dataclass
class RateLimiter:
    """Paces calls to stay under `rpm` requests and `tpm` tokens per minute (None: no limit).

    >>> import asyncio
    >>> slept = []
    >>> async def fake_sleep(s: float) -> None:
    ...     slept.append(s)
    >>> lim = RateLimiter(rpm=2, clock=lambda: 0.0, sleep=fake_sleep)
    >>> asyncio.run(lim.acquire(1)); asyncio.run(lim.acquire(1)); slept
    []
    """

    rpm: float | None = None
    tpm: float | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _buckets: list[tuple[Bucket, bool]] = field(default_factory=list)  # (bucket, counts tokens)
    _lock: asyncio.Lock | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        if self.rpm:
            self._buckets.append((Bucket(self.rpm), False))
        if self.tpm:
            self._buckets.append((Bucket(self.tpm), True))

    async def acquire(self, tokens: float) -> None:
        """Wait until one request of `tokens` tokens fits in every bucket, then take it."""
        if not self._buckets:
            return
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            # a provider runs each batch in a fresh event loop; a lock belongs to one loop
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:  # first come, first served
            while True:
                now = self.clock()
                wait = max(b.wait_for(tokens if t else 1, now) for b, t in self._buckets)
                if wait <= 0:
                    break
                await self.sleep(wait)
            for b, t in self._buckets:
                b.take(tokens if t else 1)
