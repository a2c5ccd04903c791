"""OpenAI Batch API mode: submit the pending calls as batches, later store their answers.

`collect-scores --batch` (and `collect-corrections --batch`) walks every selected task through
the same `CallRunner` as the online path, with another answerer: the request a task still needs
(the first, or the repair after a stored invalid answer) becomes a JSONL line whose `custom_id`
is the request hash. The lines go up in batches of at most `max_requests` lines and `max_bytes`
bytes (the API's 50,000 and 200 MB). Each line's stored body and hash are recorded with the
rationales it asks about (`teacher_batch_request`); a rationale in a batch not yet ingested is
sent neither online nor in another batch.

A submission takes the online path's claims: each rationale is claimed (and re-checked, inside
the claim, for an answer or an open batch) and held until its batch row is recorded, so two
overlapping runs never put a rationale in two batches; rationales another run holds are looked
at again until it lets them go. Each request is claimed by its hash as well: a request already
in an open batch gets the new rationales added to that line instead of a second line. A group
the provider refused (a stored refusal) is split in halves and each half asked in the batch.

Creating the remote batch is idempotent and exclusive (batch_remote.py); `ares batch ingest`
stores the answers (batch_ingest.py). Stored costs and dry-run estimates take the Batch API
discount (pricing.BATCH_DISCOUNT).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Callable

from sqlmodel import select

from ..errors import TeacherError
from ..store import Store
from ..tables import TeacherBatch, TeacherBatchRequest
from .batch_ingest import IngestSummary, ingest
from .batch_remote import (CREATING, BatchApi, BatchLimits, BatchRefused, batch_rows, create_remote, creation_claims,
                           in_open_batches, request_in_open_batch, resolve_creating, status)
from .calls import CallRunner, Deferred, Task
from .claims import Claims
from .client import Reply, stored_body
from .config import TeacherConfig
from .prompts import load
from .tasks import Job, claim_unit, refused_group

__all__ = ["BatchApi", "BatchLimits", "BatchRefused", "Deferred", "IngestSummary", "batch_rows", "chunks",
           "in_open_batches", "ingest", "request_in_open_batch", "status", "submit"]


class _Collecting:
    """Answerer that keeps the request each task still needs instead of sending it."""

    def __init__(self) -> None:
        self.needed: dict[str, dict] = {}

    async def __call__(self, body: dict, key: str) -> Reply:
        self.needed[key] = body
        raise Deferred(key)


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


async def _needed(runner: CallRunner, unit: list[Job], build: Callable[[list[Job]], Task],
                  covers: dict[str, list[int]]) -> None:
    """Walk the unit's chain to the request it still needs (`covers`: request hash -> rationales);
    a group the provider refused is split and each half walked."""
    task = build(unit)
    try:
        outcome = await runner.run(task)
    except Deferred as wanted:
        covers.setdefault(str(wanted), []).extend(job.rationale.id for job in unit)
        return
    for half in refused_group(outcome, task, unit):
        await _needed(runner, half, build, covers)


def _join_open(store: Store, keys: list[str], covers: dict[str, list[int]]) -> list[str]:
    """Add the rationales of requests that are lines of an open batch already to those lines;
    the keys still to submit."""
    left = []
    with store.session() as session:
        for key in keys:
            line = session.exec(select(TeacherBatchRequest).join(
                TeacherBatch, TeacherBatch.id == TeacherBatchRequest.batch_id).where(
                TeacherBatchRequest.request_hash == key, TeacherBatch.ingested_at.is_(None))).first()  # type: ignore
            if line is None:
                left.append(key)
                continue
            there = set(session.exec(select(TeacherBatchRequest.rationale_id).where(
                TeacherBatchRequest.batch_id == line.batch_id, TeacherBatchRequest.request_hash == key)))
            session.add_all(TeacherBatchRequest(batch_id=line.batch_id, request_hash=key, rationale_id=rid,
                                                request=line.request, repair_of_id=line.repair_of_id,
                                                repair=line.repair) for rid in dict.fromkeys(covers[key])
                            if rid not in there)
    return left


async def _submit_taken(store: Store, teacher: TeacherConfig, kind: str, prompt: str, taken: list[list[Job]],
                        build: Callable[[list[Job]], Task], claims: Claims, api: BatchApi, limits: BatchLimits,
                        retry_failed: bool) -> list[TeacherBatch]:
    """Submit the requests of the claimed units; the batches created."""
    collecting = _Collecting()
    runner = CallRunner(store, teacher, collecting, retry_failed=retry_failed)
    covers: dict[str, list[int]] = {}
    for unit in taken:
        await _needed(runner, unit, build, covers)
        await asyncio.sleep(0)  # the heartbeat renews the leases of a long walk when due
    held = [key for key in collecting.needed if claims.take_request(key)]  # others are being asked elsewhere now
    created: list[TeacherBatch] = []
    try:
        keys = _join_open(store, held, covers)
        lines = [json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                             "body": collecting.needed[key]}, ensure_ascii=False).encode() + b"\n" for key in keys]
        template, done, creator = load(prompt), 0, creation_claims(store)
        for part in chunks(lines, limits):
            file_id = await api.upload(b"".join(part), f"ares-{kind}-{done}.jsonl")
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
                                for key in keys[done:done + len(part)] for rid in dict.fromkeys(covers[key]))
            created.append(await create_remote(store, api, row, creator))
            done += len(part)
    finally:
        for key in held:
            claims.release_request(key)
    return created


async def submit(store: Store, teacher: TeacherConfig, kind: str, prompt: str, units: list[list[Any]],
                 build: Callable[[list[Any]], Task], claims: Claims, limits: BatchLimits | None = None,
                 api: BatchApi | None = None, retry_failed: bool = False) -> list[TeacherBatch]:
    """Upload the requests the units still need as batches; returns the batches created.
    `retry_failed` submits given-up requests again."""
    limits = limits or BatchLimits()
    created: list[TeacherBatch] = []
    async with (api or BatchApi(teacher)) as opened, claims.heartbeat():
        await resolve_creating(store, opened)  # what it cannot create shows in `ares batch status`
        pending = units
        while pending:
            taken, busy = [], []
            for unit in pending:
                mine, held = claim_unit(claims, unit)
                taken += [mine] if mine else []
                busy += [held] if held else []
                await asyncio.sleep(0)
            try:
                created += await _submit_taken(store, teacher, kind, prompt, taken, build, claims, opened, limits,
                                               retry_failed)
            finally:
                for job in (job for unit in taken for job in unit):
                    claims.release(job.rationale.id)
            if busy:  # another run holds them: once it lets go they are in its batch, or ours next
                await asyncio.sleep(claims.lease.total_seconds() / 10)
            pending = busy
    return created
