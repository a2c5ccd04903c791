"""OpenAI Batch API mode: submit the pending calls as batches, later store their answers.

`collect-scores --batch` (and `collect-corrections --batch`) walks every selected task through
the same `CallRunner` as the online path, with another answerer: the request a task still needs
(the first, or the repair after a stored invalid answer) becomes a JSONL line whose `custom_id`
is the request hash. The lines go up in batches of at most `max_requests` lines and `max_bytes`
bytes (the API's 50,000 and 200 MB), each recorded in `teacher_batch` with its requests linked
to their rationales; a rationale in a batch not yet ingested is not sent again.

`ares batch ingest` rebuilds the tasks of an ended batch's rationales and runs them again, now
answered from the output file (and failed from the error file): validation, audit rows and
what an answer writes are the online path's own. An invalid answer is recorded as online; its
repair is not sent at once but goes into the next `--batch` run, which walks the stored chain
to it. A batch is ingested once; ingesting again changes nothing. Stored costs and dry-run
estimates take the Batch API discount (pricing.BATCH_DISCOUNT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import httpx
from sqlmodel import select

from ..errors import CallFailed, TeacherError
from ..store import Store
from ..tables import TeacherBatch, TeacherBatchRequest, utcnow
from .calls import CallRunner, Task
from .client import Reply, parse_reply
from .config import Provider, TeacherConfig
from .logprobs import logprob_content
from .pricing import BATCH_DISCOUNT
from .prompts import load
from .retry import check_response, retrying
from .tasks import batch_tasks

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDED = {"completed", "failed", "expired", "cancelled"}  # the API's terminal statuses


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

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            async for attempt in retrying(self.config.max_attempts):
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
        body = {"input_file_id": input_file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
                "metadata": metadata}
        return (await self._call("POST", "/batches", json=body)).json()

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
        self.results, self.used = results, set[str]()

    async def __call__(self, body: dict, key: str) -> Reply:
        found = self.results.get(key)
        if found is None:
            raise Deferred(key)
        self.used.add(key)
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


async def submit(store: Store, teacher: TeacherConfig, kind: str, prompt: str, units: list[list[Any]],
                 build: Callable[[list[Any]], Task], limits: BatchLimits | None = None,
                 api: BatchApi | None = None) -> list[TeacherBatch]:
    """Upload the requests the units still need as batches; returns the batches created."""
    limits = limits or BatchLimits()
    async with (api or BatchApi(teacher)) as opened:
        collecting = _Collecting()
        runner = CallRunner(store, teacher, collecting)
        covers: dict[str, list[int]] = {}
        for unit in units:
            try:
                await runner.run(build(unit))
            except Deferred as wanted:
                covers.setdefault(str(wanted), []).extend(job.rationale.id for job in unit)
        lines = [json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body},
                            ensure_ascii=False).encode() + b"\n" for key, body in collecting.needed.items()]
        keys = list(collecting.needed)
        created, done = [], 0
        template = load(prompt)
        for part in chunks(lines, limits):
            file_id = await opened.upload(b"".join(part), f"ares-{kind}-{done}.jsonl")
            remote = await opened.create(file_id, {"ares_kind": kind, "ares_model": teacher.model})
            row = TeacherBatch(provider=teacher.provider.value, model=teacher.model, kind=kind,
                               prompt_name=template.name, prompt_version=template.version, remote_id=remote["id"],
                               input_file_id=file_id, status=remote.get("status", "validating"),
                               request_count=len(part))
            with store.session() as session:
                session.add(row)
                session.flush()
                session.add_all(TeacherBatchRequest(batch_id=row.id, request_hash=key, rationale_id=rid)
                                for key in keys[done:done + len(part)] for rid in covers[key])
            created.append(row)
            done += len(part)
    return created


def _results(output: str, errors: str) -> dict[str, Reply | CallFailed]:
    """custom_id -> the answer (output file) or the failure (error file, or a non-200 in the output)."""
    found: dict[str, Reply | CallFailed] = {}
    for line in (output + "\n" + errors).splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        response = item.get("response") or {}
        body, status = response.get("body") or {}, response.get("status_code")
        if status == 200:
            try:
                text, tokens_in, tokens_out, cached = parse_reply(Provider.openai, body)
            except (KeyError, IndexError, TypeError) as exc:
                found[item["custom_id"]] = CallFailed(f"unreadable batch reply ({exc.__class__.__name__})", 1, False)
                continue
            written = (body.get("usage") or {}).get("cache_creation_input_tokens")
            found[item["custom_id"]] = Reply(text, tokens_in, tokens_out, cached, 1, 0.0, written,
                                             logprob_content(body["choices"][0]))
        else:
            error = item.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
            message = " ".join(str(error.get("message") or error or "no answer").split())[:200]
            found[item["custom_id"]] = CallFailed(f"batch request failed (HTTP {status}): {message}", 1, False)
    return found


def _seen(row: TeacherBatch, remote: dict[str, Any]) -> None:
    counts = remote.get("request_counts") or {}
    row.status = remote.get("status", row.status)
    row.completed_count, row.failed_count = counts.get("completed", 0), counts.get("failed", 0)
    row.output_file_id, row.error_file_id = remote.get("output_file_id"), remote.get("error_file_id")
    for stamp in ("completed_at", "failed_at", "expired_at", "cancelled_at"):
        if remote.get(stamp):
            row.finished_at = datetime.fromtimestamp(remote[stamp], timezone.utc)
            break


async def refresh(store: Store, api: BatchApi) -> list[TeacherBatch]:
    """Every batch of this teacher model, the ones not ingested brought up to date from the API."""
    with store.session() as session:
        rows = list(session.exec(select(TeacherBatch).where(TeacherBatch.model == api.config.model)
                                 .order_by(TeacherBatch.id)))
    for row in rows:
        if row.ingested_at is None and row.status not in ENDED:
            _seen(row, await api.get(row.remote_id))
            with store.session() as session:
                session.merge(row)
    return rows


async def status(store: Store, teacher: TeacherConfig, api: BatchApi | None = None) -> list[TeacherBatch]:
    """`ares batch status`: this teacher's batches, the open ones as the API sees them now."""
    async with (api or BatchApi(teacher)) as opened:
        return await refresh(store, opened)


