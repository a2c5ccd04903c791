"""Evaluation arithmetic and read-back, free of torch: A/B order, outcomes, win rate, accuracy.

The generation side lives in `ares_train.evaluate`; this module decides and summarises, so
`ares report` and the tests can use it without a model.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from sqlmodel import select

from .enums import EvalKind, Outcome, Position
from .errors import InvalidAnswer
from .runs import add_eval_results
from .store import Store
from .tables import EvalResult, ModelCheckpoint, Question, Rationale

if TYPE_CHECKING:
    from .teacher.config import TeacherConfig

Z95 = 1.959963984540054


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank (as in v_agreement)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson correlation of the ranks; None when either side is constant."""
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var > 1e-12 else None


def assign_positions(question_ids: list[int], seed: int) -> dict[int, str]:
    """Where checkpoint A's rationale is shown to the judge, per question: 'A' or 'B'.

    Seeded and independent of the judge, so a judge's position bias averages out
    instead of deciding the result.
    """
    rng = random.Random(seed)
    return {qid: rng.choice("AB") for qid in question_ids}


# judge verdict (in A/B-checkpoint terms) -> A's result
OUTCOME = {Position.A: Outcome.win, Position.B: Outcome.loss, "tie": Outcome.tie}


@dataclass(frozen=True)
class WinRate:
    wins: int
    ties: int
    losses: int
    rate: float  # (wins + ties / 2) / n
    low: float  # 95% Wilson interval
    high: float

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses


def win_rate(outcomes: list[str]) -> WinRate:
    """Win rate with ties counted as half a win, and its 95% Wilson score interval."""
    wins, ties, losses = (outcomes.count(o) for o in Outcome)
    n = wins + ties + losses
    if n == 0:
        return WinRate(0, 0, 0, float("nan"), float("nan"), float("nan"))
    p = (wins + ties / 2) / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return WinRate(wins, ties, losses, p, max(0.0, centre - half), min(1.0, centre + half))


_ACCURACY_BY = {
    "overall": "'all'",
    "subject": "COALESCE(q.subject, '-')",
    "grade": "COALESCE(q.grade, '-')",
}


def accuracy_tables(store: Store, checkpoint_id: int, split: str) -> dict[str, tuple[list[str], list]]:
    """Accuracy overall and by subject and grade, with unparseable answers counted (as wrong)."""
    tables = {}
    for title, group in _ACCURACY_BY.items():
        tables[title] = store.query_readonly(
            f"""
            SELECT {group} AS "group", COUNT(*) AS questions,
                   SUM(CASE WHEN e.correct THEN 1 ELSE 0 END) AS correct,
                   ROUND(AVG(CASE WHEN e.correct THEN 1.0 ELSE 0.0 END), 4) AS accuracy,
                   SUM(CASE WHEN e.predicted_answer IS NULL THEN 1 ELSE 0 END) AS unparsed
            FROM eval_result e JOIN question q ON q.id = e.question_id
            WHERE e.kind = 'accuracy' AND e.model_checkpoint_id = :ckpt AND e.split = :split
            GROUP BY 1 ORDER BY 1
            """,
            {"ckpt": checkpoint_id, "split": split},
        )
    return tables


async def judge_winrate(
    store: Store,
    teacher: "TeacherConfig",
    a: ModelCheckpoint,
    b: ModelCheckpoint,
    questions: list[Question],
    rationales_a: dict[int, Rationale],
    rationales_b: dict[int, Rationale],
    *,
    split: str,
    seed: int = 0,
) -> tuple[WinRate, int]:
    """Ask the judge about every question not judged yet for (a, b); return A's win rate over
    all judged questions and how many verdicts could not be had (audited in teacher_call)."""
    from .teacher.client import TeacherClient
    from .teacher.judge import judge_pair

    with store.session() as session:
        judged = set(session.exec(select(EvalResult.question_id).where(
            EvalResult.kind == EvalKind.winrate, EvalResult.model_checkpoint_id == a.id,
            EvalResult.opponent_checkpoint_id == b.id, EvalResult.split == split)))
    todo = [q for q in questions if q.id not in judged]
    positions = assign_positions([q.id for q in todo], seed)
    failed = 0

    async def one(client: TeacherClient, q: Question) -> None:
        nonlocal failed
        ra, rb = rationales_a[q.id], rationales_b[q.id]
        try:
            verdict, call_id = await judge_pair(client, store, q, ra.text, rb.text, a_position=positions[q.id],
                                                rationale_id=ra.id)
        except InvalidAnswer:
            failed += 1
            return
        add_eval_results(store, [dict(kind=EvalKind.winrate, model_checkpoint_id=a.id, opponent_checkpoint_id=b.id,
                                      question_id=q.id, split=split, rationale_id=ra.id, outcome=OUTCOME[verdict],
                                      a_position=positions[q.id], teacher_call_id=call_id,
                                      details={"opponent_rationale_id": rb.id})])

    async with TeacherClient(teacher, store=store) as client:  # the account's limits, shared via the store
        await asyncio.gather(*(one(client, q) for q in todo))
    with store.session() as session:
        outcomes = list(session.exec(select(EvalResult.outcome).where(
            EvalResult.kind == EvalKind.winrate, EvalResult.model_checkpoint_id == a.id,
            EvalResult.opponent_checkpoint_id == b.id, EvalResult.split == split)))
    return win_rate(outcomes), failed
