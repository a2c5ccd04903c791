"""Which rows the PPO trainer steps on together, and a batch's tensors (`Sample`, `Batch`).

`gae` takes rows in order, `batch_size` at a time. `grpo` and `rloo` compare a question's k
rollouts with each other, so a batch holds whole groups (a row's `group`, else its prompt):
as many as fit in `batch_size`. A group of one, or one that lost rollouts (unscored, scores not
matching its sentences), would give a baseline from fewer rollouts than the others, so it is
refused with one line instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Iterator, Mapping, Sequence

import torch

from ares_data.errors import TrainingError

from .vision import concat_images

Row = Mapping[str, Any]


@dataclass
class Sample:
    prompt_ids: list[int]
    response_ids: list[int]
    end_positions: list[int]
    scores: list[float]
    vision: dict[str, torch.Tensor]  # a VLM's image tensors for this prompt; empty when text only
    behaviour: list[float] | None  # the sampler's log-prob of each response token, when stored
    truncated: bool  # no EOS: cut at the sampler's length cap or at max_length
    temperature: float


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor
    response_ids: torch.Tensor  # [B, R]
    mask: torch.Tensor  # [B, R] float, 1 on real response tokens
    prompt_len: int
    end_positions: list[list[int]]
    scores: list[list[float]]
    vision: list[dict[str, torch.Tensor]]
    behaviour: torch.Tensor  # [B, R]; 0 where unknown
    has_behaviour: torch.Tensor  # [B] bool
    truncated: torch.Tensor  # [B] bool
    temperature: torch.Tensor  # [B]

    def select(self, idx: torch.Tensor) -> "Batch":
        rows = idx.tolist()
        return Batch(
            self.input_ids[idx], self.attention_mask[idx], self.response_ids[idx], self.mask[idx], self.prompt_len,
            [self.end_positions[i] for i in rows], [self.scores[i] for i in rows], [self.vision[i] for i in rows],
            self.behaviour[idx], self.has_behaviour[idx], self.truncated[idx], self.temperature[idx],
        )  # fmt: skip

    def image_inputs(self) -> dict[str, torch.Tensor]:
        """The rows' image tensors, concatenated in row order (as their image tokens appear)."""
        return concat_images(self.vision)


def scores_match(row: Row) -> bool:
    """A row is usable only when it has one score per sentence."""
    return len(row["scores"]) == len(row["sentence_ends"])


def group_of(row: Row) -> Hashable:
    """The question a rollout answers: its `group` (the store's question id), else its prompt."""
    group = row.get("group")
    return row["prompt"] if group is None else group


def _named(group: Hashable) -> str:
    text = str(group)
    return f"question {text}" if len(text) <= 40 else f"the question whose prompt starts {text[:30]!r}"


def check_groups(groups: Sequence[Hashable], advantage: str) -> int:
    """k, the rollouts per question, after checking every group has k >= 2 of them."""
    sizes: dict[Hashable, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    k = max(sizes.values(), default=0)
    if k < 2:
        raise TrainingError(f"advantage={advantage} compares a question's rollouts with each other: "
                            "every question has one (sample k >= 2 per question, or use advantage=gae)")
    short = next((g for g, n in sizes.items() if n < k), None)
    if short is not None:
        raise TrainingError(f"advantage={advantage}: {_named(short)} has {sizes[short]} usable rollouts, the others "
                            f"{k} (unscored or scores not matching sentences); score them all or drop the question")
    return k


def batches(rows: Iterable[Row], batch_size: int, advantage: str) -> Iterator[tuple[list[Row], int]]:
    """(rows of a batch, rows dropped since the previous batch) in training order; the last
    batch may be short. Rows whose scores do not match their sentences are dropped (counted)."""
    kept: list[Row] = []
    dropped = 0
    grouped = advantage != "gae"
    for row in rows:
        if not scores_match(row):
            dropped += 1
            continue
        kept.append(row)
        if not grouped and len(kept) == batch_size:
            yield kept, dropped
            kept, dropped = [], 0
    if grouped:
        yield from _group_batches(kept, dropped, batch_size, advantage)
    elif kept or dropped:
        yield kept, dropped


def _group_batches(rows: list[Row], dropped: int, batch_size: int, advantage: str) -> Iterator[tuple[list[Row], int]]:
    groups: dict[Hashable, list[Row]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(row)
    if dropped and not rows:
        yield [], dropped
        return
    k = check_groups([group_of(r) for r in rows], advantage)
    if k > batch_size:
        raise TrainingError(f"advantage={advantage} trains a question's {k} rollouts in one batch: "
                            f"batch_size {batch_size} is too small")
    per_batch = batch_size // k
    ordered = list(groups.values())
    for start in range(0, len(ordered), per_batch):
        yield [r for group in ordered[start:start + per_batch] for r in group], dropped if start == 0 else 0
