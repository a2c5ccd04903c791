"""The Batch API's side of `--batch`: its files and batches endpoints, and the store's batch rows.

A batch row is written (status `creating`, a fresh `ares_key`) before the one `POST /batches`,
which sends that key as metadata and is never retried. Creating the remote batch of a
`creating` row is one process's job at a time: it holds a lease on `batch:<ares_key>` in
`request_claim`, reads the row again under it, looks the key up (`find`) and creates only if the
API has no batch with it. A create refused for good (a 4xx) marks the row `failed` with the
API's message and sets it ingested, so its rationales are free for the next run; any other
failure keeps the row `creating` (its error recorded) for the next `status`, `ingest` or
`--batch` run, and the other batches go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import httpx
from sqlalchemy import exists, update
from sqlmodel import select

from ..errors import BatchRefused, TeacherError
from ..store import Store
from ..tables import TeacherBatch, TeacherBatchRequest, utcnow
from .claims import Claims
from .config import Provider, TeacherConfig
from .retry import Decision, check_response, classify_status, retrying

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDED = {"completed", "failed", "expired", "cancelled"}  # the API's terminal statuses
CREATING = "creating"  # ours: the row is written, POST /batches not known to have succeeded
CREATE_LEASE_S = 120.0


@dataclass(frozen=True)
class BatchLimits:
    """The API's limits on one batch; smaller ones let a test split a job."""

    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES


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
                    try:
                        check_response(response, self._redact)
                    except TeacherError as exc:
                        if classify_status(response.status_code, response.text) is Decision.permanent:
                            raise BatchRefused(str(exc)) from None
                        raise
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


def in_open_batches(kind: str, teacher: TeacherConfig) -> Any:
    """The rationales already in a batch of this teacher not yet ingested (a subquery)."""
    return (select(TeacherBatchRequest.rationale_id).join(TeacherBatch, TeacherBatch.id == TeacherBatchRequest.batch_id)
            .where(TeacherBatch.kind == kind, TeacherBatch.model == teacher.model,
                   TeacherBatch.ingested_at.is_(None)))  # type: ignore[union-attr]


def request_in_open_batch(store: Store, key: str) -> bool:
    """Whether this request (by hash) is a line of a batch not ingested yet: its answer is coming."""
    with store.session() as session:
        return bool(session.exec(select(exists().where(
            TeacherBatchRequest.request_hash == key, TeacherBatch.id == TeacherBatchRequest.batch_id,
            TeacherBatch.ingested_at.is_(None)))).one())  # type: ignore[union-attr]


def creation_claims(store: Store) -> Claims:
    """Leases on `batch:<ares_key>`: one process at a time creates a row's remote batch."""
    return Claims(store, "batch", "", lambda session, rationale_id: True, CREATE_LEASE_S)


def _refused(store: Store, row: TeacherBatch, error: str) -> None:
    """The API refused the batch for good: the row fails, and nothing is waited for any more."""
    row.status, row.error, row.ingested_at = "failed", error, utcnow()
    with store.session() as session:
        session.merge(row)
        session.execute(update(TeacherBatchRequest).where(TeacherBatchRequest.batch_id == row.id)
                        .values(status="error", error=error[:500]))


