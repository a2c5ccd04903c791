"""The PRM as a teacher: `collect-scores --provider prm --model NAME|PATH` answers score requests
with a trained process reward model instead of an API.

`PRMAnswerer` is the answer seam of the teacher's call runner for this provider: it turns a
score request into the reply an API would have given (`{"scores": [...]}`), so validation, the
`teacher_call` and `sentence_score` rows, claims and resume are the teacher path's own. A PRM
request names its rationale (`metadata.rationale_id`, see `calls.request_key`): the PRM reads
the question and the rationale's exact text from the store, as it did in training, rather
than the teacher prompt's rendering of them. PRM calls are never grouped by question. Requests
that arrive together (the collector's concurrent workers) are scored in one batch on the PRM's
device. Each reply costs nothing; its latency is the time from the request to its batch's answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sqlmodel import select

from ares_data.enums import AttemptOutcome
from ares_data.errors import TeacherError, TrainingError
from ares_data.formatting import student_prompt
from ares_data.prm_data import find_prm
from ares_data.store import Store
from ares_data.tables import ModelCheckpoint, Question, Rationale, Sentence, utcnow
from ares_data.teacher.client import Attempt, Reply
from ares_data.teacher.config import TeacherConfig

from .loading import checkpoint_chain, load_student
from .placement import resolve
from .prm_model import Encoded, PRMScorer, on_grid


def load_prm(store: Store, prm: ModelCheckpoint, device: str = "auto", dtype: str = "auto") -> PRMScorer:
    """The PRM's backbone (its parent chain, merged) with its adapter and head."""
    with store.session() as session:
        chain = checkpoint_chain(session, session.get(ModelCheckpoint, prm.parent_id))
    try:
        lm, tokenizer = load_student(chain[0].path, [c.adapter_path for c in chain if c.adapter_path],
                                     resolve(device, dtype))
        return PRMScorer.load(lm, tokenizer, prm.adapter_path or prm.path)
    except TrainingError as exc:
        raise TeacherError(f"PRM {prm.name}: {exc}") from exc


class PRMAnswerer:
    """Answers score tasks with a PRM; concurrent requests share a forward pass."""

    def __init__(self, store: Store, config: TeacherConfig):
        self.store = store
        with store.session() as session:
            self.checkpoint = find_prm(session, config.model)
        self.scorer = load_prm(store, self.checkpoint, config.device, config.dtype)
        self.snapshot = f"{self.checkpoint.name} (model_checkpoint {self.checkpoint.id}) at {self.checkpoint.path}"
        self._pending: list[tuple[Encoded, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    def _item(self, rationale_id: int) -> Encoded:
        """Prompt + rationale tokens of the rationale a request asks about, read from the store."""
        with self.store.session() as session:
            rationale = session.get(Rationale, rationale_id)
            if rationale is None:
                raise TeacherError(f"a PRM request names rationale {rationale_id}, which the store lacks")
            question = session.get(Question, rationale.question_id)
            ends = [s.end_char for s in session.exec(select(Sentence).where(
                Sentence.rationale_id == rationale_id).order_by(Sentence.idx))]
        return self.scorer.tokens(student_prompt(question), rationale.text, ends)

    async def __call__(self, body: dict[str, Any], key: str | None = None) -> Reply:
        """The answer to one score request: the PRM's score of each sentence, on the 0.1 grid."""
        meta = body.get("metadata") or {}
        if meta.get("kind") != "score" or "rationale_id" not in meta:
            raise TeacherError(f"a PRM only scores sentences of one rationale per request; "
                               f"{meta.get('kind', 'this request')} needs an LLM teacher (--provider openai)")
        started, started_at = time.perf_counter(), utcnow()
        item = self._item(int(meta["rationale_id"]))
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        scores = await future
        latency = (time.perf_counter() - started) * 1000
        attempt = Attempt(1, AttemptOutcome.ok, started_at, model_snapshot=self.snapshot, tokens_in=len(item.ids),
                          tokens_out=0, latency_ms=latency)  # one attempt, as a teacher's call records it
        return Reply(text=json.dumps({"scores": [on_grid(s) for s in scores]}), tokens_in=len(item.ids),
                     tokens_out=0, cached_tokens_in=None, attempts=1, latency_ms=latency,
                     model_snapshot=self.snapshot, log=[attempt])

    async def _drain(self) -> None:
        """Score what is pending, in one batch per turn, off the event loop."""
        await asyncio.sleep(0)  # let the other workers queue their requests first
        while self._pending:
            taken, self._pending = self._pending, []
            try:
                scores = await asyncio.to_thread(self.scorer.score, [item for item, _ in taken])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in taken:
                    future.set_exception(exc)
                continue
            for (_, future), row in zip(taken, scores):
                future.set_result(row)
