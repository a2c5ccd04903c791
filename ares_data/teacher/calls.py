"""One audited teacher request chain: ask, validate, re-ask with a repair message, record.

Every answer is written as it arrives, in one transaction with what it produced (the scores,
the correction), keyed by the hash of the full request. A chain that meets a stored answer
reuses it instead of asking again, so a re-run after a crash pays only for the calls that
were in flight. Statuses: `ok`; `invalid` (a repair call follows, linked by `repair_of_id`);
`failed` (the last repair was invalid too; the reason is in `error`); `error` (no answer after
the retries; a re-run asks again and updates that row). Every HTTP attempt of a call, failed
ones included, is written with it to `teacher_attempt` (priced from its usage, or bounded when it
was sent but never read back), so retried spend shows in `v_teacher_spend`; a duplicate that lost
the race to store its answer adds its attempts to the stored call instead of dropping them.
With claims, a request without a stored answer is claimed and the store is looked at again
under the claim, which is released in the transaction that records the answer: a collector that
wins the claim next sees that answer. The store is read and written in worker threads
(`asyncio.to_thread`): a transaction waiting for SQLite's write lock or a PostgreSQL round trip
never holds up the event loop, which sends the other calls at their scheduled times meanwhile.

Where answers come from is injected: the runner calls an `Answerer` with each request it must
send. Online that is the HTTP client (`online(client)`); the Batch API answers from a batch's
output file or defers the request into the next batch (batch.py); a local model can answer
score requests itself. Validation, repairs, reuse, costs and audit rows stay the runner's.
"""

from __future__ import annotations

import asyncio

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Protocol

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ..enums import CallStatus
from ..errors import BudgetReached, CallFailed, InvalidAnswer, PartlyInvalid, TeacherError
from ..tables import TeacherAttempt, TeacherCall, TeacherCallRationale, utcnow
from ..store import Store
from .client import CUT, MAYBE_BILLED, REFUSED, Attempt, Reply, TeacherClient, build_request, max_out, request_hash
from .config import Provider, ScoreFrom, TeacherConfig
from .logprobs import score_positions
from .pricing import cost, estimate_tokens
from .prompts import Ask, load, repair_message



class Deferred(Exception):
    """The request is not answered in this pass: it is (or goes) into a batch."""


@dataclass
class Task:
    """What to ask, how to read the answer, and what an accepted answer writes to the store."""

    kind: str  # score | correct | judge
    prompt: str
    ask: Ask
    parse: Callable[[str], Any]
    repair_values: dict[str, Any] = field(default_factory=dict)
    question_id: Optional[int] = None
    rationale_id: Optional[int] = None
    persist: Optional[Callable[[Session, TeacherCall, Any], None]] = None
    # A grouped call: the rationales it still asks about (linked to each call in
    # teacher_call_rationale), and `settle`, told the valid part of a partly invalid answer so
    # the repair asks only for the rest.
    covers: list[int] = field(default_factory=list)
    settle: Optional[Callable[[Any], None]] = None
    # A request already sent, where its chain stands (a batch line: body, stored body, hash,
    # the call it repairs, its repair number): the chain resumes there, whatever the flags
    # would build now; later repairs are built from `ask` as usual.
    sent: Optional[tuple[dict, dict, str, Optional[int], int]] = None
    # The prompt version the request was built with, when not today's (a batch line submitted earlier).
    version: Optional[str] = None

    def rationale_ids(self) -> list[int]:
        """The rationales this task asks about (a grouped call's `covers`, else its one rationale)."""
        return list(self.covers) or ([self.rationale_id] if self.rationale_id is not None else [])


@dataclass
class Outcome:
    status: str  # ok | failed | error
    result: Any = None
    call_id: Optional[int] = None
    reason: Optional[str] = None  # a short code: wrong_count, not_json, error, ...


@dataclass
class Tally:
    """Running totals of a run, read by the progress bar and the summary."""

    sent: int = 0
    reused: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens_in: int = 0
    cost_usd: float = 0.0
    reserved_usd: float = 0.0


