"""Leases that let several collectors (processes, machines) share the work of one store.

Before asking about a rationale, a collector claims it in `work_claim` with one atomic
`UPDATE ... WHERE (lease expired OR mine)`: while two collectors live, never both ask about
the same rationale. A heartbeat renews the leases of the rationales in flight; when a
collector dies its leases expire and another collector takes them over. A claim also
re-checks, in the same transaction, that the rationale still lacks an answer, so work that
another collector finished meanwhile is not asked again. A claim whose collector ran on this
machine (same boot) and whose process is gone is taken at once: a re-run after a crash does not
wait out the lease. Requests are claimed the same way by their hash (`request_claim`), so
identical rationales claimed by two collectors are still asked once: the second waits for the
first one's stored answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import AsyncIterator, Callable

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from ..tables import RequestClaim, WorkClaim, utcnow
from ..store import Store

NEVER_HELD = datetime(1970, 1, 1, tzinfo=timezone.utc)
log = logging.getLogger(__name__)


def _this_boot() -> str:
    """Host name, kernel boot id and PID namespace: where a process id means this process table."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
        boot += os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}"


BOOT = _this_boot()


def dead_here(worker: str) -> bool:
    """Whether `worker` (BOOT:pid:nonce) ran on this machine since its boot and its process ended."""
    boot, pid, _ = (worker.rsplit(":", 2) + ["", ""])[:3]
    if boot != BOOT or BOOT.endswith("/?") or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


class Claim(str, Enum):
    taken = "taken"  # ours now: ask
    busy = "busy"  # another live collector holds it: look again later
    done = "done"  # answered (or given up) meanwhile: nothing to do


def _insert_ignoring_duplicates(dialect: str, table: type = WorkClaim):
    """`INSERT ... ON CONFLICT DO NOTHING`, which SQLite and PostgreSQL both spell the same way."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


class Claims:
    """The leases of one collector run on (`kind`, rationale, `teacher`)."""

    def __init__(self, store: Store, kind: str, teacher: str, still_open: Callable[[Session, int], bool],
                 lease_s: float = 120.0):
        self.store, self.kind, self.teacher, self.still_open = store, kind, teacher, still_open
        self.lease = timedelta(seconds=lease_s)
        self.worker = f"{BOOT}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def _key(self, rationale_id: int) -> tuple:
        return (WorkClaim.kind == self.kind, WorkClaim.rationale_id == rationale_id, WorkClaim.teacher == self.teacher)

    def _won(self, session: Session, table: type, where: tuple, holder: str) -> bool:
        """Take the lease row `where` if it expired, is ours, or its holder died on this machine."""
        now = utcnow()
        takeable = or_(table.expires_at <= now, table.worker == self.worker)
        if dead_here(holder):  # atomic still: only while that dead process holds it
            takeable = or_(takeable, table.worker == holder)
        return bool(session.execute(update(table).where(*where, takeable)
                                    .values(worker=self.worker, expires_at=now + self.lease)).rowcount)

    def take(self, rationale_id: int) -> Claim:
        with self.store.session() as session:
            session.execute(_insert_ignoring_duplicates(self.store.dialect).values(
                kind=self.kind, rationale_id=rationale_id, teacher=self.teacher, worker="", expires_at=NEVER_HELD,
            ).on_conflict_do_nothing(index_elements=["kind", "rationale_id", "teacher"]))
            holder = session.execute(select(WorkClaim.worker).where(*self._key(rationale_id))).scalar_one()
            if not self._won(session, WorkClaim, self._key(rationale_id), holder):
                return Claim.busy
            if self.still_open(session, rationale_id):
                return Claim.taken
            session.execute(delete(WorkClaim).where(*self._key(rationale_id), WorkClaim.worker == self.worker))
            return Claim.done

    def take_request(self, request_hash: str) -> bool:
        """Whether this collector may send the request now (no other live collector is sending it)."""
        where = (RequestClaim.request_hash == request_hash,)
        with self.store.session() as session:
            session.execute(_insert_ignoring_duplicates(self.store.dialect, RequestClaim).values(
                request_hash=request_hash, worker="", expires_at=NEVER_HELD,
            ).on_conflict_do_nothing(index_elements=["request_hash"]))
            holder = session.execute(select(RequestClaim.worker).where(*where)).scalar_one()
            return self._won(session, RequestClaim, where, holder)

    def release_request(self, request_hash: str, session: Session | None = None) -> None:
        """Give the request's claim up, in `session` when given (with what was recorded in it)."""
        if session is None:
            with self.store.session() as own:
                self.release_request(request_hash, own)
            return
        session.execute(delete(RequestClaim).where(RequestClaim.request_hash == request_hash,
                                                   RequestClaim.worker == self.worker))

    def release(self, *rationale_ids: int) -> None:
        """Give up the leases of `rationale_ids` (one transaction)."""
        with self.store.session() as session:
            for rationale_id in rationale_ids:
                session.execute(delete(WorkClaim).where(*self._key(rationale_id), WorkClaim.worker == self.worker))

    def renew(self) -> int:
        """Push back the expiry of every lease this run holds (rationales and requests); returns how many."""
        with self.store.session() as session:
            return sum(session.execute(update(table).where(table.worker == self.worker)
                                       .values(expires_at=utcnow() + self.lease)).rowcount
                       for table in (WorkClaim, RequestClaim))

    @asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        """Renew the leases every third of a lease while the block runs, off the event loop. A
        renewal that fails (store busy, connection lost) is logged and the next one tried: the
        leases in flight must outlive a transient error, else another collector pays again."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.lease.total_seconds() / 3)
                try:
                    await asyncio.to_thread(self.renew)
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("renewing the leases of %s failed (next try in %.1f s): %s", self.worker,
                                self.lease.total_seconds() / 3, " ".join(str(exc).split())[:200])

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
