"""`ares batch ingest`: store the answers of every ended batch, once per batch.

Every output line is matched by `custom_id` to the request recorded at submit, whatever the
flags are now, and the task of its rationales runs with that request answered from the file:
validation, audit rows and what an answer writes are the online path's own. The task is built
as the batch was: its prompt (grouped or not, scores in whole points or not) and prompt version
come from the batch's row, its model too. A line that cannot be read is recorded on its request
and skipped; a line the API refused (4xx) fails its rationales (a refused group is split by the
next run); a line without an answer (5xx, expired) is asked again by the next `--batch` run, and
so is the repair of an invalid answer. A line answering a request that has an answer already
(asked online meanwhile) is kept too: its attempt joins the stored call, so its cost shows in SQL.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import select

from ..enums import AttemptOutcome, CallStatus
from ..errors import CallFailed
from ..store import Store
from ..tables import TeacherBatch, TeacherBatchRequest, utcnow
from .calls import CallRunner, Deferred, stored_answer
from .client import Attempt, Reply, ending, parse_reply, reasoning_tokens
from .config import Provider, ScoreFrom, TeacherConfig
from .grouped import SCORE_GROUP, SCORE_GROUP_POINTS
from .logprobs import logprob_content
from .pricing import BATCH_DISCOUNT
from .prompts import SCORE_POINTS
from .batch_remote import CREATING, ENDED, BatchApi, refresh
from .tasks import builder, jobs_of

GROUPED = (SCORE_GROUP, SCORE_GROUP_POINTS)
IN_POINTS = (SCORE_POINTS, SCORE_GROUP_POINTS)


class _Replaying:
    """Answerer from a batch's output and error files; other requests wait for a later batch."""

    def __init__(self, results: dict[str, Reply | CallFailed]):
        self.results = results

    async def __call__(self, body: dict, key: str) -> Reply:
        found = self.results.get(key)
        if found is None:
            raise Deferred(key)
        if isinstance(found, CallFailed):
            raise found
        return found


def _failure(item: dict[str, Any], status: int | None, body: Any, started: datetime) -> CallFailed:
    """The error of a line without an answer: a 4xx refused that request (its rationales fail),
    anything else (5xx, expired, cancelled) is asked again by the next run."""
    error = item.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
    message = " ".join(str(error.get("message") or error or "no answer").split())[:200]
    refused = status is not None and 400 <= status < 500 and status not in (408, 409, 429)
    outcome = AttemptOutcome.client_error if refused else AttemptOutcome.server_error
    log = [Attempt(1, outcome, started, http_status=status, error=message)]
    return CallFailed(f"batch request failed (HTTP {status}): {message}", 1, refused, log=log, rejected=refused)


def _reply(body: dict[str, Any], started: datetime, request_id: str | None = None) -> Reply:
    """The answer of a 200 line, with its one attempt (what the line was billed)."""
    text, tokens_in, tokens_out, cached = parse_reply(Provider.openai, body)
    usage = body.get("usage") or {}
    written = usage.get("cache_creation_input_tokens")
    finish, refusal = ending(Provider.openai, body)
    snapshot = body.get("model") if isinstance(body.get("model"), str) else None
    reasoning = reasoning_tokens(body)
    attempt = Attempt(1, AttemptOutcome.ok, started, http_status=200, request_id=request_id, model_snapshot=snapshot,
                      tokens_in=tokens_in, tokens_out=tokens_out, reasoning_tokens=reasoning,
                      cached_tokens_in=cached, cache_write_tokens_in=written)
    return Reply(text, tokens_in, tokens_out, cached, 1, 0.0, written, logprob_content(body["choices"][0]),
                 reasoning_tokens=reasoning, request_id=request_id, model_snapshot=snapshot, log=[attempt],
                 finish_reason=finish, refusal=refusal)


def _results(output: str, errors: str, started: datetime) -> tuple[dict[str, Reply | CallFailed], dict[str, str], int]:
    """(custom_id -> the answer or the failure, custom_id -> why its line is unreadable,
    lines without even a custom_id)."""
    found: dict[str, Reply | CallFailed] = {}
    bad: dict[str, str] = {}
    lost = 0
    for line in (output + "\n" + errors).splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key = item["custom_id"]
        except (ValueError, KeyError, TypeError):
            lost += 1
            continue
        response = item.get("response") or {}
        body, status = response.get("body") or {}, response.get("status_code")
        if status != 200:
            found[key] = _failure(item, status, body, started)
            continue
        try:
            found[key] = _reply(body, started, response.get("request_id"))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            bad[key] = f"unreadable batch reply ({exc.__class__.__name__})"
    return found, bad, lost


