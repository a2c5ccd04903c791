"""A task family whose every rationale step a program can check: chained one-digit arithmetic.

A question says where to start and what to add or subtract ("Start with 3, add 4, then subtract
2. What number do you get?"); its options are the ten digits, (A) 0 to (J) 9; its gold
rationale takes one sentence per operation ("3 plus 4 is 7.") and ends in the answer sentence.
Every number of the gold chain stays within 0-9 (one token for the SmolLM2 tokenizer), so a
small student can learn the format quickly and still get chains wrong. Generation is seeded:
the same seed gives the same file. The grammar is written once here and read back by the rule
teacher (`ares_data/judges.py`), which checks each sentence against it.

Two variants: `v1`, 2-3 operations, every distinct question enumerable (`question_space`);
`v2` (issue 28), 5-6 operations drawn at random and a distractor sentence in front ("A bag
holds 6 marbles. Start with 3, ..."), so a true sentence about the distractor ("6 plus 4 is
10.") is true but useless, unlike a step of the chain.

A correct chain may apply the operations in any *valid order*: each operation of the question
used exactly once, each step starting from the previous step's result (the first from the
start number), every running value at least 0 (a sentence cannot state a negative number).
Addition and subtraction commute, so every valid order ends on the answer, and any prefix of a
valid order can be finished (the additions left, then the subtractions, stay at or above the
answer), so a step on the running value that uses an unused operation is always progress.

Write a train/test file for `ares import jsonl` with
`python -m ares_data.checkable OUT.jsonl --train 200 --test 100 --seed 0 [--family v2]`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .formatting import answer_sentence
from .splitter import split_sentences

DATASET = "arith"
# Every question offers the ten digits, (A) 0 to (J) 9: the letter is a fixed function of the
# result, so an answer is right exactly when the chain is. With four options around the result
# (the first design) a small student's letters did not follow its chains: ARES raised its correct
# chains from 32% to 70% of test questions and its accuracy stayed at 41% (docs/benchmarks.md).
OPTIONS = list(range(10))
_WORD_OP = {"plus": 1, "minus": -1}
_QUESTION = re.compile(r"Start with (\d+), (.*)\. What number do you get\?")
_DISTRACTOR = re.compile(r"A bag holds (\d+) marbles\.")
_OPERATION = re.compile(r"(add|subtract) (\d+)")
_STEP = re.compile(r"^(\d+) (plus|minus) (\d+) is (\d+)\.?$")


@dataclass(frozen=True)
class Step:
    """`left op right is result`, as one rationale sentence states it (op: +1 plus, -1 minus)."""

    left: int
    op: int
    right: int
    result: int

    @property
    def true(self) -> bool:
        return self.left + self.op * self.right == self.result

    def sentence(self) -> str:
        return f"{self.left} {'plus' if self.op > 0 else 'minus'} {self.right} is {self.result}."


def parse_step(sentence: str) -> Step | None:
    """The step a sentence states, or None when it is not of the form `3 plus 4 is 7.`."""
    found = _STEP.match(sentence.strip())
    if not found:
        return None
    left, word, right, result = found.groups()
    return Step(int(left), _WORD_OP[word], int(right), int(result))


def parse_question(question: str) -> tuple[int, list[tuple[int, int]]] | None:
    """(start, [(op, operand), ...]) of a question of this family, or None for any other text."""
    found = _QUESTION.search(question)
    if not found:
        return None
    ops = [(1 if verb == "add" else -1, int(n)) for verb, n in _OPERATION.findall(found.group(2))]
    return (int(found.group(1)), ops) if ops else None


def parse_distractor(question: str) -> int | None:
    """The distractor number of a `v2` question (None for a `v1` one)."""
    found = _DISTRACTOR.search(question)
    return int(found.group(1)) if found else None


Ops = tuple[tuple[int, int], ...]


def advance(value: int, remaining: Ops, step: Step) -> Ops | None:
    """The operations left after `step`, when it is true, starts from the running `value` and
    uses one of the `remaining` operations (module docstring: a valid order); else None."""
    if not step.true or step.left != value or (step.op, step.right) not in remaining:
        return None
    left = list(remaining)
    left.remove((step.op, step.right))
    return tuple(left)


def complete(value: int, remaining: Ops, rng: random.Random | None = None) -> list[Step]:
    """Steps that finish a chain from `value` with the `remaining` operations: in the question's
    order when every running value stays at or above 0, else the additions first; with `rng`, in
    a random valid order (another order a teacher might write)."""
    orders = [list(remaining)]
    if rng is not None:
        orders.insert(0, rng.sample(remaining, len(remaining)))
    for order in orders:
        steps = gold_steps(value, order)
        if all(s.result >= 0 for s in steps):
            return steps
    return gold_steps(value, sorted(remaining, key=lambda o: -o[0]))  # additions first: always valid


def gold_steps(start: int, ops: list[tuple[int, int]]) -> list[Step]:
    """The correct chain: one step per operation, each starting from the previous result."""
    steps, value = [], start
    for op, operand in ops:
        steps.append(Step(value, op, operand, value + op * operand))
        value = steps[-1].result
    return steps


def chain_is_correct(question: str, rationale: str) -> bool:
    """The rationale's sentences before its answer sentence are a correct chain for the question,
    in any valid order (module docstring)."""
    parsed = parse_question(question)
    if parsed is None:
        return False
    value, remaining = parsed[0], tuple(parsed[1])
    for sentence in split_sentences(rationale)[:-1]:
        step = parse_step(sentence.text)
        left = None if step is None else advance(value, remaining, step)
        if step is None or left is None:
            return False
        value, remaining = step.result, left
    return not remaining


def _question_text(start: int, ops: list[tuple[int, int]], distractor: int | None = None) -> str:
    words = [f"{'add' if op > 0 else 'subtract'} {n}" for op, n in ops]
    chain = ", ".join(words[:-1]) + f", then {words[-1]}" if len(words) > 1 else words[0]
    front = "" if distractor is None else f"A bag holds {distractor} marbles. "
    return f"{front}Start with {start}, {chain}. What number do you get?"


def _chains(value: int, n_ops: int) -> list[list[tuple[int, int]]]:
    """Every list of `n_ops` operations from `value` whose intermediate values stay within 0-9."""
    if n_ops == 0:
        return [[]]
    return [[(op, operand), *rest]
            for op in (1, -1)
            for operand in range(1, (9 - value if op > 0 else value) + 1)
            for rest in _chains(value + op * operand, n_ops - 1)]


def question_space(min_ops: int = 2, max_ops: int = 3) -> list[tuple[int, list[tuple[int, int]]]]:
    """Every distinct question of the family, as (start, operations): 7,290 for 2-3 operations."""
    return [(start, ops) for n_ops in range(min_ops, max_ops + 1) for start in range(1, 10)
            for ops in _chains(start, n_ops)]


def make_question(start: int, ops: list[tuple[int, int]], index: int, split: str,
                  distractor: int | None = None) -> dict:
    """One JSONL record of the family (the format `ares import jsonl` reads)."""
    steps = gold_steps(start, ops)
    options, answer = OPTIONS, steps[-1].result
    rationale = " ".join([*(s.sentence() for s in steps), answer_sentence(answer)])
    return {"id": f"{split}-{index}", "split": split, "question": _question_text(start, ops, distractor),
            "choices": [str(o) for o in options], "answer": answer, "rationale": rationale,
            "subject": DATASET, "metadata": {"start": start, "ops": [list(o) for o in ops],
                                             **({} if distractor is None else {"distractor": distractor})}}


def make_tasks(train: int, test: int, seed: int = 0, min_ops: int = 2, max_ops: int = 3) -> list[dict]:
    """`train` + `test` distinct questions drawn without replacement from `question_space`, so no
    test question is a train question; ValueError when the family has fewer."""
    space = question_space(min_ops, max_ops)
    if train + test > len(space):
        raise ValueError(f"{train} + {test} questions asked, but {min_ops}-{max_ops} operations give only "
                         f"{len(space)} distinct questions")
    drawn = iter(random.Random(seed).sample(space, train + test))
    return [make_question(*next(drawn), index, split)
            for split, count in (("train", train), ("test", test)) for index in range(count)]


def draw_question(rng: random.Random, n_ops: int) -> tuple[int, list[tuple[int, int]], int]:
    """A random `v2` question: (start, operations, distractor). Each operation is drawn among
    those keeping the running value within 0-9; the distractor is a digit 1-9 that is none of the
    gold chain's running values, so a step from it is never a step of the gold chain."""
    while True:
        value = start = rng.randint(1, 9)
        ops = []
        for _ in range(n_ops):
            op = rng.choice([o for o in (1, -1) if (value < 9 if o > 0 else value > 0)])
            operand = rng.randint(1, 9 - value if op > 0 else value)
            ops.append((op, operand))
            value += op * operand
        values = {start, *(s.result for s in gold_steps(start, ops))}
        free = [d for d in range(1, 10) if d not in values]
        if free:
            return start, ops, rng.choice(free)


