"""Collectors: sentence scores and corrections for the rationales of a round.

Both select the rationales that still lack an answer from this teacher model and prompt
version, turn each into a `Task`, and run the tasks with `concurrency` workers over one
client. A dry run builds the same requests and counts what would be sent. Each rationale is
claimed with a lease first (claims.py), so several collectors on one store share the work.
With `group_by_question` the rationales of one question are scored in one call (grouped.py);
a unit of work is then the claimed rationales of one question.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import exists
from sqlmodel import Session, select

from ..errors import TeacherError
from ..tables import (Correction, ModelCheckpoint, Question, Rationale, Sentence, SentenceScore, TeacherBatchRequest,
                      TeacherCall, TeacherCallRationale)
from ..store import Store
from .claims import Claim, Claims
from .calls import BudgetReached, CallRunner, Outcome, Tally, Task, estimate_out, request_key, stored_answer
from .client import TeacherClient
from .config import RationaleSource, TeacherConfig
from .grouped import SCORE_GROUP, group_task
from .logprobs import expectations, lookup, score_row
from .pricing import BATCH_DISCOUNT, PrefixCache, cost, estimate_tokens
from .prompts import CORRECT, SCORE, correct_ask, load, score_ask
from .validation import parse_correction, parse_scores

if TYPE_CHECKING:
    from .batch import BatchLimits


def batch_module():  # noqa: ANN201 - batch.py imports this module; imported on use, not at import
    from . import batch

    return batch


@dataclass
class CollectSummary:
    kind: str
    selected: int = 0
    done: int = 0
    failed: Counter = field(default_factory=Counter)
    skipped_empty: int = 0
    calls: int = 0
    reused: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens_in: int = 0
    cost_usd: float = 0.0
    stopped: Optional[str] = None
    elsewhere: int = 0
    dry_run: bool = False
    est_calls: int = 0
    est_stored: int = 0
    est_tokens_in: int = 0
    est_tokens_out: int = 0
    est_cached_tokens_in: int = 0
    est_cost_usd: float = 0.0
    batch: bool = False  # --batch: priced at the Batch API discount; `batches` names those submitted
    batches: list[str] = field(default_factory=list)
    batch_requests: int = 0

    def lines(self) -> list[str]:
        if self.dry_run:
            priced = f" at the Batch API price ({BATCH_DISCOUNT:.0%})" if self.batch else ""
            return [f"dry run: {self.selected} rationales to {self.kind}, {self.est_calls} calls to send "
                    f"({self.est_stored} answered from the store); nothing was sent",
                    f"estimated tokens: {self.est_tokens_in} in, {self.est_tokens_out} out "
                    f"(without repairs); estimated cost ${self.est_cost_usd:.4f}{priced}",
                    *self._cached_line(self.est_cached_tokens_in, "would be")]
        if self.batch:
            return [f"submitted {self.batch_requests} requests for {self.selected} rationales in "
                    f"{len(self.batches)} batches: {', '.join(self.batches) or '-'}",
                    "`ares batch status` shows their progress; `ares batch ingest` stores the answers"]
        failed = ", ".join(f"{reason} {n}" for reason, n in sorted(self.failed.items())) or "none"
        verb = "scored" if self.kind == "score" else "corrected"
        lines = [f"{verb} {self.done} of {self.selected} rationales; failed: {failed}",
                 f"calls sent {self.calls}, reused from the store {self.reused}; tokens {self.tokens_in} in, "
                 f"{self.tokens_out} out; cost ${self.cost_usd:.4f}", *self._cached_line(self.cached_tokens_in, "were")]
        if self.elsewhere:
            lines.append(f"{self.elsewhere} answered by another collector on this store")
        if self.skipped_empty:
            lines.append(f"skipped {self.skipped_empty} rationales without sentences")
        if self.stopped:
            lines.append(self.stopped)
        return lines


    @staticmethod
    def _cached_line(tokens: int, verb: str) -> list[str]:
        return [f"{tokens} input tokens {verb} read from the provider's prompt cache"] if tokens else []


@dataclass
class _Job:
    rationale: Rationale
    question: Question
    sentences: list[Sentence]


def _prompt(kind: str, grouped: bool) -> str:
    return CORRECT if kind == "correct" else SCORE_GROUP if grouped else SCORE


def _teacher_key(kind: str, teacher: TeacherConfig, grouped: bool = False) -> tuple[str, str]:
    return teacher.model, load(_prompt(kind, grouped)).version


def _still_open(kind: str, teacher: TeacherConfig, grouped: bool = False) -> tuple:
    """WHERE clauses: the rationale has no `ok` answer (nor a given-up chain, single or grouped)
    from this model and prompt version."""
    model, version = _teacher_key(kind, teacher, grouped)
    same_teacher = (TeacherCall.model == model, TeacherCall.prompt_version == version)
    if kind == "score":
        answered = exists().where(SentenceScore.sentence_id == Sentence.id, Sentence.rationale_id == Rationale.id,
                                  TeacherCall.id == SentenceScore.teacher_call_id, *same_teacher)
    else:
        answered = exists().where(Correction.rationale_id == Rationale.id,
                                  TeacherCall.id == Correction.teacher_call_id, *same_teacher)
    given_up = exists().where(TeacherCall.rationale_id == Rationale.id, TeacherCall.kind == kind,
                              TeacherCall.status == "failed", *same_teacher)
    given_up_in_group = exists().where(
        TeacherCallRationale.rationale_id == Rationale.id, TeacherCall.id == TeacherCallRationale.teacher_call_id,
        TeacherCall.kind == kind, TeacherCall.status == "failed", *same_teacher)
    return ~answered, ~given_up, ~given_up_in_group


def _claims(store: Store, kind: str, teacher: TeacherConfig, lease_s: float, grouped: bool = False) -> Claims:
    def still_open(session: Session, rationale_id: int) -> bool:
        stmt = select(Rationale.id).where(Rationale.id == rationale_id, *_still_open(kind, teacher, grouped))
        return session.exec(stmt).first() is not None

    return Claims(store, kind, "|".join(_teacher_key(kind, teacher, grouped)), still_open, lease_s)


def _select(session: Session, kind: str, teacher: TeacherConfig, source: RationaleSource,
            round: int | None, limit: int | None, checkpoint: str | None = None,
            grouped: bool = False, only: Any = None, exclude: Any = None) -> list[_Job]:
    """Rationales without an `ok` answer (or a given-up chain) from this model and prompt version;
    `checkpoint` keeps those one student checkpoint wrote (a round holds rollouts of two).
    `only` (ids, or a subquery of them) replaces the source filter; `exclude` leaves ids out."""
    stmt = select(Rationale).where(*_still_open(kind, teacher, grouped)).order_by(Rationale.id)
    stmt = stmt.where(Rationale.source == source.value) if only is None else stmt.where(Rationale.id.in_(only))
    if exclude is not None:
        stmt = stmt.where(Rationale.id.not_in(exclude))
    if round is not None and source is RationaleSource.student:
        stmt = stmt.where(Rationale.round == round)
    if checkpoint is not None:
        found = session.exec(select(ModelCheckpoint.id).where(ModelCheckpoint.name == checkpoint)).first()
        if found is None:
            raise TeacherError(f"no checkpoint named {checkpoint!r} in the store")
        stmt = stmt.where(Rationale.model_checkpoint_id == found)
    if limit is not None:
        stmt = stmt.limit(limit)
    rationales = list(session.exec(stmt))
    ids = [r.id for r in rationales]
    questions = {q.id: q for q in session.exec(select(Question).where(
        Question.id.in_({r.question_id for r in rationales})))} if ids else {}
    sentences: dict[int, list[Sentence]] = {i: [] for i in ids}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk:chunk + 500]
        for s in session.exec(select(Sentence).where(Sentence.rationale_id.in_(part)).order_by(Sentence.idx)):
            sentences[s.rationale_id].append(s)
    return [_Job(r, questions[r.question_id], sentences[r.id]) for r in rationales]


def _units(jobs: list[_Job], grouped: bool) -> list[list[_Job]]:
    """Units of work: one rationale each, or the rationales of one question (in selection order)."""
    if not grouped:
        return [[job] for job in jobs]
    by_question: dict[int, list[_Job]] = {}
    for job in jobs:
        by_question.setdefault(job.question.id, []).append(job)
    return list(by_question.values())


def _score_task(store: Store, jobs: list[_Job], grouped: bool = False) -> Task:
    if grouped:
        return group_task(jobs)
    [job] = jobs
    texts = [s.text for s in job.sentences]

    def persist(session: Session, call: TeacherCall, scores: list[float]) -> None:
        weighted = expectations(call.response or "", call.score_logprobs)
        for i, (sentence, score) in enumerate(zip(job.sentences, scores)):
            session.add(score_row(sentence.id, call.id, score, lookup(weighted, None, i)))

    return Task("score", SCORE, score_ask(job.question, texts), lambda text: parse_scores(text, len(texts)),
                {"n": len(texts)}, job.question.id, job.rationale.id, persist)


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _correct_task(store: Store, jobs: list[_Job], grouped: bool = False) -> Task:
    [job] = jobs
    original = job.rationale
    ask = correct_ask(job.question, original.text)
    prompt_texts = [ask.system] + [p["text"] for p in ask.parts if p["type"] == "text"]

    def persist(session: Session, call: TeacherCall, corrected: str) -> None:
        row, created = store.add_rationale(
            session, question_id=original.question_id, source="correction", text=corrected,
            dedup_key=f"correction:{call.id}:{original.id}", model_checkpoint_id=original.model_checkpoint_id,
            parent_rationale_id=original.id, round=original.round, sample_index=original.sample_index)
        if created:
            session.add(Correction(rationale_id=original.id, teacher_call_id=call.id, corrected_rationale_id=row.id,
                                   text=corrected, edit_distance=levenshtein(original.text, corrected)))

    return Task("correct", CORRECT, ask, lambda text: parse_correction(text, original.text, prompt_texts),
                {"rationale": original.text}, job.question.id, original.id, persist)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[cpm]:.0f} calls/min"), TimeRemainingColumn(),
        TextColumn("{task.fields[tokens]} tokens ${task.fields[cost]:.4f} failed {task.fields[failed]}"),
        console=Console(stderr=True), disable=not enabled,
    )


async def _collect(store: Store, teacher: TeacherConfig, kind: str,
                   make_task: Callable[[Store, list[_Job], bool], Task], *, round: int | None, rationales: str,
                   limit: int | None, dry_run: bool, max_cost: float | None, progress: bool,
                   client: TeacherClient | None = None, lease_s: float = 120.0,
                   checkpoint: str | None = None, grouped: bool = False,
                   batch: "BatchLimits | None" = None) -> CollectSummary:
    source = RationaleSource(rationales)
    if batch is not None and max_cost is not None:
        raise TeacherError("--max-cost applies to online calls; with --batch, --dry-run shows the cost first")
    pending = batch_module().in_open_batches(kind, teacher) if batch is not None else None
    with store.session() as session:
        jobs = _select(session, kind, teacher, source, round, limit, checkpoint, grouped, exclude=pending)
    summary = CollectSummary(kind, dry_run=dry_run, batch=batch is not None)
    summary.skipped_empty = sum(1 for j in jobs if not j.sentences)
    units = _units([j for j in jobs if j.sentences], grouped)
    summary.selected = sum(len(unit) for unit in units)
    build = functools.partial(make_task, store, grouped=grouped)
    if dry_run:
        _estimate(store, teacher, [build(unit) for unit in units], summary, BATCH_DISCOUNT if batch else 1.0)
        return summary
    if batch is not None:
        created = await batch_module().submit(store, teacher, kind, _prompt(kind, grouped), units, build, batch)
        summary.batches = [row.remote_id for row in created]
        summary.batch_requests = sum(row.request_count for row in created)
        return summary
    tally = Tally()
    async with (client or TeacherClient(teacher)) as opened:
        runner = CallRunner(store, opened, tally, max_cost)
        claims = _claims(store, kind, teacher, lease_s, grouped)
        async with claims.heartbeat():
            await _run_all(runner, claims, units, build, summary, progress, teacher.concurrency)
    summary.calls, summary.reused = tally.sent, tally.reused
    summary.tokens_in, summary.tokens_out, summary.cost_usd = tally.tokens_in, tally.tokens_out, tally.cost_usd
    summary.cached_tokens_in = tally.cached_tokens_in
    return summary


def _estimate(store: Store, teacher: TeacherConfig, tasks: list[Task], summary: CollectSummary,
              price_factor: float = 1.0) -> None:
    """Tokens and cost of the calls not answered from the store; the prompt-cache share counts
    each request's head already sent by an earlier one (providers cache heads of 1024+ tokens)."""
    cache = PrefixCache()
    for task in tasks:
        body, _, key = request_key(teacher, task, task.ask)
        if stored_answer(store, key) is not None:
            summary.est_stored += 1
            continue
        summary.est_calls += 1
        summary.est_tokens_in += estimate_tokens(body)
        summary.est_cached_tokens_in += cache.read(body)
        summary.est_tokens_out += estimate_out(task)
    summary.est_cost_usd = cost(teacher.model, summary.est_tokens_in, summary.est_tokens_out,
                                teacher.price_in, teacher.price_out, summary.est_cached_tokens_in) * price_factor