class Budget:
    """--max-cost: refuse a call whose estimate would take spent + in flight past the cap."""

    def __init__(self, cap: float | None, tally: Tally):
        self.cap, self.tally = cap, tally

    def reserve(self, estimate: float) -> None:
        if self.cap is not None and self.tally.cost_usd + self.tally.reserved_usd + estimate > self.cap:
            raise BudgetReached(f"stopped before passing --max-cost ${self.cap:.4f} "
                                f"(spent ${self.tally.cost_usd:.4f})")
        self.tally.reserved_usd += estimate


def estimate_out(task: Task) -> int:
    """Output tokens a task's answer is expected to take (for dry runs and the budget)."""
    if task.kind == "score":
        return 4 * int(task.repair_values.get("n", 1)) + 8
    if task.kind == "correct":
        return len(str(task.repair_values.get("rationale", ""))) // 4 + 16
    return 8


def request_key(config, task: Task, ask: Ask) -> tuple[dict, dict, str]:
    """(body to send, body to store, request hash) of one request of a task."""
    logprobs = task.kind == "score" and config.score_from is ScoreFrom.logprobs
    body, stored = build_request(config, ask, logprobs=logprobs)
    if config.provider is Provider.prm:  # a local PRM reads the rationale itself (ares_train/prm_teacher.py)
        body["metadata"] = stored["metadata"] = {"kind": task.kind, "rationale_id": str(task.rationale_id)}
    template = load(task.prompt)
    return body, stored, request_hash(config, template.name, template.version, stored)


def stored_answer(store: Store, key: str, retry_failed: bool = False) -> TeacherCall | None:
    """The stored answer to this exact request (rows with status `error` hold none; with
    `retry_failed`, a `failed` row is asked again too)."""
    with store.session() as session:
        row = session.exec(select(TeacherCall).where(TeacherCall.request_hash == key)).first()
    again = (CallStatus.error, CallStatus.failed) if retry_failed else (CallStatus.error,)
    return row if row is not None and row.status not in again else None


def verdict(task: Task, text: str, finish_reason: str | None, refusal: str | None) -> Any:
    """The parsed answer; an answer cut at the token budget or refused is invalid whatever it says."""
    if finish_reason in CUT:
        raise InvalidAnswer("cut_off", "the answer was cut off at the token limit; answer in full, briefly")
    if refusal or finish_reason in REFUSED:
        raise InvalidAnswer("refused", f"the answer was refused ({(refusal or finish_reason or '')[:100]})")
    return task.parse(text)


class Answerer(Protocol):
    """The answer seam of `CallRunner`: turns one request into the teacher's `Reply`.

    `body` is the provider-format request to send (`build_request`), `key` its request hash
    (the idempotency key, the Batch API's custom_id). Return the `Reply` (text, usage, attempts,
    latency; `finish_reason` when the source reports one). Raise `CallFailed` when no answer
    came (`permanent` for one that asking again cannot change); any other exception stops the
    task and propagates to the caller (`Deferred`: "not answered in this pass").
    """

    def __call__(self, body: dict[str, Any], key: str) -> Awaitable[Reply]: ...


def online(client: TeacherClient) -> Answerer:
    """Answers by sending the request now, within the client's limits and retries."""

    async def answer(body: dict[str, Any], key: str) -> Reply:
        return await client.send(body)

    return answer


