"""The pairwise judge: which of two rationales of one question is better.

The order shown to the teacher is drawn at random (or given), and it is part of the stored
request, so every verdict can be audited with the position each rationale had.
"""

from __future__ import annotations

import random
from typing import Any, Literal, Optional

from ..errors import InvalidAnswer
from ..store import Store
from .calls import CallRunner, Task, online
from .client import TeacherClient
from .config import TeacherConfig
from .prompts import JUDGE, judge_ask
from .validation import parse_judgement

Winner = Literal["A", "B", "tie"]


async def judge_pair(client_or_teacher: TeacherClient | TeacherConfig, store: Store, question: Any,
                     rationale_a_text: str, rationale_b_text: str, *, a_position: Optional[str] = None,
                     rng: Optional[random.Random] = None,
                     rationale_id: Optional[int] = None) -> tuple[Winner, Optional[int]]:
    """(winner in the caller's terms, teacher_call_id).

    `a_position` says where rationale A is shown ('A' first, 'B' second); None draws it with
    `rng`, so pass a seeded `random.Random` (or the position itself) to record it alongside.
    A judge that cannot give a valid verdict after the repairs raises `InvalidAnswer`.
    """
    shown = a_position or (rng or random.Random()).choice("AB")
    first, second = (rationale_a_text, rationale_b_text) if shown == "A" else (rationale_b_text, rationale_a_text)
    task = Task("judge", JUDGE, judge_ask(question, first, second), parse_judgement,
                question_id=question.id, rationale_id=rationale_id)
    if isinstance(client_or_teacher, TeacherClient):
        outcome = await CallRunner(store, client_or_teacher.config, online(client_or_teacher)).run(task)
    else:
        async with TeacherClient(client_or_teacher, store=store) as client:
            outcome = await CallRunner(store, client.config, online(client)).run(task)
    if outcome.status != "ok":
        raise InvalidAnswer("no_verdict", f"the judge gave no valid verdict ({outcome.reason}); see teacher_call "
                              f"{outcome.call_id}" if outcome.call_id else f"the judge call failed ({outcome.reason})")
    verdict = outcome.result
    if verdict != "tie" and shown == "B":
        verdict = "A" if verdict == "B" else "B"
    return verdict, outcome.call_id
