"""Client-side limits of one provider account: requests per minute, tokens per minute, calls in flight.

The limits are the account's, not one process's. `--rpm`/`--tpm` are caps never exceeded; without
them the limits are learned from the provider's headers (`learned`: OpenAI `x-ratelimit-*`,
Anthropic `anthropic-ratelimit-*`). Until the first answer shows them only one request is in
flight. As the remaining budget a provider reports falls below half, the pace falls with it
(`pace`), so a shared account settles before it runs dry instead of stopping at 0.

A learned limit is paced at MARGIN of it; one the user gave (`--rpm` at or below the learned
limit) is paced at 100 %: the user's number is the cap, the margin would only waste it.

The schedule is a GCRA over one `BucketState`: requests are spaced evenly (one every 60/rpm s,
never a burst, missed slots not made up); tokens come from a bucket of one minute's worth refilled at tpm/60 per second,
reserved before sending and corrected from the usage the answer reports (the client decides
what counts: OpenAI counts prompt + max_tokens, Anthropic's input-token limit the prompt only).
Collectors on one store share one state, the row of their account in `teacher_rate_bucket`
(`StoreBucket`, migration 0013), updated in the limiter's own thread in one transaction per
lease of request slots (one per call waiting, at most LEASE; one per request when a token
limit applies): N collectors started with the same `--rpm` hold it together. A client that
stops or is told to pause gives the unused tail of its lease back when nobody has taken a slot
after it; a call whose slot a pause overtook takes a new one after the pause. The
schedule is in the store's clock (read in that transaction), so collectors on machines whose
clocks differ share it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, AsyncIterator, Callable, Mapping, Optional, TypeVar, cast

from sqlalchemy import text

from .retry import RETRY_CAP_S, parse_duration

if TYPE_CHECKING:
    from ..store import Store

TOKEN_BURST_S = 60.0  # the token bucket holds one minute's worth, as the providers' do
SLOW_BELOW = 0.5  # below this share of the budget remaining, the pace falls in proportion
MIN_PACE = 0.25  # ... but never below this share of the limit (at 0 remaining: a pause)
MARGIN = 0.95  # a learned limit is paced at 95 %: providers enforce it over short windows too
LEASE = 4  # request slots a client takes from the shared state in one transaction


@dataclass
class BucketState:
    """The shared schedule (epoch seconds: the last request's slot, when the token bucket is next
    full, a pause) and the pace learned from the provider (None = none yet)."""

    last_request_at: float = 0.0
    tokens_at: float = 0.0
    paused_until: float = 0.0
    rpm: Optional[float] = None
    tpm: Optional[float] = None


def _cap(given: Optional[float], learned: Optional[float]) -> Optional[float]:
    return min(v for v in (given, learned) if v) if (given or learned) else None


def reserve(state: BucketState, tokens: int, now: float, rpm: Optional[float] = None,
            tpm: Optional[float] = None) -> float:
    """Take the next request slot and `tokens` from `state`; the wall-clock time the request may go.
    `rpm`/`tpm` are the given caps; the learned pace in `state` applies when it is lower."""
    rpm, tpm = _cap(rpm, state.rpm), _cap(tpm, state.tpm)
    # spaced from the last request at the pace of now, so a pace learned meanwhile applies at once;
    # slots missed while nobody asked are not made up (a burst would drain the provider's bucket)
    at = max(state.last_request_at + (60.0 / rpm if rpm else 0.0), state.paused_until, now)
    state.last_request_at = at
    if tpm and tokens:
        cost = min(tokens, tpm) * 60.0 / tpm
        theoretical = max(state.tokens_at, now)  # at or before now: the bucket is full
        at = max(at, theoretical + cost - TOKEN_BURST_S)
        state.tokens_at = theoretical + cost
    return at


def refund(state: BucketState, tokens: int, tpm: Optional[float]) -> None:
    """Give back reserved tokens the answer did not use (negative: take what it used beyond them)."""
    tpm = _cap(tpm, state.tpm)
    if tpm and tokens:
        state.tokens_at -= tokens * 60.0 / tpm


# -- what the provider says ------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One limit as a response reported it: per minute (None: not said), what is left, seconds until
    it is full again."""

    limit: Optional[float]
    remaining: float
    reset_s: Optional[float]