class CallRunner:
    """Runs tasks' request chains against `answer`; `price_factor` scales every stored cost
    (the Batch API's discount). With `claims`, a request is sent only by the collector that
    holds its hash; others wait for the stored answer. `retry_failed` asks given-up requests
    again instead of reusing them. `in_batch` tells a request that is a line of a batch not
    ingested yet: it is not sent (`Deferred`), its answer is on its way."""

    def __init__(self, store: Store, config: TeacherConfig, answer: Answerer, *, tally: Tally | None = None,
                 max_cost: float | None = None, price_factor: float = 1.0, claims: Any = None,
                 retry_failed: bool = False, in_batch: Callable[[str], bool] | None = None):
        self.store, self.config, self.answer, self.in_batch = store, config, answer, in_batch
        self.tally = tally or Tally()
        self.budget = Budget(max_cost, self.tally)
        self.price_factor, self.claims, self.retry_failed = price_factor, claims, retry_failed
        self.chains: dict[str, tuple[int | None, int]] = {}  # request hash -> (call it repairs, repair number)
        self._locks: dict[str, asyncio.Lock] = {}

    def call_cost(self, tokens_in: int, tokens_out: int, cached_in: int = 0, cache_write_in: int = 0) -> float:
        return cost(self.config.model, tokens_in, tokens_out, self.config.price_in, self.config.price_out,
                    cached_in, cache_write_in) * self.price_factor

    async def run(self, task: Task) -> Outcome:
        ask, repair_of, first = task.ask, None, 0
        if task.sent is not None:
            repair_of, first = task.sent[3], min(task.sent[4], self.config.max_repairs)
        for repair in range(first, self.config.max_repairs + 1):
            if repair == first and task.sent is not None:
                body, stored, key = task.sent[:3]
            else:
                body, stored, key = request_key(self.config, task, ask)
            self.chains[key] = (repair_of, repair)
            # Identical requests in flight at once (identical rationales) wait for the first answer.
            async with self._locks.setdefault(key, asyncio.Lock()):
                outcome, row, text = await self._answer(task, body, stored, key, repair_of,
                                                        final=repair == self.config.max_repairs)
            if outcome is not None:
                return outcome
            repair_of = row.id
            code, reason = row.error.split(": ", 1)
            budget = max(self.config.max_tokens, ask.max_tokens or 0)
            ask = ask.repaired(text, repair_message(task.prompt, reason, **task.repair_values),
                               max_tokens=2 * budget if code == "cut_off" else None)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stored_or_claimed(self, key: str, group: bool = False) -> TeacherCall | None:
        """The stored answer, else None once this collector holds the request's claim (waiting
        while another live collector is asking it). Without a stored answer the request is claimed
        and the store looked at again under the claim: an answer recorded by the collector that
        held it before (in the transaction that let it go) is seen, never asked again."""
        row = await asyncio.to_thread(self._stored, key, group)
        if row is not None or self.claims is None:
            return row
        while not await asyncio.to_thread(self.claims.take_request, key):
            await asyncio.sleep(self.claims.lease.total_seconds() / 10)
        row = await asyncio.to_thread(self._stored, key, group)
        if row is not None:
            await asyncio.to_thread(self.claims.release_request, key)
        return row

    def _stored(self, key: str, group: bool) -> TeacherCall | None:
        """The stored answer to reuse; with `retry_failed` a given-up request is asked again, but
        a refused call about several rationales is kept: its group is split instead."""
        row = stored_answer(self.store, key)
        if self.retry_failed and row is not None and row.status == CallStatus.failed and not (
                group and row.response is None):
            return None
        return row

    async def _answer(self, task: Task, body: dict, stored: dict, key: str, repair_of: int | None,
                      final: bool) -> tuple[Outcome | None, TeacherCall | None, str]:
        """The stored or fresh answer to one request: an Outcome, or (None, invalid row, text) to repair."""
        row, reply, started = await self._stored_or_claimed(key, len(task.rationale_ids()) > 1), None, utcnow()
        if row is not None:
            self.tally.reused += 1
            if row.status == CallStatus.failed and row.response is None:  # refused by the provider: not again
                await asyncio.to_thread(self._link, task, row, None)
                reason = (row.error or "rejected").split(":")[0]
                return Outcome(CallStatus.failed, call_id=row.id, reason=reason), row, ""
            text, finish, refusal = row.response or "", row.finish_reason, None
        else:
            if self.in_batch is not None and await asyncio.to_thread(self.in_batch, key):
                if self.claims is not None:
                    await asyncio.to_thread(self.claims.release_request, key)
                raise Deferred(key)
            try:
                reply = await self._send(task, body, key)
            except CallFailed as exc:
                if exc.rejected:  # this request only: its rationales fail, the run goes on
                    row = await self._record(task, key, stored, CallStatus.failed, None, repair_of, started,
                                             error=f"rejected: {exc}", attempts=exc.attempts, log=exc.log)
                    return Outcome(CallStatus.failed, call_id=row.id, reason="rejected"), row, ""
                await self._record(task, key, stored, CallStatus.error, None, repair_of, started, error=str(exc),
                                   attempts=exc.attempts, log=exc.log)
                if exc.permanent:
                    raise TeacherError(str(exc)) from None
                return Outcome(CallStatus.error, reason="error"), None, ""
            finally:
                if self.claims is not None and reply is None:
                    await asyncio.to_thread(self.claims.release_request, key)
            text, finish, refusal = reply.text, reply.finish_reason, reply.refusal
        try:
            result = verdict(task, text, finish, refusal)
        except InvalidAnswer as exc:
            partial = exc.valid if isinstance(exc, PartlyInvalid) else None
            if row is None:
                status = CallStatus.failed if final else CallStatus.invalid
                row = await self._record(task, key, stored, status, reply, repair_of, started,
                                         error=f"{exc.code}: {exc}", result=partial)
            elif partial:
                await asyncio.to_thread(self._link, task, row, partial)
            if partial and task.settle is not None:
                task.settle(partial)
            if final or row.status == CallStatus.failed:
                return Outcome(CallStatus.failed, call_id=row.id, reason=exc.code), row, text
            return None, row, text
        if reply is not None:
            row = await self._record(task, key, stored, CallStatus.ok, reply, repair_of, started, result=result)
        elif row.status != CallStatus.ok:
            row = await asyncio.to_thread(self._passes_now, row)
        await asyncio.to_thread(self._link, task, row, result)
        return Outcome(CallStatus.ok, result=result, call_id=row.id), row, text

    def _link(self, task: Task, row: TeacherCall, result: Any) -> None:
        """Link the task's rationales to the stored call that answered them (reuse of an identical
        request, or a racing duplicate) and write what the answer gives them that is not written
        yet (`persist` skips what the call wrote before)."""
        with self.store.session() as session:
            linked = set(session.exec(select(TeacherCallRationale.rationale_id)
                                      .where(TeacherCallRationale.teacher_call_id == row.id)))
            fresh = [r for r in task.rationale_ids() if r not in linked and r != row.rationale_id]
            session.add_all(TeacherCallRationale(teacher_call_id=row.id, rationale_id=r) for r in fresh)
            if result is not None and task.persist is not None:
                task.persist(session, row, result)

    def _passes_now(self, row: TeacherCall) -> TeacherCall:
        """A stored `invalid` or `failed` answer that passes validation when reused (it was read
        with the wrong prompt's parser, as batch ingest once did) becomes `ok`."""
        with self.store.session() as session:
            stored = session.exec(select(TeacherCall).where(TeacherCall.id == row.id)).one()
            stored.status, stored.error = CallStatus.ok, None
            session.add(stored)
        return stored

    def keep_duplicate(self, key: str, reply: Reply, stored: dict) -> None:
        """A paid answer to a request answered before (a batch line also asked online): its
        attempts join the stored call, so SQL sees what it cost; the stored answer stays."""
        self.tally.cost_usd += self.reply_cost(reply, stored)
        with self.store.session() as session:
            row = session.exec(select(TeacherCall).where(TeacherCall.request_hash == key)).one()
            session.add_all(self._attempt_rows(row.id, reply.log, stored))

    async def _send(self, task: Task, body: dict, key: str) -> Reply:
        estimate = self.call_cost(estimate_tokens(body), estimate_out(task))
        self.budget.reserve(estimate)
        try:
            reply = await self.answer(body, key)
        finally:
            self.tally.reserved_usd -= estimate
        self.tally.sent += 1
        self.tally.tokens_in += reply.tokens_in or 0
        self.tally.tokens_out += reply.tokens_out or 0
        self.tally.cached_tokens_in += reply.cached_tokens_in or 0
        return reply

    def _attempt_rows(self, call_id: int, log: list[Attempt], stored: dict) -> list[TeacherAttempt]:
        """`teacher_attempt` rows: priced from reported usage; an attempt sent but never read back
        gets the bound of its prompt and max tokens instead (a provider may have billed it)."""
        rows = []
        for attempt in log:
            values = {k: v for k, v in vars(attempt).items() if k not in ("number", "cached_tokens_in",
                                                                            "cache_write_tokens_in")}
            if attempt.tokens_in is not None:
                values["cost_usd"] = self.call_cost(attempt.tokens_in, attempt.tokens_out or 0,
                                                    attempt.cached_tokens_in or 0, attempt.cache_write_tokens_in or 0)
            elif attempt.outcome in MAYBE_BILLED:
                values["est_cost_usd"] = self.call_cost(estimate_tokens(stored),
                                                        max_out(stored, self.config.max_tokens))
            rows.append(TeacherAttempt(teacher_call_id=call_id, attempt=attempt.number, **values))
        return rows

    def reply_cost(self, reply: Reply, stored: dict) -> float:
        """What an answer cost, from the usage it reports (its prompt's length when it reports none)."""
        return self.call_cost(reply.tokens_in or estimate_tokens(stored), reply.tokens_out or 0,
                              reply.cached_tokens_in or 0, reply.cache_write_tokens_in or 0)

    async def _record(self, task: Task, key: str, stored: dict, status: str, reply: Reply | None,
                      repair_of: int | None, started, **values: Any) -> TeacherCall:
        """`_write` in a worker thread; the answer's cost joins the tally here, on the event loop."""
        if reply is not None:
            self.tally.cost_usd += self.reply_cost(reply, stored)
        return await asyncio.to_thread(self._write, task, key, stored, status, reply, repair_of, started, **values)

    def _write(self, task: Task, key: str, stored: dict, status: str, reply: Reply | None,
               repair_of: int | None, started, *, error: str | None = None, attempts: int | None = None,
               result: Any = None, log: list[Attempt] | None = None) -> TeacherCall:
        """Insert the call (or update the `error` row of the same request, or the `failed` one
        under --retry-failed), its HTTP attempts and what it produced. A stored answer of the
        same request written meanwhile by another collector is kept as it is and returned."""
        template = load(task.prompt)
        fields: dict[str, Any] = dict(
            kind=task.kind, provider=self.config.provider.value, model=self.config.model,
            prompt_name=template.name, prompt_version=task.version or template.version, request=stored, status=status,
            error=error, question_id=task.question_id, rationale_id=task.rationale_id, repair_of_id=repair_of,
            started_at=started, finished_at=utcnow(), attempts=attempts or 0, response=None, finish_reason=None,
        )
        if reply is not None:
            price = self.reply_cost(reply, stored)
            fields.update(response=reply.text, attempts=reply.attempts, tokens_in=reply.tokens_in,
                          tokens_out=reply.tokens_out, cached_tokens_in=reply.cached_tokens_in,
                          cache_write_tokens_in=reply.cache_write_tokens_in,
                          score_logprobs=score_positions(reply.text, reply.logprobs),
                          latency_ms=round(reply.latency_ms, 1), cost_usd=price, request_id=reply.request_id,
                          model_snapshot=reply.model_snapshot, reasoning_tokens=reply.reasoning_tokens,
                          finish_reason=reply.finish_reason)
            log = reply.log
        overwritable = (CallStatus.error, CallStatus.failed) if self.retry_failed else (CallStatus.error,)
        try:
            with self.store.session() as session:
                if self.claims is not None:  # in this transaction: who claims it next sees the row
                    self.claims.release_request(key, session)
                row = session.exec(select(TeacherCall).where(TeacherCall.request_hash == key)).first()
                if row is not None and row.status not in overwritable:  # a racing duplicate stored first
                    session.add_all(self._attempt_rows(row.id, log or [], stored))  # ours were paid too
                    return row
                new = row is None
                if row is None:
                    row = TeacherCall(request_hash=key, **fields)
                else:
                    for name, value in fields.items():
                        setattr(row, name, value)
                session.add(row)
                session.flush()
                if new:  # the same request (an `error` row asked again) covers the same rationales
                    session.add_all(TeacherCallRationale(teacher_call_id=row.id, rationale_id=r) for r in task.covers)
                session.add_all(self._attempt_rows(row.id, log or [], stored))
                if result is not None and task.persist is not None:  # an ok answer, or the valid part of one
                    task.persist(session, row, result)
            return row
        except IntegrityError:  # another collector inserted this request's row first: keep theirs
            with self.store.session() as session:
                if self.claims is not None:
                    self.claims.release_request(key, session)
                row = session.exec(select(TeacherCall).where(TeacherCall.request_hash == key)).one()
                session.add_all(self._attempt_rows(row.id, log or [], stored))
                return row
        except BaseException:  # nothing stored: others may ask it now
            if self.claims is not None:
                self.claims.release_request(key)
            raise
