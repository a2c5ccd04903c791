"""OpenAI Batch API mode: submit the pending calls as batches, later store their answers.

`collect-scores --batch` (and `collect-corrections --batch`) walks every selected task through
the same `CallRunner` as the online path, with another answerer: the request a task still needs
(the first, or the repair after a stored invalid answer) becomes a JSONL line whose `custom_id`
is the request hash. The lines go up in batches of at most `max_requests` lines and `max_bytes`
bytes (the API's 50,000 and 200 MB). Each line's stored body and hash are recorded with the
rationales it asks about (`teacher_batch_request`); a rationale in a batch not yet ingested is
not sent again.

Creating a batch is idempotent: its row is written (status `creating`, a fresh `ares_key`)
before the one `POST /batches`, which sends that key as metadata and is never retried; a
batch whose creation did not come back is found by its key on the next `status`, `ingest` or
`--batch` run (and created then only if the API has none).

`ares batch ingest` matches every output line by `custom_id` to the request recorded at submit,
whatever the flags are now, and runs the task of its rationales with that request answered from
the file: validation, audit rows and what an answer writes are the online path's own. A line
that cannot be read is recorded on its request and skipped; a line the API refused (4xx) fails
its rationales (not sent again); a line without an answer (5xx, expired) is asked again by the
next `--batch` run, and so is the repair of an invalid answer. A batch is ingested once. Stored
costs and dry-run estimates take the Batch API discount (pricing.BATCH_DISCOUNT).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import httpx
from sqlmodel import select

from ..enums import CallStatus
from ..errors import CallFailed, TeacherError
from ..store import Store
from ..tables import TeacherBatch, TeacherBatchRequest, utcnow
from .calls import CallRunner, Task
from .client import Reply, ending, parse_reply, reasoning_tokens, stored_body
from .config import Provider, TeacherConfig
from .logprobs import logprob_content
from .pricing import BATCH_DISCOUNT
from .prompts import load
from .retry import check_response, retrying
from .grouped import SCORE_GROUP, SCORE_GROUP_POINTS
from .tasks import builder, jobs_of

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDED = {"completed", "failed", "expired", "cancelled"}  # the API's terminal statuses
CREATING = "creating"  # ours: the row is written, POST /batches not known to have succeeded


@dataclass(frozen=True)
class BatchLimits:
    """The API's limits on one batch; smaller ones let a test split a job."""

    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES


class Deferred(Exception):
    """The request is not answered in this pass: it is (or goes) into a batch."""