@dataclass
class IngestSummary:
    batches: int = 0
    waiting: list[str] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    errors: int = 0
    deferred: int = 0
    unmatched: int = 0
    unreadable: int = 0
    duplicates: int = 0
    cost_usd: float = 0.0

    def lines(self) -> list[str]:
        lines = [f"ingested {self.batches} batches: {self.ok} answered, {self.failed} given up, {self.errors} "
                 f"without an answer (asked again by the next run); cost ${self.cost_usd:.4f}"]
        if self.deferred:
            lines.append(f"{self.deferred} need another request (repairs of invalid answers): "
                         "run the same collect command with --batch again")
        if self.unreadable:
            lines.append(f"{self.unreadable} output lines could not be read (recorded in teacher_batch_request; "
                         "their rationales are asked again by the next run)")
        if self.duplicates:
            lines.append(f"{self.duplicates} answers were for requests answered before (kept as attempts of the "
                         "stored call: teacher_attempt)")
        if self.unmatched:
            lines.append(f"{self.unmatched} batch answers matched no request of their batch")
        if self.waiting:
            lines.append(f"not ended yet: {', '.join(self.waiting)}")
        if not self.batches and not self.waiting:
            lines.append("no batch is waiting to be ingested (`ares batch status` lists them)")
        return lines


def _requests(store: Store, row: TeacherBatch) -> dict[str, tuple[TeacherBatchRequest, list[int]]]:
    """request hash -> (its first line, its rationales in the order they were asked about)."""
    found: dict[str, tuple[TeacherBatchRequest, list[int]]] = {}
    with store.session() as session:
        for line in session.exec(select(TeacherBatchRequest).where(TeacherBatchRequest.batch_id == row.id)
                                 .order_by(TeacherBatchRequest.id)):
            found.setdefault(line.request_hash, (line, []))[1].append(line.rationale_id)
    return found


def _mark(store: Store, row: TeacherBatch, key: str, status: str, error: str | None = None) -> None:
    with store.session() as session:
        for line in session.exec(select(TeacherBatchRequest).where(TeacherBatchRequest.batch_id == row.id,
                                                                   TeacherBatchRequest.request_hash == key)):
            line.status, line.error = status, error
            session.add(line)


def as_submitted(teacher: TeacherConfig, row: TeacherBatch) -> TeacherConfig:
    """The teacher as the batch was submitted: its model, and scores in whole points when its
    prompt asked for them (`--score-from logprobs`), whatever the flags are now."""
    score_from = ScoreFrom.logprobs if row.prompt_name in IN_POINTS else ScoreFrom.sampled
    return dataclasses.replace(teacher, model=row.model, score_from=score_from)


async def _ingest_one(store: Store, teacher: TeacherConfig, opened: BatchApi, row: TeacherBatch,
                      summary: IngestSummary) -> None:
    output = await opened.content(row.output_file_id) if row.output_file_id else ""
    errors = await opened.content(row.error_file_id) if row.error_file_id else ""
    results, bad, lost = _results(output, errors, row.created_at)
    config = as_submitted(teacher, row)
    # retry_failed: a line was sent on purpose, its answer replaces a given-up row of its request
    runner = CallRunner(store, config, _Replaying(results), price_factor=BATCH_DISCOUNT, retry_failed=True)
    grouped, make = row.prompt_name in GROUPED, builder(row.kind, config)
    requests = _requests(store, row)
    for key, (line, rationale_ids) in requests.items():
        if key in bad:
            summary.unreadable += 1
            _mark(store, row, key, "unreadable", bad[key])
            continue
        if key not in results:
            continue  # no line at all (an expired batch): the next --batch run asks again
        stored = line.request or {}  # a batch submitted before migration 0011 kept no body
        answer = results[key]
        if isinstance(answer, Reply) and stored_answer(store, key, retry_failed=True) is not None:
            runner.keep_duplicate(key, answer, stored)
            summary.duplicates += 1
        with store.session() as session:
            jobs = [j for j in jobs_of(session, rationale_ids) if j.sentences]
        # One task per rationale of a single request (identical rationales share it: the first
        # stores the answer, the others reuse it), one for all of a grouped one.
        for unit in ([jobs] if grouped else [[job] for job in jobs]) if jobs else []:
            task = make(store, unit, grouped)
            task.sent, task.version = (stored, stored, key, line.repair_of_id, line.repair), row.prompt_version
            try:
                outcome = await runner.run(task)
            except Deferred:
                summary.deferred += 1
                _mark(store, row, key, "answered")
                continue
            summary.ok += outcome.status == CallStatus.ok
            summary.failed += outcome.status == CallStatus.failed
            summary.errors += outcome.status == CallStatus.error
            _mark(store, row, key, "answered" if outcome.status == CallStatus.ok else outcome.status, outcome.reason)
    summary.unmatched += len(set(results) - set(requests)) + lost
    summary.cost_usd += runner.tally.cost_usd


async def ingest(store: Store, teacher: TeacherConfig, api: BatchApi | None = None,
                 model: str | None = None) -> IngestSummary:
    """Store the answers of every ended batch in the store (of `model` when given) not ingested yet."""
    summary = IngestSummary()
    async with (api or BatchApi(teacher)) as opened:
        rows, summary.waiting = await refresh(store, opened, model)
        for row in rows:
            if row.ingested_at is not None or row.status == CREATING:  # the latter are in `waiting` already
                continue
            if row.status not in ENDED:
                summary.waiting.append(f"{row.remote_id} ({row.status})")
                continue
            await _ingest_one(store, teacher, opened, row, summary)
            summary.batches += 1
            row.ingested_at = utcnow()
            with store.session() as session:
                session.merge(row)
    return summary