@dataclass
class IngestSummary:
    batches: int = 0
    waiting: list[str] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    errors: int = 0
    deferred: int = 0
    unmatched: int = 0
    cost_usd: float = 0.0

    def lines(self) -> list[str]:
        lines = [f"ingested {self.batches} batches: {self.ok} answered, {self.failed} given up, {self.errors} "
                 f"without an answer (asked again by the next run); cost ${self.cost_usd:.4f}"]
        if self.deferred:
            lines.append(f"{self.deferred} need another request (repairs of invalid answers): "
                         "run the same collect command with --batch again")
        if self.unmatched:
            lines.append(f"{self.unmatched} batch answers matched no pending request (answered meanwhile, "
                         "or asked with another prompt version)")
        if self.waiting:
            lines.append(f"not ended yet: {', '.join(self.waiting)}")
        return lines


async def ingest(store: Store, teacher: TeacherConfig, api: BatchApi | None = None) -> IngestSummary:
    """Store the answers of every ended batch of this teacher not ingested yet."""
    summary = IngestSummary()
    async with (api or BatchApi(teacher)) as opened:
        for row in await refresh(store, opened):
            if row.ingested_at is not None:
                continue
            if row.status not in ENDED:
                summary.waiting.append(f"{row.remote_id} ({row.status})")
                continue
            output = await opened.content(row.output_file_id) if row.output_file_id else ""
            errors = await opened.content(row.error_file_id) if row.error_file_id else ""
            replaying = _Replaying(_results(output, errors))
            runner = CallRunner(store, teacher, replaying, price_factor=BATCH_DISCOUNT)
            for task in batch_tasks(store, teacher, row):
                try:
                    outcome = await runner.run(task)
                except Deferred:
                    summary.deferred += 1
                    continue
                summary.ok += outcome.status == "ok"
                summary.failed += outcome.status == "failed"
                summary.errors += outcome.status == "error"
            summary.unmatched += len(set(replaying.results) - replaying.used)
            summary.cost_usd += runner.tally.cost_usd
            summary.batches += 1
            row.ingested_at = utcnow()
            with store.session() as session:
                session.merge(row)
    return summary


def batch_rows(rows: list[TeacherBatch]) -> tuple[list[str], list[list[Optional[str]]]]:
    """Header and rows for `ares batch status`."""
    header = ["remote id", "kind", "status", "done/failed/all", "created", "ingested"]
    stamp = lambda t: t.strftime("%m-%d %H:%M") if t else "-"  # noqa: E731
    return header, [[r.remote_id, r.kind, r.status, f"{r.completed_count}/{r.failed_count}/{r.request_count}",
                     stamp(r.created_at), stamp(r.ingested_at)] for r in rows]