async def create_remote(store: Store, api: BatchApi, row: TeacherBatch, claims: Claims) -> TeacherBatch:
    """Create the remote batch of a `creating` row, or adopt the one an earlier run created; the
    row as it stands after (still `creating` when another process is creating it right now).
    Raises BatchRefused (the row failed) or TeacherError (the row stays `creating`)."""
    lock = f"batch:{row.ares_key or row.id}"
    if not claims.take_request(lock):
        return row
    try:
        with store.session() as session:  # under the lease: another process may have created it
            row = session.exec(select(TeacherBatch).where(TeacherBatch.id == row.id)).one()
        if row.status != CREATING:
            return row
        remote = await api.find(row.ares_key) if row.ares_key else None
        if remote is None:
            try:
                remote = await api.create(row.input_file_id, {"ares_kind": row.kind, "ares_model": row.model,
                                                              "ares_key": row.ares_key or ""})
            except BatchRefused as exc:
                _refused(store, row, str(exc))
                raise BatchRefused(f"the Batch API refused batch {row.ares_key}: {exc} (marked failed; its "
                                   f"{row.request_count} requests go into the next --batch run)") from None
            except TeacherError as exc:  # the answer may be lost while the batch exists: look, never re-create
                remote = await api.find(row.ares_key) if row.ares_key else None
                if remote is None:
                    row.error = str(exc)
                    with store.session() as session:
                        session.merge(row)
                    raise TeacherError(f"{exc} (batch {row.ares_key} stays recorded as creating: `ares batch "
                                       "status` finds it if the API made it, or creates it)") from None
        row.remote_id, row.status, row.error = remote["id"], remote.get("status", "validating"), None
        with store.session() as session:
            session.merge(row)
        return row
    finally:
        claims.release_request(lock)


async def resolve_creating(store: Store, api: BatchApi) -> list[str]:
    """Create (or find) the remote batch of every `creating` row; one line per row left without
    one, so that one bad row never stops the others."""
    claims = creation_claims(store)
    with store.session() as session:
        rows = list(session.exec(select(TeacherBatch).where(TeacherBatch.status == CREATING)))
    problems = []
    for row in rows:
        try:
            if (await create_remote(store, api, row, claims)).status == CREATING:
                problems.append(f"{row.remote_id} (another process is creating it)")
        except TeacherError as exc:
            problems.append(str(exc))
    return problems


def _seen(row: TeacherBatch, remote: dict[str, Any]) -> None:
    counts = remote.get("request_counts") or {}
    row.status = remote.get("status", row.status)
    row.completed_count, row.failed_count = counts.get("completed", 0), counts.get("failed", 0)
    row.output_file_id, row.error_file_id = remote.get("output_file_id"), remote.get("error_file_id")
    for stamp in ("completed_at", "failed_at", "expired_at", "cancelled_at"):
        if remote.get(stamp):
            row.finished_at = datetime.fromtimestamp(remote[stamp], timezone.utc)
            break


async def refresh(store: Store, api: BatchApi, model: str | None = None) -> tuple[list[TeacherBatch], list[str]]:
    """Every batch in the store (of `model` when given), the ones not ingested brought up to
    date from the API; batches whose creation did not come back are found or created first.
    Also the lines of `resolve_creating` (rows still without a remote batch)."""
    problems = await resolve_creating(store, api)
    stmt = select(TeacherBatch).order_by(TeacherBatch.id)
    with store.session() as session:
        rows = list(session.exec(stmt.where(TeacherBatch.model == model) if model else stmt))
    for row in rows:
        if row.ingested_at is None and row.status not in ENDED and row.status != CREATING:
            _seen(row, await api.get(row.remote_id))
            with store.session() as session:
                session.merge(row)
    return rows, problems


async def status(store: Store, teacher: TeacherConfig, api: BatchApi | None = None,
                 model: str | None = None) -> list[TeacherBatch]:
    """`ares batch status`: the store's batches (of `model` when given), the open ones as the API sees them now."""
    async with (api or BatchApi(teacher)) as opened:
        return (await refresh(store, opened, model))[0]


def batch_rows(rows: list[TeacherBatch]) -> tuple[list[str], list[list[Optional[str]]]]:
    """Header and rows for `ares batch status`."""
    header = ["remote id", "model", "kind", "status", "done/failed/all", "ingested", "error"]
    stamp = lambda t: t.strftime("%m-%d %H:%M") if t else "-"  # noqa: E731
    return header, [[r.remote_id, r.model, r.kind, r.status, f"{r.completed_count}/{r.failed_count}/{r.request_count}",
                     stamp(r.ingested_at), (r.error or "")[:120] or "-"] for r in rows]