class BatchApi:
    """The files and batches endpoints of an OpenAI-compatible server, with the client's retries."""

    def __init__(self, config: TeacherConfig, transport: httpx.AsyncBaseTransport | None = None):
        if config.provider is not Provider.openai:
            raise TeacherError("--batch speaks the OpenAI Batch API; use --provider openai")
        self.config = config
        key = config.api_key()
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self._redact = (lambda text: text.replace(key, "***")) if key else str
        self._http = httpx.AsyncClient(base_url=config.base_url, headers=headers, timeout=config.timeout,
                                       transport=transport)

    async def __aenter__(self) -> "BatchApi":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, attempts: int | None = None, **kwargs: Any) -> httpx.Response:
        try:
            async for attempt in retrying(attempts or self.config.max_attempts):
                with attempt:
                    response = await self._http.request(method, path, **kwargs)
                    check_response(response, self._redact)
                    return response
        except httpx.HTTPError as exc:
            raise TeacherError(f"batch API {method} {path}: {exc.__class__.__name__}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def upload(self, lines: bytes, name: str) -> str:
        files = {"file": (name, lines, "application/jsonl")}
        return (await self._call("POST", "/files", data={"purpose": "batch"}, files=files)).json()["id"]

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        """One attempt only: a retry after an answer that got lost would create a second batch."""
        body = {"input_file_id": input_file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
                "metadata": metadata}
        return (await self._call("POST", "/batches", attempts=1, json=body)).json()

    async def find(self, ares_key: str) -> dict[str, Any] | None:
        """The batch created with this `ares_key` in its metadata, if the API has one."""
        after: str | None = None
        while True:
            page = (await self._call("GET", "/batches", params={"limit": 100, **({"after": after} if after else {})}
                                     )).json()
            for remote in page.get("data") or []:
                if (remote.get("metadata") or {}).get("ares_key") == ares_key:
                    return remote
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    async def get(self, remote_id: str) -> dict[str, Any]:
        return (await self._call("GET", f"/batches/{remote_id}")).json()

    async def content(self, file_id: str) -> str:
        return (await self._call("GET", f"/files/{file_id}/content")).text


class _Collecting:
    """Answerer that keeps the request each task still needs instead of sending it."""

    def __init__(self) -> None:
        self.needed: dict[str, dict] = {}

    async def __call__(self, body: dict, key: str) -> Reply:
        self.needed[key] = body
        raise Deferred(key)


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


def chunks(lines: list[bytes], limits: BatchLimits) -> list[list[bytes]]:
    """Consecutive runs of lines, each within the limits on requests and bytes."""
    out: list[list[bytes]] = []
    size = 0
    for line in lines:
        if len(line) > limits.max_bytes:
            raise TeacherError(f"one batch request is {len(line)} bytes, over the {limits.max_bytes}-byte file limit")
        if not out or len(out[-1]) >= limits.max_requests or size + len(line) > limits.max_bytes:
            out.append([])
            size = 0
        out[-1].append(line)
        size += len(line)
    return out


def in_open_batches(kind: str, teacher: TeacherConfig) -> Any:
    """The rationales already in a batch of this teacher not yet ingested (a subquery)."""
    return (select(TeacherBatchRequest.rationale_id).join(TeacherBatch, TeacherBatch.id == TeacherBatchRequest.batch_id)
            .where(TeacherBatch.kind == kind, TeacherBatch.model == teacher.model,
                   TeacherBatch.ingested_at.is_(None)))  # type: ignore[union-attr]


async def _create(store: Store, api: BatchApi, row: TeacherBatch) -> None:
    """Create the remote batch of a `creating` row, or adopt the one an earlier run created."""
    remote = await api.find(row.ares_key) if row.ares_key else None
    if remote is None:
        try:
            remote = await api.create(row.input_file_id, {"ares_kind": row.kind, "ares_model": row.model,
                                                          "ares_key": row.ares_key or ""})
        except TeacherError as exc:  # the answer may be lost while the batch exists: look, never re-create
            remote = await api.find(row.ares_key) if row.ares_key else None
            if remote is None:
                raise TeacherError(f"{exc} (batch {row.ares_key} stays recorded as creating: `ares batch "
                                   "status` finds it if the API made it, or creates it)") from None
    row.remote_id, row.status = remote["id"], remote.get("status", "validating")
    with store.session() as session:
        session.merge(row)


async def submit(store: Store, teacher: TeacherConfig, kind: str, prompt: str, units: list[list[Any]],
                 build: Callable[[list[Any]], Task], limits: BatchLimits | None = None,
                 api: BatchApi | None = None) -> list[TeacherBatch]:
    """Upload the requests the units still need as batches; returns the batches created."""
    limits = limits or BatchLimits()
    async with (api or BatchApi(teacher)) as opened:
        await _resolve_creating(store, opened)
        collecting = _Collecting()
        runner = CallRunner(store, teacher, collecting)
        covers: dict[str, list[int]] = {}
        for unit in units:
            try:
                await runner.run(build(unit))
            except Deferred as wanted:
                covers.setdefault(str(wanted), []).extend(job.rationale.id for job in unit)
        keys = list(collecting.needed)
        lines = [json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                             "body": collecting.needed[key]}, ensure_ascii=False).encode() + b"\n" for key in keys]
        created, done = [], 0
        template = load(prompt)
        for part in chunks(lines, limits):
            file_id = await opened.upload(b"".join(part), f"ares-{kind}-{done}.jsonl")
            ares_key = uuid.uuid4().hex
            row = TeacherBatch(provider=teacher.provider.value, model=teacher.model, kind=kind,
                               prompt_name=template.name, prompt_version=template.version,
                               remote_id=f"{CREATING}:{ares_key}", input_file_id=file_id, status=CREATING,
                               request_count=len(part), ares_key=ares_key)
            with store.session() as session:  # recorded before POST /batches: a lost answer is found again
                session.add(row)
                session.flush()
                session.add_all(TeacherBatchRequest(batch_id=row.id, request_hash=key, rationale_id=rid,
                                                    request=stored_body(collecting.needed[key]),
                                                    repair_of_id=runner.chains[key][0], repair=runner.chains[key][1])
                                for key in keys[done:done + len(part)] for rid in covers[key])
            await _create(store, opened, row)
            created.append(row)
            done += len(part)
    return created


async def _resolve_creating(store: Store, api: BatchApi) -> None:
    with store.session() as session:
        rows = list(session.exec(select(TeacherBatch).where(TeacherBatch.status == CREATING)))
    for row in rows:
        await _create(store, api, row)


def _failure(item: dict[str, Any], status: int | None, body: Any) -> CallFailed:
    """The error of a line without an answer: a 4xx refused that request (its rationales fail),
    anything else (5xx, expired, cancelled) is asked again by the next run."""
    error = item.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
    message = " ".join(str(error.get("message") or error or "no answer").split())[:200]
    refused = status is not None and 400 <= status < 500 and status not in (408, 409, 429)
    return CallFailed(f"batch request failed (HTTP {status}): {message}", 1, refused, rejected=refused)


