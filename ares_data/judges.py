"""Rule teachers: judges that check each rationale sentence instead of guessing at it.

The fake teacher (`ares fake-teacher --judge NAME`) answers the project's scoring and
correction prompts with one of these, in the wire format of an LLM teacher, so the real
collectors, validation, store and exports run unchanged while every judgement is right by
construction. A judge reads the question, options and correct answer from the prompt text.

- `arith` (the `ares_data.checkable` family): a sentence `3 plus 4 is 7.` scores 1.0 when it
  is the next step of the correct chain, 0.5 when it is true but does not help (an unrelated
  true sum), 0.0 when it is false, uses a wrong operand, repeats an earlier sentence, or
  cannot be read; `The answer is (X).` scores 1.0 for the correct letter, else 0.0. A
  correction keeps the sentences before the first wrong one and rewrites the rest: the
  remaining correct steps, then the answer sentence.
- `outcome`: every sentence gets the rationale's outcome (1.0 when its answer is correct,
  else 0.0): with `reward_placement=final` this is the answer-correct reward of outcome-only
  PPO. It corrects as `arith` does.

`NoisyJudge` flips a share of the scores (s -> 1 - s), seeded by the sentence and its
question, so one request always gets the same answer: a worse teacher for the noise arm.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .checkable import Step, gold_steps, parse_question, parse_step
from .formatting import LETTERS, answer_sentence, parse_answer
from .splitter import split_sentences

_FIELD = re.compile(r"^(Question|Options|Correct answer): (.*)$", re.MULTILINE)
_OPTION = re.compile(r"\(([A-Z])\) ")


class JudgeName(str, Enum):
    arith = "arith"
    outcome = "outcome"


class Judge(Protocol):
    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        """One score per sentence of a rationale for the question in `prompt`."""

    def correct(self, prompt: str, rationale: str) -> str:
        """The corrected rationale."""


@dataclass(frozen=True)
class Problem:
    """What a judge needs of a prompt: the correct chain, the answer index, the option count."""

    steps: list[Step]
    answer: int
    n_choices: int


def problem_of(question: str, n_choices: int, answer: int) -> Problem | None:
    """The problem of a question of the family (None for any other question)."""
    parsed = parse_question(question)
    return None if parsed is None else Problem(gold_steps(*parsed), answer, n_choices)


def read_problem(prompt: str) -> Problem | None:
    """The problem a scoring or correction prompt asks about, or None when it is not of the family."""
    fields = dict(_FIELD.findall(prompt))
    answer = re.match(r"\(([A-Z])\)", fields.get("Correct answer", ""))
    if answer is None:
        return None
    return problem_of(fields.get("Question", ""), len(_OPTION.findall(fields.get("Options", ""))),
                      LETTERS.index(answer.group(1)))


def _is_answer(sentence: str) -> bool:
    return "answer is" in sentence.lower()


def check(problem: Problem, sentences: list[str]) -> list[tuple[float, int]]:
    """(score, gold steps done after it) for each sentence, walking the rationale in order."""
    seen: set[str] = set()
    done, out = 0, []
    for sentence in sentences:
        text = " ".join(sentence.split())
        step = parse_step(text)
        if text in seen:
            score = 0.0
        elif _is_answer(text):
            score = 1.0 if parse_answer(text, problem.n_choices) == problem.answer else 0.0
        elif step is None or not step.true:
            score = 0.0
        elif step in problem.steps[done:]:
            score, done = 1.0, problem.steps.index(step, done) + 1
        else:  # true, but not a step of this chain: on the current value it misreads the question
            current = problem.steps[done - 1].result if done else problem.steps[0].left
            score = 0.0 if step.left == current else 0.5
        seen.add(text)
        out.append((score, done))
    return out


class ArithJudge:
    """Checks `ares_data.checkable` rationales sentence by sentence (module docstring)."""

    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        problem = read_problem(prompt)
        if problem is None:
            return [0.5] * len(sentences)
        return [score for score, _ in check(problem, sentences)]

    def correct(self, prompt: str, rationale: str) -> str:
        problem = read_problem(prompt)
        if problem is None:
            return rationale.strip()
        sentences = [s.text for s in split_sentences(rationale)]
        kept, done = [], 0
        for sentence, (score, after) in zip(sentences, check(problem, sentences)):
            if score == 0.0 or _is_answer(sentence):
                break
            kept.append(sentence)
            done = after
        rest = [s.sentence() for s in problem.steps[done:]] + [answer_sentence(problem.answer)]
        return " ".join([*kept, *rest])


class OutcomeJudge(ArithJudge):
    """Every sentence scores the rationale's outcome: 1.0 when its answer is correct, else 0.0."""

    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        problem = read_problem(prompt)
        if problem is None:
            return [0.5] * len(sentences)
        right = parse_answer(" ".join(sentences), problem.n_choices) == problem.answer
        return [1.0 if right else 0.0] * len(sentences)


@dataclass
class NoisyJudge:
    """`judge` with a share `noise` of its scores flipped (s -> 1 - s); corrections unchanged."""

    judge: Judge
    noise: float
    seed: int = 0

    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        question = dict(_FIELD.findall(prompt)).get("Question", "")
        out = []
        for index, (sentence, score) in enumerate(zip(sentences, self.judge.scores(prompt, sentences))):
            key = hashlib.sha256(f"{self.seed}:{question}:{index}:{sentence}".encode()).hexdigest()
            flip = random.Random(key).random() < self.noise
            out.append(round(1.0 - score, 1) if flip else score)
        return out

    def correct(self, prompt: str, rationale: str) -> str:
        return self.judge.correct(prompt, rationale)


JUDGES: dict[JudgeName, type] = {JudgeName.arith: ArithJudge, JudgeName.outcome: OutcomeJudge}


def make_judge(name: JudgeName | str, noise: float = 0.0, seed: int = 0) -> Judge:
    """The judge called `name`, with `noise` of its scores flipped when noise > 0."""
    judge = JUDGES[JudgeName(name)]()
    return NoisyJudge(judge, noise, seed) if noise > 0 else judge
