"""Rollouts: k sampled rationales per question, stored as the student rationales of a round.

Each batch of questions is committed on its own, and every rationale has a dedup key
naming its checkpoint, round, question and sample index, so an interrupted run resumes
where it stopped and a finished one adds nothing when run again.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from sqlalchemy import func
from sqlmodel import select

from ares_data.enums import RationaleSource
from ares_data.formatting import parse_answer, student_prompt
from ares_data.images import question_image
from ares_data.store import Store
from ares_data.tables import ModelCheckpoint, Question, Rationale

from .loading import load_checkpoint
from .placement import placement_of, resolve
from .rollout_config import SamplingSettings
from .rollout_engines import Sampled, make_engine
from .vision import is_processor, student_input


def sample_responses(engine: Any, processing: Any, user_texts: Sequence[str], *, questions: Sequence[Any] | None = None,
                     n: int = 1, batch_size: int = 8, **sampling: Any) -> list[list[Sampled]]:
    """For each user text, `n` responses to its formatted prompt, `batch_size` texts per engine
    call; a VLM student (`processing` is its processor) also sees the image of its question."""
    out: list[list[Sampled]] = []
    for start in range(0, len(user_texts), batch_size):
        chunk = user_texts[start:start + batch_size]
        qs = questions[start:start + batch_size] if questions is not None else [None] * len(chunk)
        prompts, images = zip(*(student_input(processing, t, q) for t, q in zip(chunk, qs, strict=True)))
        out.extend(engine.sample(prompts, images, n=n, **sampling))
    return out


class RateColumn(ProgressColumn):
    """Completed items per second."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"? {self.unit}/s", style="progress.data.speed")


def dedup_key(checkpoint_id: int, round: int, question_id: int, sample_index: int) -> str:
    return f"student:{checkpoint_id}:{round}:{question_id}:{sample_index}"


def pending_questions(store: Store, *, checkpoint_id: int, round: int, split: str, k: int,
                      limit: int | None) -> tuple[list[Question], int]:
    """(questions of the split still short of k rollouts, how many were already done); `limit`
    caps the questions considered, so a re-run with the same limit adds nothing."""
    with store.session() as session:
        stmt = select(Question).where(Question.split == split).order_by(Question.id).limit(limit)
        questions = list(session.exec(stmt))
        done_counts = dict(session.exec(
            select(Rationale.question_id, func.count()).where(
                Rationale.source == RationaleSource.student, Rationale.round == round,
                Rationale.model_checkpoint_id == checkpoint_id,
            ).group_by(Rationale.question_id)
        ).all())
    pending = [q for q in questions if done_counts.get(q.id, 0) < k]
    return pending, len(questions) - len(pending)


def generate_rollouts(
    store: Store,
    *,
    checkpoint: ModelCheckpoint,
    round: int,
    split: str = "train",
    k: int = 4,
    limit: int | None = None,
    settings: SamplingSettings | None = None,
    progress: bool = True,
    model_and_tokenizer: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Sample k rationales per pending question of `split` and store them as round `round`, each
    with its generation record: the sampling settings, device and dtype, and what was sampled
    (`token_ids`, `logprobs`, `finish_reason`; see `rollout_engines.py`).

    `model_and_tokenizer` skips loading the checkpoint when the caller already holds it.
    """
    settings = settings or SamplingSettings()
    placement = resolve(settings.device, settings.dtype)  # a bad --device fails before anything else
    pending, skipped = pending_questions(store, checkpoint_id=checkpoint.id, round=round, split=split, k=k,
                                         limit=limit)
    summary: dict[str, Any] = {"checkpoint": checkpoint.name, "round": round, "split": split, "k": k,
                               "questions_done_before": skipped, "questions_generated": 0,
                               "rationales_added": 0, "questions_text_only": 0}
    if not pending:
        return summary
    model, tokenizer = model_and_tokenizer or load_checkpoint(store, checkpoint, placement)[:2]
    used = placement_of(model)
    engine = make_engine(settings.rollout_engine, model, tokenizer, used.dtype)
    generation = {**asdict(settings), "k": k, "do_sample": True, **used.describe()}
    started = time.monotonic()
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), RateColumn("questions"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:  # stdout: results
        task = bar.add_task("generate", total=len(pending))
        for start in range(0, len(pending), settings.batch_size):
            batch = pending[start:start + settings.batch_size]
            seed = None if settings.seed is None else settings.seed + start  # resumed runs stay reproducible
            sampled = sample_responses(
                engine, tokenizer, [student_prompt(q) for q in batch], questions=batch, n=k,
                batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature, top_k=settings.top_k, seed=seed,
            )
            with store.session() as session:
                for question, samples in zip(batch, sampled, strict=True):
                    for index, one in enumerate(samples):
                        _, created = store.add_rationale(
                            session, question_id=question.id, source=RationaleSource.student, text=one.text,
                            dedup_key=dedup_key(checkpoint.id, round, question.id, index),
                            model_checkpoint_id=checkpoint.id, round=round, sample_index=index,
                            predicted_answer=parse_answer(one.text, len(question.choices)),
                            generation={**generation, **one.record()},
                        )
                        summary["rationales_added"] += created
            summary["questions_generated"] += len(batch)
            if is_processor(tokenizer):  # a VLM: count the questions it saw without an image
                summary["questions_text_only"] += sum(question_image(q) is None for q in batch)
            bar.advance(task, len(batch))
    elapsed = time.monotonic() - started
    summary.update(seconds=elapsed, questions_per_second=summary["questions_generated"] / elapsed)
    return summary