def question_key(record: dict) -> tuple:
    """What makes two records of the family the same question (the distractor aside)."""
    return record["metadata"]["start"], tuple(tuple(op) for op in record["metadata"]["ops"])


def make_family(counts: dict[str, tuple[int, int, int]], seed: int = 0, exclude: Iterable[dict] = ()) -> list[dict]:
    """`v2` records: per split, `count` distinct questions of `min_ops`-`max_ops` operations
    (`counts[split] = (count, min_ops, max_ops)`); no question in two splits, none of `exclude`'s.
    Seeded: one seed, one set of records."""
    rng, seen, records = random.Random(seed), {question_key(r) for r in exclude}, []
    for split, (count, min_ops, max_ops) in counts.items():
        index = 0
        while index < count:
            start, ops, distractor = draw_question(rng, rng.randint(min_ops, max_ops))
            if (start, tuple(ops)) in seen:
                continue
            seen.add((start, tuple(ops)))
            records.append(make_question(start, ops, index, split, distractor))
            index += 1
    return records


def write_records(path: Path, records: list[dict]) -> int:
    """Write records as JSON Lines; returns how many."""
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return len(records)


def write_tasks(path: Path, train: int, test: int, seed: int = 0, family: str = "v1") -> int:
    """Write `make_tasks(train, test, seed)` (`v1`) or its `v2` twin (5-6 operations, a
    distractor) as JSON Lines; returns how many."""
    if family == "v2":
        return write_records(path, make_family({"train": (train, 5, 6), "test": (test, 5, 6)}, seed))
    return write_records(path, make_tasks(train, test, seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ares_data.checkable", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSONL file to write (then: ares import jsonl OUT)")
    parser.add_argument("--train", type=int, default=200, help="train questions")
    parser.add_argument("--test", type=int, default=100, help="test questions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator")
    parser.add_argument("--family", choices=("v1", "v2"), default="v1",
                        help="v1: 2-3 operations; v2: 5-6 operations and a distractor")
    args = parser.parse_args(argv)
    try:
        print(f"{write_tasks(args.out, args.train, args.test, args.seed, args.family)} questions written to {args.out}")
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
