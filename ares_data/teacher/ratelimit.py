"""Client-side limits: requests per minute, tokens per minute, calls in flight.

Requests are spaced evenly (one slot every 60/rpm seconds), so a server that allows the same
rate never sees a burst. Tokens are drawn from a bucket refilled at tpm/60 per second, counted
from the request before it is sent and corrected by the usage the server reports. When the
server asks for a pause (Retry-After, x-ratelimit-remaining-* at 0) every caller waits for it.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Mapping

from .retry import parse_duration

CATCH_UP_S = 0.5


class RateLimiter:
    def __init__(self, rpm: float, tpm: float | None = None, concurrency: int = 16,
                 clock=time.monotonic):
        self.interval = 60.0 / rpm
        self.tpm = tpm
        self._clock = clock
        self._next_slot = 0.0
        self._tokens = float(tpm) if tpm else 0.0
        self._tokens_at = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(concurrency)

    def _refill(self, now: float) -> None:
        if self.tpm:
            self._tokens = min(float(self.tpm), self._tokens + (now - self._tokens_at) * self.tpm / 60.0)
        self._tokens_at = now

    async def _wait_turn(self, tokens: int) -> None:
        """Take the next request slot, then enough tokens; callers are served in order."""
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                delay = max(self._next_slot, self._paused_until) - now
                if self.tpm:
                    need = min(tokens, self.tpm) - self._tokens
                    delay = max(delay, need * 60.0 / self.tpm)
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            # A caller woken late (a busy event loop) may use the slots missed in the last
            # CATCH_UP_S, so the achieved rate does not drift below the configured one.
            late = now - self._next_slot
            self._next_slot = (self._next_slot if late < CATCH_UP_S else now) + self.interval
            self._tokens -= tokens

    @asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        """Hold one of the in-flight places for a call that was let through both rate limits."""
        async with self._in_flight:
            await self._wait_turn(tokens)
            yield

    def correct(self, estimated: int, actual: int) -> None:
        """The server's token count replaces the estimate drawn before sending."""
        if self.tpm:
            self._tokens -= actual - estimated

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Slow down to the server's own view: pause until its reset when nothing remains."""
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = headers.get(f"x-ratelimit-reset-{kind}")
            if remaining is None or reset is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            seconds = parse_duration(reset)
            if left <= 0 and seconds:
                self.pause(seconds)