def _reset_seconds(value: Optional[str], now: float) -> Optional[float]:
    """OpenAI writes a duration (`1s`, `6m0s`, `20ms`), Anthropic an RFC 3339 time."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - now)
    except ValueError:
        return None


_HEADERS = {  # kind -> (limit, remaining, reset) header names, OpenAI first, then Anthropic
    "requests": [("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
                 ("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
                  "anthropic-ratelimit-requests-reset")],
    "tokens": [("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
               ("anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset"),
               ("anthropic-ratelimit-input-tokens-limit", "anthropic-ratelimit-input-tokens-remaining",
                "anthropic-ratelimit-input-tokens-reset")],
}


def learned(headers: Mapping[str, str], now: float | None = None) -> dict[str, Seen]:
    """{"requests": Seen, "tokens": Seen} from a response's rate-limit headers (either provider)."""
    now = time.time() if now is None else now
    found: dict[str, Seen] = {}
    for kind, spellings in _HEADERS.items():
        for limit, remaining, reset in spellings:
            try:
                per_minute = float(headers[limit]) if limit in headers else None
                value = Seen(per_minute, float(headers[remaining]), _reset_seconds(headers.get(reset), now))
            except (KeyError, ValueError):
                continue
            if value.limit is None or value.limit > 0:
                found[kind] = value
                break
    return found


def pace(seen: Seen, margin: float = MARGIN) -> float:  # seen.limit is known here
    """Per-minute pace for a limit: `margin` of it while half the budget or more remains, then in
    proportion to what remains (never below MIN_PACE), so the budget settles instead of running
    dry while other clients of the account draw on it too."""
    limit = cast(float, seen.limit)
    share = max(0.0, seen.remaining) / limit
    return limit * margin * max(MIN_PACE, min(1.0, share / SLOW_BELOW))


# -- where the state lives --------------------------------------------------------------------


T = TypeVar("T")  # what a change of the bucket state returns


class LocalBucket:
    """The state in this process only (no store: one client's limits), in this machine's clock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.state, self.clock = BucketState(), clock

    def update(self, change: Callable[[BucketState, float], T]) -> T:
        return change(self.state, self.clock())


_COLUMNS = [f.name for f in fields(BucketState)]


# The store's clock in epoch seconds: every collector of a store schedules by the same clock.
_NOW = {"postgresql": "EXTRACT(EPOCH FROM clock_timestamp())::float8",
        "sqlite": "(julianday('now') - 2440587.5) * 86400.0"}


class StoreBucket:
    """The state in the account's `teacher_rate_bucket` row, read and written in one transaction
    (row-locked on PostgreSQL; SQLite transactions take the write lock up front), with the
    store's clock read in the same statement."""

    def __init__(self, store: "Store", account: str):
        self.store, self.account = store, account
        lock = " FOR UPDATE" if store.dialect == "postgresql" else ""
        self._insert = text("INSERT INTO teacher_rate_bucket (account) VALUES (:a) ON CONFLICT (account) DO NOTHING")
        self._select = text(f"SELECT {', '.join(_COLUMNS)}, {_NOW[store.dialect]} FROM teacher_rate_bucket "
                            f"WHERE account = :a{lock}")
        self._write = text(f"UPDATE teacher_rate_bucket SET {', '.join(f'{c} = :{c}' for c in _COLUMNS)}, "
                           "updated_at = CURRENT_TIMESTAMP WHERE account = :a")

    def update(self, change: Callable[[BucketState, float], T]) -> T:
        with self.store.engine.begin() as conn:
            conn.execute(self._insert, {"a": self.account})
            *values, now = conn.execute(self._select, {"a": self.account}).one()
            state = BucketState(*values)
            result = change(state, float(now))
            conn.execute(self._write, {"a": self.account, **vars(state)})
        return result