async def _run_all(runner: CallRunner, claims: Claims, units: list[list[_Job]], build: Callable[[list[_Job]], Task],
                   summary: CollectSummary, progress: bool, workers: int) -> None:
    """Run the units with `workers` coroutines; a permanent error or the budget stops new work.
    Every rationale of a unit is claimed; those another collector holds are looked at again
    (every tenth of a lease) until they are answered or their lease expires and they become ours."""
    pending = iter(units)
    busy: list[list[_Job]] = []
    fatal: list[BaseException] = []
    started = time.monotonic()
    with _progress(progress) as bar:
        task_id = bar.add_task(summary.kind, total=summary.selected, cpm=0.0, tokens=0, cost=0.0, failed=0)

        def advance(task: Task, size: int, outcome: Outcome) -> None:
            # A grouped call that failed may have stored some lists first: `covers` is what is left.
            left = 0 if outcome.status == "ok" else len(task.covers) or size
            summary.done += size - left
            if left:
                summary.failed[outcome.reason or outcome.status] += left
            tally = runner.tally
            minutes = max((time.monotonic() - started) / 60, 1e-9)
            bar.update(task_id, advance=size, cpm=tally.sent / minutes, tokens=tally.tokens_in + tally.tokens_out,
                       cost=tally.cost_usd, failed=sum(summary.failed.values()))

        async def worker() -> None:
            for unit in pending:
                if fatal or summary.stopped:
                    return
                taken: list[_Job] = []
                held: list[_Job] = []
                for job in unit:
                    claim = claims.take(job.rationale.id)
                    if claim is Claim.taken:
                        taken.append(job)
                    elif claim is Claim.busy:
                        held.append(job)
                    else:
                        summary.elsewhere += 1
                        bar.update(task_id, advance=1)
                if held:
                    busy.append(held)
                if not taken:
                    continue
                task = build(taken)
                try:
                    advance(task, len(taken), await runner.run(task))
                except BudgetReached as exc:
                    summary.stopped = str(exc)
                except Exception as exc:  # noqa: BLE001 - stops every worker, re-raised below
                    fatal.append(exc)
                finally:
                    for job in taken:
                        claims.release(job.rationale.id)

        while True:
            await asyncio.gather(*(worker() for _ in range(max(1, min(workers, len(units))))))
            if not busy or fatal or summary.stopped:
                break
            await asyncio.sleep(claims.lease.total_seconds() / 10)
            pending, busy = iter(busy), []
    if fatal:
        raise fatal[0]


