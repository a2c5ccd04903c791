"""Rule teachers: judges that check each rationale sentence instead of guessing at it.

The fake teacher (`ares fake-teacher --judge NAME`) answers the project's scoring and
correction prompts with one of these, in the wire format of an LLM teacher, so the real
collectors, validation, store and exports run unchanged while every judgement is right by
construction. A judge reads the question, options and correct answer from the prompt text.

- `arith` (the `ares_data.checkable` family): walking the rationale with the running value
  (the start number, then each accepted step's result) and the operations not yet used, a
  sentence `3 plus 4 is 7.` scores 1.0 when it is true, starts from the running value and uses
  an unused operation (a step of a valid order, see `checkable`); 0.5 when it is true and
  starts from the question's distractor (`v2` questions): true but useless, no harm done;
  0.0 when it is false, uses a wrong operand on the running value, starts from any other
  number (a wrong running value), repeats an earlier sentence without progress, or cannot be
  read.
  `The answer is (X).` scores 1.0 for the correct letter, else 0.0. A correction keeps the
  useful steps before the first wrong sentence, drops the detours (0.5) among them, and
  writes the rest: the remaining operations (`checkable.complete`), then the answer sentence.
- `outcome`: every sentence gets the rationale's outcome (1.0 when its answer is correct,
  else 0.0): with `reward_placement=final` this is the answer-correct reward of outcome-only
  PPO. It corrects as `arith` does.
- `gold`: scores as `arith`; every correction is the question's gold rationale, whatever the
  student wrote (the oracle of the `gold_sft` arm in `benchmarks/ares_effect.py`).

A fallible teacher (`ares_data/teacher_profiles.py`, `--profile llm`) wraps either one.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .checkable import Ops, Step, advance, complete, gold_steps, parse_distractor, parse_question, parse_step
from .formatting import LETTERS, answer_sentence, parse_answer
from .rule_names import JudgeName
from .splitter import split_sentences

if TYPE_CHECKING:
    from .teacher_profiles import Profile

_FIELD = re.compile(r"^(Question|Options|Correct answer): (.*)$", re.MULTILINE)
_OPTION = re.compile(r"\(([A-Z])\) ")


class Judge(Protocol):
    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        """One score per sentence of a rationale for the question in `prompt`."""

    def correct(self, prompt: str, rationale: str) -> str:
        """The corrected rationale."""


@dataclass(frozen=True)
class Problem:
    """What a judge needs of a prompt: the start and operations, the answer index, the option
    count and the distractor (None for a `v1` question)."""

    start: int
    ops: Ops
    answer: int
    n_choices: int
    distractor: int | None = None

    @property
    def steps(self) -> list[Step]:
        """The gold chain (the operations in the question's order)."""
        return gold_steps(self.start, list(self.ops))


def problem_of(question: str, n_choices: int, answer: int) -> Problem | None:
    """The problem of a question of the family (None for any other question)."""
    parsed = parse_question(question)
    if parsed is None:
        return None
    return Problem(parsed[0], tuple(parsed[1]), answer, n_choices, parse_distractor(question))


def read_problem(prompt: str) -> Problem | None:
    """The problem a scoring or correction prompt asks about, or None when it is not of the family."""
    fields = dict(_FIELD.findall(prompt))
    answer = re.match(r"\(([A-Z])\)", fields.get("Correct answer", ""))
    if answer is None:
        return None
    return problem_of(fields.get("Question", ""), len(_OPTION.findall(fields.get("Options", ""))),
                      LETTERS.index(answer.group(1)))


def is_answer(sentence: str) -> bool:
    return "answer is" in sentence.lower()


@dataclass(frozen=True)
class Verdict:
    """A sentence's score and the walk's state after it: the running value, the operations left."""

    score: float
    value: int
    remaining: Ops


def walk(problem: Problem, sentences: list[str]) -> list[Verdict]:
    """One verdict per sentence, walking the rationale in order (module docstring)."""
    seen: set[str] = set()
    value, remaining, out = problem.start, problem.ops, []
    for sentence in sentences:
        text = " ".join(sentence.split())
        step = parse_step(text)
        left = None if step is None else advance(value, remaining, step)
        if step is not None and left is not None:  # progress, even in the words of an earlier step
            score, value, remaining = 1.0, step.result, left
        elif text in seen:
            score = 0.0
        elif is_answer(text):
            score = 1.0 if parse_answer(text, problem.n_choices) == problem.answer else 0.0
        elif step is not None and step.true and step.left == problem.distractor:
            score = 0.5
        else:  # false, unreadable, a wrong operand on the running value, or a wrong running value
            score = 0.0
        seen.add(text)
        out.append(Verdict(score, value, remaining))
    return out


def check(problem: Problem, sentences: list[str]) -> list[tuple[float, int]]:
    """(score, operations done after it) for each sentence, walking the rationale in order."""
    return [(v.score, len(problem.ops) - len(v.remaining)) for v in walk(problem, sentences)]


def kept_prefix(problem: Problem, sentences: list[str]) -> tuple[list[str], int, Ops]:
    """What a minimal correction keeps of a rationale: its useful steps (1.0) before the first
    wrong sentence or its answer sentence, detours (0.5) dropped; with the running value and the
    operations left after them."""
    kept, value, remaining = [], problem.start, problem.ops
    for sentence, verdict in zip(sentences, walk(problem, sentences)):
        if verdict.score == 0.0 or is_answer(sentence):
            break
        if verdict.score == 1.0:
            kept.append(sentence)
        value, remaining = verdict.value, verdict.remaining
    return kept, value, remaining


def corrected(problem: Problem, sentences: list[str], rng: random.Random | None = None) -> list[str]:
    """The sentences of the minimal correction; with `rng`, the rest in a random valid order."""
    kept, value, remaining = kept_prefix(problem, sentences)
    return [*kept, *(s.sentence() for s in complete(value, remaining, rng)), answer_sentence(problem.answer)]


class ArithJudge:
    """Checks `ares_data.checkable` rationales sentence by sentence (module docstring)."""

    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        problem = read_problem(prompt)
        if problem is None:
            return [0.5] * len(sentences)
        return [v.score for v in walk(problem, sentences)]

    def correct(self, prompt: str, rationale: str) -> str:
        problem = read_problem(prompt)
        if problem is None:
            return rationale.strip()
        return " ".join(corrected(problem, [s.text for s in split_sentences(rationale)]))


class OutcomeJudge(ArithJudge):
    """Every sentence scores the rationale's outcome: 1.0 when its answer is correct, else 0.0."""

    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        problem = read_problem(prompt)
        if problem is None:
            return [0.5] * len(sentences)
        right = parse_answer(" ".join(sentences), problem.n_choices) == problem.answer
        return [1.0 if right else 0.0] * len(sentences)


class GoldJudge(ArithJudge):
    """Corrects every rationale to the question's gold one (an oracle, not a teacher)."""

    def correct(self, prompt: str, rationale: str) -> str:
        problem = read_problem(prompt)
        if problem is None:
            return rationale.strip()
        return " ".join([*(s.sentence() for s in problem.steps), answer_sentence(problem.answer)])


JUDGES: dict[JudgeName, type] = {JudgeName.arith: ArithJudge, JudgeName.outcome: OutcomeJudge,
                                 JudgeName.gold: GoldJudge}


def make_judge(name: JudgeName | str, profile: "Profile | None" = None, seed: int = 0) -> Judge:
    """The judge called `name`, made as fallible as `profile` says (exact when None)."""
    from .teacher_profiles import FallibleJudge  # it wraps these judges

    judge = JUDGES[JudgeName(name)]()
    return judge if profile is None or profile.exact else FallibleJudge(judge, profile, seed)