def account_key(provider: str, base_url: str, model: str, key: str | None) -> str:
    """Which limits a request counts against: provider, server, model and API key (hashed, never stored)."""
    return hashlib.sha256("\n".join((provider, base_url, model, key or "")).encode()).hexdigest()[:32]


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None, concurrency: int = 16,
                 bucket: LocalBucket | StoreBucket | None = None, max_pause: float = RETRY_CAP_S):
        self.rpm, self.tpm, self.max_pause = rpm, tpm, max_pause
        self.bucket = bucket or LocalBucket()
        self._in_flight = asyncio.Semaphore(concurrency)
        self._probe = asyncio.Lock()
        self._observed = rpm is not None  # with no --rpm, one request alone until an answer shows the limits
        self._refund = 0
        self._pace: dict[str, float] = {}  # paces learned since the last lease (applied by the next)
        self._pauses = 0  # pauses begun: a slot taken before one is void
        self._waiting = 0  # calls waiting for a slot: a lease takes no more slots than they need
        self._leased: list[tuple[float, float]] = []  # slots held: (shared clock, time.monotonic()), earliest first
        self._before = 0.0  # the shared clock's last slot before the first one held (where the tail goes back)
        self._leasing = asyncio.Lock()
        self._token_limit = tpm is not None
        self._thread: ThreadPoolExecutor | None = None

    async def _update(self, change: Callable[[BucketState, float], T]) -> T:
        """Apply `change` to the shared state. The store's transaction runs in the limiter's own
        thread: the event loop goes on sending and reading answers meanwhile, and a lease never
        queues behind the run's other store I/O in the default pool (a late lease loses slots)."""
        if isinstance(self.bucket, LocalBucket):
            return self.bucket.update(change)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="ares-rate-bucket")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.bucket.update, change)

    async def _lease(self, tokens: int) -> None:
        """Take the next request slots in one transaction: one per call waiting for a slot, at most
        LEASE (one, with `tokens`, under a token limit or before the limits are known). Each lease
        reads the state it changes, so callers hold consecutive slots: the schedule does not drift
        by how late each one wakes. A slot nobody waits for is never taken: it would leave a hole
        in the shared schedule once another collector leases after it."""
        count = 1 if (self._token_limit and tokens) or not self._observed else min(LEASE, self._waiting)
        refunded, self._refund = self._refund, 0
        pace, self._pace = self._pace, {}

        def change(state: BucketState, now: float) -> tuple[float, list[tuple[float, float]]]:
            # a pause longer than the cap (written by an older version) is cut
            state.paused_until = min(state.paused_until, now + self.max_pause)
            refund(state, refunded, self.tpm)
            for kind, value in pace.items():
                setattr(state, "rpm" if kind == "requests" else "tpm", value)
            before = state.last_request_at
            slots = [reserve(state, tokens if i == 0 else 0, now, self.rpm, self.tpm) for i in range(count)]
            return before, [(at, at - now) for at in slots]

        self._before, slots = await self._update(change)
        started = time.monotonic()
        self._leased = [(at, started + delay) for at, delay in slots]

    async def _wait_turn(self, tokens: int) -> None:
        """Take the next slot held (leasing more when none is left), then wait for it. A pause that
        begins meanwhile voids the slot (and gives its tokens back): the call takes one after the
        pause instead of going while the provider asked to wait."""
        while True:
            pauses = self._pauses
            self._waiting += 1
            try:
                async with self._leasing:
                    if not self._leased:
                        await self._lease(tokens)
                    self._before, due = self._leased.pop(0)
            finally:
                self._waiting -= 1
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if pauses == self._pauses:
                return
            self._refund += tokens

    def _give_back(self, state: BucketState, now: float) -> None:
        """Return the slots held and not used when no other client took one after them."""
        if self._leased and abs(state.last_request_at - self._leased[-1][0]) < 1e-6:
            state.last_request_at = self._before
        self._leased = []

    async def release(self) -> None:
        """Give the unused tail of the lease back (the client is done)."""
        async with self._leasing:
            if self._leased:
                await self._update(self._give_back)
            if self._thread is not None:
                self._thread.shutdown(wait=False)
                self._thread = None

    @asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        """Hold one of the in-flight places for a call let through both rate limits."""
        async with self._in_flight:
            if self._observed:
                await self._wait_turn(tokens)
                yield
                return
            async with self._probe:  # until an answer shows the account's limits
                await self._wait_turn(tokens)
                yield

    def correct(self, reserved: int, actual: int) -> None:
        """The server's token count replaces the reservation (refunded with the next request);
        `actual` 0 gives back all of it (a 429 or 5xx the provider did not count)."""
        self._refund += reserved - actual

    async def pause(self, seconds: float) -> None:
        """Every collector of the account waits `seconds` (Retry-After, nothing remaining), at most
        `max_pause`: the pause is shared and stored, so an endless one would stall every collector."""
        seconds = min(seconds, self.max_pause)
        self._pauses += 1

        def change(state: BucketState, now: float) -> None:
            self._give_back(state, now)  # the slots held would not wait for the pause
            state.paused_until = max(state.paused_until, now + seconds)

        async with self._leasing:
            await self._update(change)

    async def observe(self, headers: Mapping[str, str]) -> None:
        """Pace to the provider's own view of the account from the next lease on: its limits, slowed
        as the budget falls (with MARGIN unless the user gave a limit no higher); when nothing
        remains, wait until one request's (or the tokens') worth is back."""
        self._observed = True
        for kind, seen in learned(headers).items():
            if seen.limit:
                self._token_limit |= kind == "tokens"
                given = self.rpm if kind == "requests" else self.tpm
                self._pace[kind] = pace(seen, 1.0 if given and given <= seen.limit else MARGIN)
            if seen.remaining <= 0 and seen.reset_s:
                one_request = 60.0 / seen.limit if seen.limit and kind == "requests" else seen.reset_s
                await self.pause(min(seen.reset_s, one_request))