async def collect_scores(store: Store, teacher: TeacherConfig, *, round: int | None = None,
                         rationales: str = "student", limit: int | None = None, dry_run: bool = False,
                         max_cost: float | None = None, progress: bool = True,
                         client: TeacherClient | None = None, lease_s: float = 120.0,
                         checkpoint: str | None = None, group_by_question: bool = False,
                         batch: "BatchLimits | None" = None) -> CollectSummary:
    """Score every sentence of the selected rationales; each answer is committed as it arrives.
    `group_by_question` asks about all rationales of a question in one call (`ares collect-scores`
    does by default: it costs less than half the input tokens, docs/benchmarks.md).
    `batch` submits the calls to the OpenAI Batch API instead (batch.py)."""
    return await _collect(store, teacher, "score", _score_task, round=round, rationales=rationales, limit=limit,
                          dry_run=dry_run, max_cost=max_cost, progress=progress, client=client, lease_s=lease_s,
                          checkpoint=checkpoint, grouped=group_by_question, batch=batch)


async def collect_corrections(store: Store, teacher: TeacherConfig, *, round: int | None = None,
                              rationales: str = "student", limit: int | None = None, dry_run: bool = False,
                              max_cost: float | None = None, progress: bool = True,
                              client: TeacherClient | None = None, lease_s: float = 120.0,
                              checkpoint: str | None = None, batch: "BatchLimits | None" = None) -> CollectSummary:
    """Minimally correct the selected rationales; each correction becomes a new rationale."""
    return await _collect(store, teacher, "correct", _correct_task, round=round, rationales=rationales,
                          limit=limit, dry_run=dry_run, max_cost=max_cost, progress=progress, client=client,
                          lease_s=lease_s, checkpoint=checkpoint, batch=batch)


def batch_tasks(store: Store, teacher: TeacherConfig, batch: Any) -> list[Task]:
    """The tasks of a batch's rationales still open, built as `--batch` built them (batch.ingest)."""
    grouped = batch.prompt_name == SCORE_GROUP
    linked = select(TeacherBatchRequest.rationale_id).where(TeacherBatchRequest.batch_id == batch.id)
    with store.session() as session:
        jobs = _select(session, batch.kind, teacher, RationaleSource.student, None, None, grouped=grouped, only=linked)
    make = _score_task if batch.kind == "score" else _correct_task
    return [make(store, unit, grouped) for unit in _units([j for j in jobs if j.sentences], grouped)]