def _reply(body: dict[str, Any], request_id: str | None = None) -> Reply:
    text, tokens_in, tokens_out, cached = parse_reply(Provider.openai, body)
    written = (body.get("usage") or {}).get("cache_creation_input_tokens")
    finish, refusal = ending(Provider.openai, body)
    snapshot = body.get("model") if isinstance(body.get("model"), str) else None
    return Reply(text, tokens_in, tokens_out, cached, 1, 0.0, written, logprob_content(body["choices"][0]),
                 reasoning_tokens=reasoning_tokens(body), request_id=request_id, model_snapshot=snapshot,
                 finish_reason=finish, refusal=refusal)


def _results(output: str, errors: str) -> tuple[dict[str, Reply | CallFailed], dict[str, str], int]:
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
            found[key] = _failure(item, status, body)
            continue
        try:
            found[key] = _reply(body, response.get("request_id"))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            bad[key] = f"unreadable batch reply ({exc.__class__.__name__})"
    return found, bad, lost


def _seen(row: TeacherBatch, remote: dict[str, Any]) -> None:
    counts = remote.get("request_counts") or {}
    row.status = remote.get("status", row.status)
    row.completed_count, row.failed_count = counts.get("completed", 0), counts.get("failed", 0)
    row.output_file_id, row.error_file_id = remote.get("output_file_id"), remote.get("error_file_id")
    for stamp in ("completed_at", "failed_at", "expired_at", "cancelled_at"):
        if remote.get(stamp):
            row.finished_at = datetime.fromtimestamp(remote[stamp], timezone.utc)
            break


async def refresh(store: Store, api: BatchApi, model: str | None = None) -> list[TeacherBatch]:
    """Every batch in the store (of `model` when given), the ones not ingested brought up to
    date from the API; batches whose creation did not come back are found or created first."""
    await _resolve_creating(store, api)
    stmt = select(TeacherBatch).order_by(TeacherBatch.id)
    with store.session() as session:
        rows = list(session.exec(stmt.where(TeacherBatch.model == model) if model else stmt))
    for row in rows:
        if row.ingested_at is None and row.status not in ENDED:
            _seen(row, await api.get(row.remote_id))
            with store.session() as session:
                session.merge(row)
    return rows


async def status(store: Store, teacher: TeacherConfig, api: BatchApi | None = None,
                 model: str | None = None) -> list[TeacherBatch]:
    """`ares batch status`: the store's batches (of `model` when given), the open ones as the API sees them now."""
    async with (api or BatchApi(teacher)) as opened:
        return await refresh(store, opened, model)


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


async def _ingest_one(store: Store, teacher: TeacherConfig, opened: BatchApi, row: TeacherBatch,
                      summary: IngestSummary) -> None:
    output = await opened.content(row.output_file_id) if row.output_file_id else ""
    errors = await opened.content(row.error_file_id) if row.error_file_id else ""
    results, bad, lost = _results(output, errors)
    config = dataclasses.replace(teacher, model=row.model)  # the batch's own model, whatever --model says
    runner = CallRunner(store, config, _Replaying(results), price_factor=BATCH_DISCOUNT)
    grouped, make = row.prompt_name in (SCORE_GROUP, SCORE_GROUP_POINTS), builder(row.kind, teacher)
    requests = _requests(store, row)
    for key, (line, rationale_ids) in requests.items():
        if key in bad:
            summary.unreadable += 1
            _mark(store, row, key, "unreadable", bad[key])
            continue
        if key not in results:
            continue  # no line at all (an expired batch): the next --batch run asks again
        with store.session() as session:
            jobs = [j for j in jobs_of(session, rationale_ids) if j.sentences]
        # One task per rationale of a single request (identical rationales share it: the first
        # stores the answer, the others reuse it), one for all of a grouped one.
        for unit in ([jobs] if grouped else [[job] for job in jobs]) if jobs else []:
            task = make(store, unit, grouped)
            stored = line.request or {}  # a batch submitted before migration 0011 kept no body
            task.sent = (stored, stored, key, line.repair_of_id, line.repair)
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
        for row in await refresh(store, opened, model):
            if row.ingested_at is not None:
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


def batch_rows(rows: list[TeacherBatch]) -> tuple[list[str], list[list[Optional[str]]]]:
    """Header and rows for `ares batch status`."""
    header = ["remote id", "model", "kind", "status", "done/failed/all", "ingested"]
    stamp = lambda t: t.strftime("%m-%d %H:%M") if t else "-"  # noqa: E731
    return header, [[r.remote_id, r.model, r.kind, r.status, f"{r.completed_count}/{r.failed_count}/{r.request_count}",
                     stamp(r.ingested_at)] for r in rows]
