"""Helpers shared by the teacher tests: a store with questions and student rationales."""

from __future__ import annotations

import httpx

from ares_data.store import Store
from ares_data.tables import Question
from ares_data.teacher import TeacherConfig

TEXTS = [
    "The magnet pulls the nail. Magnets attract iron. So the nail is made of iron. The answer is (A).",
    "Plants need light to grow. The plant in the dark wilts. The answer is (B).",
    "A compass points north. The map shows the river east of the town. The answer is (A).",
]


def add_rationales(store: Store, n: int, *, round: int = 1, source: str = "student") -> list[int]:
    """`n` rationales over n // 2 + 1 questions; returns their ids."""
    ids = []
    with store.session() as session:
        questions = []
        for q in range(n // 2 + 1):
            row = Question(dataset="test", source_id=f"{source}-{q}", split="train", question=f"Question {q}?",
                           choices=["iron", "wood", "glass"], answer_index=q % 3, hint="A hint.")
            session.add(row)
            questions.append(row)
        session.flush()
        for i in range(n):
            text = f"Sample {i}. " + TEXTS[i % len(TEXTS)]
            rationale, _ = store.add_rationale(session, question_id=questions[i // 2].id, source=source, text=text,
                                               dedup_key=f"{source}:{i}", round=round if source == "student" else None,
                                               sample_index=i % 2)
            ids.append(rationale.id)
    return ids


def fake_config(url: str, **options) -> TeacherConfig:
    """A teacher config for the fake teacher at `url`: fast limits, short timeout."""
    return TeacherConfig.from_options(base_url=url, **{"model": "fake", "rpm": 6000, "timeout": 5, **options})


def fake_stats(url: str) -> dict:
    """The fake teacher's counters (`GET /stats`)."""
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def sql_rows(store: Store, sql: str) -> list:
    """The rows of a read-only query, as `ares sql` runs it."""
    return store.query_readonly(sql)[1]
