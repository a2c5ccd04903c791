"""Collectors: sentence scores and corrections for the rationales of a round.

A `CollectRequest` says what to collect and how; `collect` selects the rationales that still
lack an answer from this teacher model and prompt version (tasks.py), turns each into a `Task`
and runs the tasks with `concurrency` workers over one client. A dry run builds the same
requests and counts what would be sent (`DryRunSummary`); `--batch` hands them to the Batch
API (batch.py, `BatchSummary`); an online run returns an `OnlineSummary`. Each rationale is
claimed with a lease first (claims.py), so several collectors on one store share the work.
With `grouped` the rationales of one question are scored in one call (grouped.py); a unit of
work is then the claimed rationales of one question; a group the provider refuses is split in
halves and asked again, so only what it refuses alone fails. Rationales (and requests) waiting in
a batch not ingested yet are not asked online: the summary says how many. Progress goes to an
optional callback (the CLI draws it with rich); the library prints nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Union

from sqlalchemy import func
from sqlmodel import Session, select

from ..enums import CallStatus
from ..errors import TeacherError
from ..store import Store
from ..tables import Rationale
from . import batch as batch_api
from .batch import BatchLimits
from .calibration import calibrate
from .calls import (BudgetReached, CallRunner, Deferred, Tally, Task, estimate_out, online, request_key,
                    stored_answer)
from .claims import Claims
from .client import TeacherClient
from .config import CollectedRationales, TeacherConfig
from .local import is_local, local_answerer, local_teacher
from .pricing import BATCH_DISCOUNT, PrefixCache, cost, estimate_tokens
from .prompts import load
from .tasks import (GroupCap, Job, Selection, builder, claim_unit, in_points, open_rationales, prompt_name,
                    refused_group, select_jobs, still_open, teacher_key, units)


@dataclass(frozen=True)
class CollectRequest:
    """One collector run: what to ask (`kind`), about which rationales, and how.

    `batch` submits to the Batch API instead of asking now; `dry_run` only counts; `max_cost`
    caps an online run's estimated spend; `lease_s` is how long another collector waits before
    taking over a rationale this run holds; `retry_failed` asks again rationales whose chain
    was given up (`failed`, refused by the provider included); `group_cap` bounds one grouped call."""

    kind: str  # score | correct
    rationales: CollectedRationales = CollectedRationales.student
    round: int | None = None
    limit: int | None = None
    checkpoint: str | None = None
    grouped: bool = False
    dry_run: bool = False
    max_cost: float | None = None
    lease_s: float = 120.0
    batch: BatchLimits | None = None
    retry_failed: bool = False
    group_cap: GroupCap = GroupCap()
    only: tuple[int, ...] | None = None  # rationale ids in place of the source and round (verl's reward manager)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rationales", CollectedRationales(self.rationales))
        if self.kind not in ("score", "correct"):
            raise TeacherError(f"unknown collector kind {self.kind!r} (score or correct)")
        if self.batch is not None and self.max_cost is not None:
            raise TeacherError("--max-cost applies to online calls; with --batch, --dry-run shows the cost first")

    @property
    def selection(self) -> Selection:
        return Selection(self.kind, self.rationales, self.round, self.limit, self.checkpoint,
                         self.grouped and self.kind == "score", self.retry_failed)


@dataclass
class _Selected:
    kind: str
    selected: int = 0
    skipped_empty: int = 0
    in_batches: int = 0  # open, but in a batch not ingested yet: not asked now

    def _skipped(self) -> list[str]:
        return ([f"skipped {self.skipped_empty} rationales without sentences"] if self.skipped_empty else []) + (
            [f"skipped {self.in_batches} rationales waiting in batches not ingested yet (`ares batch ingest` "
             "stores their answers)"] if self.in_batches else [])


def _cached_line(tokens: int, verb: str) -> list[str]:
    return [f"{tokens} input tokens {verb} read from the provider's prompt cache"] if tokens else []


@dataclass
class OnlineSummary(_Selected):
    """What an online run asked, got and paid."""

    done: int = 0
    failed: Counter = field(default_factory=Counter)
    elsewhere: int = 0
    calls: int = 0
    reused: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens_in: int = 0
    cost_usd: float = 0.0
    stopped: Optional[str] = None

    def lines(self) -> list[str]:
        failed = ", ".join(f"{reason} {n}" for reason, n in sorted(self.failed.items())) or "none"
        verb = "scored" if self.kind == "score" else "corrected"
        lines = [f"{verb} {self.done} of {self.selected} rationales; failed: {failed}",
                 f"calls sent {self.calls}, reused from the store {self.reused}; tokens {self.tokens_in} in, "
                 f"{self.tokens_out} out; cost ${self.cost_usd:.4f}", *_cached_line(self.cached_tokens_in, "were")]
        if self.elsewhere:
            lines.append(f"{self.elsewhere} answered by another collector on this store")
        lines += self._skipped()
        if self.stopped:
            lines.append(self.stopped)
        return lines


@dataclass
class DryRunSummary(_Selected):
    """What a run would send and cost; `batch` prices at the Batch API discount."""

    batch: bool = False
    est_calls: int = 0
    est_stored: int = 0
    est_tokens_in: int = 0
    est_tokens_out: int = 0
    est_cached_tokens_in: int = 0
    est_cost_usd: float = 0.0
    # Calibration on the store's past calls (teacher/calibration.py): how many, of which prompt
    # and teacher, and the range of total tokens their ratios span.
    est_calibrated_from: int = 0
    est_prompt: str = ""
    est_tokens_low: int = 0
    est_tokens_high: int = 0

    def lines(self) -> list[str]:
        priced = f" at the Batch API price ({BATCH_DISCOUNT:.0%})" if self.batch else ""
        tokens = f"{self.est_tokens_in:,} in, {self.est_tokens_out:,} out (without repairs)"
        if self.est_calibrated_from:
            tokens = (f"≈{self.est_tokens_in + self.est_tokens_out:,} ({self.est_tokens_low:,}-"
                      f"{self.est_tokens_high:,} from {self.est_calibrated_from} past calls of {self.est_prompt}): "
                      + tokens)
        elif self.est_calls:
            tokens += f", from the prompts' length (no past calls of {self.est_prompt} to calibrate on)"
        return [f"dry run: {self.selected} rationales to {self.kind}, {self.est_calls} calls to send "
                f"({self.est_stored} answered from the store); nothing was sent",
                f"estimated tokens: {tokens}; estimated cost ${self.est_cost_usd:.4f}{priced}",
                *_cached_line(self.est_cached_tokens_in, "would be"), *self._skipped()]


@dataclass
class BatchSummary(_Selected):
    """The batches a `--batch` run submitted (remote ids) and how many requests they hold."""

    batches: list[str] = field(default_factory=list)
    requests: int = 0

    def lines(self) -> list[str]:
        return [f"submitted {self.requests} requests for {self.selected} rationales in "
                f"{len(self.batches)} batches: {', '.join(self.batches) or '-'}",
                "`ares batch status` shows their progress; `ares batch ingest` stores the answers", *self._skipped()]


CollectSummary = Union[OnlineSummary, DryRunSummary, BatchSummary]


@dataclass(frozen=True)
class CollectProgress:
    """A progress report of an online run, sent after every unit of work."""

    kind: str
    total: int  # rationales selected
    handled: int  # answered, failed, or found done by another collector
    failed: int
    calls: int  # requests sent so far
    tokens: int
    cost_usd: float


ProgressCallback = Callable[[CollectProgress], None]


def _claims(store: Store, request: CollectRequest, teacher: TeacherConfig) -> Claims:
    """The leases of a run, online or `--batch`: a rationale is taken while it still lacks an
    answer and is in no batch waiting to be ingested (checked inside the claim)."""
    selection = request.selection
    pending = batch_api.in_open_batches(request.kind, teacher)

    def open_(session: Session, rationale_id: int) -> bool:
        stmt = select(Rationale.id).where(Rationale.id == rationale_id, Rationale.id.not_in(pending), *still_open(
            selection.kind, teacher, selection.grouped, selection.retry_failed))
        return session.exec(stmt).first() is not None

    return Claims(store, request.kind, "|".join(teacher_key(request.kind, teacher, selection.grouped)), open_,
                  request.lease_s)


async def collect(store: Store, teacher: TeacherConfig, request: CollectRequest, *,
                  client: TeacherClient | None = None, progress: ProgressCallback | None = None) -> CollectSummary:
    """Run one collector request; every answer is committed as it arrives."""
    if is_local(teacher):
        if request.kind != "score" or request.batch is not None:
            raise TeacherError(f"--provider {teacher.provider.value} scores sentences here: it writes no "
                               "corrections and takes no --batch")
        request = replace(request, grouped=False)  # one rationale per request; the answerer batches them
        teacher = local_teacher(store, teacher)
    selection = request.selection
    pending = batch_api.in_open_batches(request.kind, teacher)
    with store.session() as session:
        jobs = select_jobs(session, teacher, selection, only=request.only, exclude=pending)
        waiting = open_rationales(session, teacher, selection, request.only).where(Rationale.id.in_(pending))
        in_batches = session.exec(select(func.count()).select_from(waiting.subquery())).one()
    work = units([j for j in jobs if j.sentences], selection.grouped, request.group_cap)
    counts = dict(kind=request.kind, selected=sum(len(unit) for unit in work),
                  skipped_empty=sum(1 for j in jobs if not j.sentences), in_batches=in_batches)
    build = functools.partial(builder(request.kind, teacher), store, grouped=selection.grouped)
    if request.dry_run:
        dry = DryRunSummary(**counts, batch=request.batch is not None)
        _estimate(store, teacher, [build(unit) for unit in work], dry,
                  BATCH_DISCOUNT if request.batch is not None else 1.0, request.retry_failed)
        return dry
    if request.batch is not None:
        prompt = prompt_name(request.kind, selection.grouped, in_points(teacher))
        created = await batch_api.submit(store, teacher, request.kind, prompt, work, build,
                                         _claims(store, request, teacher), request.batch,
                                         retry_failed=request.retry_failed)
        return BatchSummary(**counts, batches=[row.remote_id for row in created],
                            requests=sum(row.request_count for row in created))
    summary = OnlineSummary(**counts)
    tally = Tally()
    async with AsyncExitStack() as stack:
        answer = local_answerer(store, teacher) if is_local(teacher) else \
            online(await stack.enter_async_context(client or TeacherClient(teacher, store=store)))
        claims = _claims(store, request, teacher)
        runner = CallRunner(store, teacher, answer, tally=tally, max_cost=request.max_cost, claims=claims,
                            retry_failed=request.retry_failed,
                            in_batch=functools.partial(batch_api.request_in_open_batch, store))
        async with claims.heartbeat():
            await _run_all(runner, claims, work, build, summary, progress, teacher.concurrency)
    summary.calls, summary.reused = tally.sent, tally.reused
    summary.tokens_in, summary.tokens_out, summary.cost_usd = tally.tokens_in, tally.tokens_out, tally.cost_usd
    summary.cached_tokens_in = tally.cached_tokens_in
    return summary


def _estimate(store: Store, teacher: TeacherConfig, tasks: list[Task], summary: DryRunSummary,
              price_factor: float = 1.0, retry_failed: bool = False) -> None:
    """Tokens and cost of the calls not answered from the store (given-up ones are asked again
    with `retry_failed`); the prompt-cache share counts each request's head already sent by an
    earlier one (providers cache heads of 1024+ tokens). With past calls of the same prompt
    version and teacher, the length-based estimate is scaled by what the provider counted for
    them, and their spread gives a range."""
    cache = PrefixCache()
    raw_in = raw_cached = 0
    for task in tasks:
        body, _, key = request_key(teacher, task, task.ask)
        if stored_answer(store, key, retry_failed) is not None:
            summary.est_stored += 1
            continue
        summary.est_calls += 1
        raw_in += estimate_tokens(body)
        raw_cached += cache.read(body)
        summary.est_tokens_out += estimate_out(task)
    if tasks:
        template = load(tasks[0].prompt)
        summary.est_prompt = f"{template.name} (version {template.version[:8]}) with {teacher.model}"
        past = calibrate(store, teacher.model, template.name, template.version)
        summary.est_calibrated_from = past.calls
        if past.calls:
            summary.est_tokens_out = round(raw_in * past.tokens_out)
            summary.est_tokens_low, summary.est_tokens_high = round(raw_in * past.low), round(raw_in * past.high)
        raw_in, raw_cached = round(raw_in * past.tokens_in), round(raw_cached * past.tokens_in)
    summary.est_tokens_in, summary.est_cached_tokens_in = raw_in, min(raw_cached, raw_in)
    summary.est_cost_usd = cost(teacher.model, summary.est_tokens_in, summary.est_tokens_out,
                                teacher.price_in, teacher.price_out, summary.est_cached_tokens_in) * price_factor


async def _run_all(runner: CallRunner, claims: Claims, work: list[list[Job]], build: Callable[[list[Job]], Task],
                   summary: OnlineSummary, progress: ProgressCallback | None, workers: int) -> None:
    """Run the units with `workers` coroutines; a permanent error or the budget stops new work.
    Every rationale of a unit is claimed; those another collector holds are looked at again
    (every tenth of a lease) until they are answered or their lease expires and they become ours.
    A group the provider refused is asked again in halves."""
    pending = iter(work)
    busy: list[list[Job]] = []
    fatal: list[BaseException] = []
    handled = 0

    def report(size: int) -> None:
        nonlocal handled
        handled += size
        if progress is not None:
            tally = runner.tally
            progress(CollectProgress(summary.kind, summary.selected, handled, sum(summary.failed.values()),
                                     tally.sent, tally.tokens_in + tally.tokens_out, tally.cost_usd))

    async def ask(jobs: list[Job]) -> None:
        task = build(jobs)
        try:
            outcome = await runner.run(task)
        except Deferred:  # its request is a line of a batch not ingested yet
            summary.in_batches += len(jobs)
            report(len(jobs))
            return
        halves = refused_group(outcome, task, jobs)
        # A grouped call that failed may have stored some lists first: `covers` is what is left.
        left = 0 if outcome.status == CallStatus.ok else len(task.covers) or len(jobs)
        summary.done += len(jobs) - left
        if left and not halves:
            summary.failed[outcome.reason or outcome.status] += left
        report(len(jobs) - left if halves else len(jobs))
        for half in halves:
            await ask(half)

    async def worker() -> None:
        for unit in pending:
            if fatal or summary.stopped:
                return
            taken, held = await asyncio.to_thread(claim_unit, claims, unit)
            if len(unit) > len(taken) + len(held):
                summary.elsewhere += len(unit) - len(taken) - len(held)
                report(len(unit) - len(taken) - len(held))
            if held:
                busy.append(held)
            if not taken:
                continue
            try:
                await ask(taken)
            except BudgetReached as exc:
                summary.stopped = str(exc)
            except Exception as exc:  # noqa: BLE001 - stops every worker, re-raised below
                fatal.append(exc)
            finally:
                await asyncio.to_thread(claims.release, *(job.rationale.id for job in taken))

    while True:
        await asyncio.gather(*(worker() for _ in range(max(1, min(workers, len(work))))))
        if not busy or fatal or summary.stopped:
            break
        await asyncio.sleep(claims.lease.total_seconds() / 10)
        pending, busy = iter(busy), []
    if fatal:
        raise fatal[0]


async def collect_scores(store: Store, teacher: TeacherConfig, *, round: int | None = None,
                         rationales: str = "student", limit: int | None = None, dry_run: bool = False,
                         max_cost: float | None = None, progress: ProgressCallback | None = None,
                         client: TeacherClient | None = None, lease_s: float = 120.0,
                         checkpoint: str | None = None, group_by_question: bool = False,
                         batch: BatchLimits | None = None, retry_failed: bool = False,
                         group_cap: GroupCap = GroupCap()) -> CollectSummary:
    """Score every sentence of the selected rationales (`collect` with a score request).
    `group_by_question` asks about all rationales of a question in one call (`ares collect-scores`
    does by default: it costs less than half the input tokens, docs/benchmarks.md).
    `batch` submits the calls to the OpenAI Batch API instead (batch.py)."""
    request = CollectRequest("score", CollectedRationales(rationales), round, limit, checkpoint, group_by_question,
                             dry_run, max_cost, lease_s, batch, retry_failed, group_cap)
    return await collect(store, teacher, request, client=client, progress=progress)


async def collect_corrections(store: Store, teacher: TeacherConfig, *, round: int | None = None,
                              rationales: str = "student", limit: int | None = None, dry_run: bool = False,
                              max_cost: float | None = None, progress: ProgressCallback | None = None,
                              client: TeacherClient | None = None, lease_s: float = 120.0,
                              checkpoint: str | None = None, batch: BatchLimits | None = None,
                              retry_failed: bool = False) -> CollectSummary:
    """Minimally correct the selected rationales; each correction becomes a new rationale."""
    request = CollectRequest("correct", CollectedRationales(rationales), round, limit, checkpoint, False, dry_run,
                             max_cost, lease_s, batch, retry_failed)
    return await collect(store, teacher, request, client=client, progress=progress)
