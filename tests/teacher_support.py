"""Helpers shared by the teacher tests: a store with questions and student rationales."""

from __future__ import annotations

from ares_data.store import Store
from ares_data.tables import Question

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
