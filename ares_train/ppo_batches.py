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

from .ppo_config import PPOConfig
from .rollout_engines import LENGTH
from .sentence_tokens import sentence_ends_on_ids, tokenize_with_sentence_ends
from .vision import concat_images, encode, image_tensors, text_tokenizer

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


def check_groups(groups: Sequence[Hashable], advantage: str) -> int:
    """k, the most rollouts of one question, after checking some question has k >= 2 of them."""
    sizes: dict[Hashable, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    k = max(sizes.values(), default=0)
    if k < 2:
        raise TrainingError(f"advantage={advantage} compares a question's rollouts with each other: "
                            "every question has one (sample k >= 2 per question, or use advantage=gae)")
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
    # a question left with one usable rollout (the others unscored) has nothing to be compared with:
    # dropped and counted; one left with fewer than k is compared within what it has
    alone = [g for g, members in groups.items() if len(members) < 2]
    dropped += sum(len(groups.pop(g)) for g in alone)
    if k > batch_size:
        raise TrainingError(f"advantage={advantage} trains a question's {k} rollouts in one batch: "
                            f"batch_size {batch_size} is too small")
    per_batch = batch_size // k
    ordered = list(groups.values())
    for start in range(0, len(ordered), per_batch):
        yield [r for group in ordered[start:start + per_batch] for r in group], dropped if start == 0 else 0


class RowEncoder:
    """Rows to token ids and a batch's tensors: the prompt tokenised as the sampler tokenised it
    (`vision.encode`), the response as sampled (its stored ids) or, for a row without ids,
    re-tokenised from its text; prompts padded on the left, responses on the right."""

    def __init__(self, config: PPOConfig, processing: Any, device: torch.device):
        self.config, self.processing, self.device = config, processing, device
        self.tokenizer = tok = text_tokenizer(processing)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def prompt_inputs(self, prompt: str, image: Any) -> tuple[list[int], dict[str, torch.Tensor]]:
        """Prompt token ids exactly as the sampler encoded them, plus a VLM's image tensors."""
        encoded = encode(self.processing, [prompt], [image] if image is not None else None, return_tensors="pt")
        return encoded["input_ids"][0].tolist(), image_tensors(encoded) if image is not None else {}

    def _left_pad(self, seqs: Sequence[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts padded on the left to `width`: (ids, attention mask)."""
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for b, seq in enumerate(seqs):
            ids[b, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attn[b, width - len(seq) :] = 1
        return ids, attn

    def _response(self, row: Mapping[str, Any]) -> tuple[list[int], list[int], list[float] | None, bool]:
        """(response ids, sentence-end token positions, behaviour log-probs, truncated)."""
        ids = row.get("token_ids")
        if ids is None:  # the documented fallback: re-tokenise the text
            ids, ends = tokenize_with_sentence_ends(self.tokenizer, row["response"], row["sentence_ends"])
            if self.config.append_eos and self.tokenizer.eos_token_id is not None:
                ids.append(self.tokenizer.eos_token_id)
            return ids, ends, None, False
        ids = [int(i) for i in ids]
        ends = sentence_ends_on_ids(self.tokenizer, ids, row["response"], row["sentence_ends"])
        logprobs = row.get("logprobs")
        if logprobs is not None and len(logprobs) != len(ids):
            raise TrainingError(f"a rollout has {len(ids)} token ids but {len(logprobs)} log-probs")
        return ids, ends, logprobs, row.get("finish_reason") == LENGTH

    def encode(self, row: Mapping[str, Any]) -> Sample | None:
        """Token ids and sentence-end token positions; None when the row cannot be used."""
        if not scores_match(row):
            return None
        prompt_ids, vision = self.prompt_inputs(row["prompt"], row.get("image"))
        try:
            response_ids, ends, behaviour, truncated = self._response(row)
        except ValueError:
            return None
        budget = self.config.max_length - len(prompt_ids)
        if budget < 1 or not response_ids:
            return None
        kept = [(e, float(s)) for e, s in zip(ends, row["scores"]) if e < budget]
        return Sample(prompt_ids, response_ids[:budget], [e for e, _ in kept], [s for _, s in kept], vision,
                       None if behaviour is None else [float(x) for x in behaviour[:budget]],
                       truncated or len(response_ids) > budget, float(row.get("temperature") or 1.0))

    def collate(self, samples: Sequence[Sample]) -> Batch:
        plen = max(len(s.prompt_ids) for s in samples)
        rlen = max(len(s.response_ids) for s in samples)
        prompts, prompt_attn = self._left_pad([s.prompt_ids for s in samples], plen)
        responses = torch.full((len(samples), rlen), self.pad_id, dtype=torch.long)
        response_attn = torch.zeros_like(responses)
        behaviour = torch.zeros((len(samples), rlen), dtype=torch.float32)
        for b, s in enumerate(samples):
            responses[b, : len(s.response_ids)] = torch.tensor(s.response_ids, dtype=torch.long)
            response_attn[b, : len(s.response_ids)] = 1
            if s.behaviour is not None:
                behaviour[b, : len(s.behaviour)] = torch.tensor(s.behaviour, dtype=torch.float32)
        ids, attn = torch.cat([prompts, responses], 1), torch.cat([prompt_attn, response_attn], 1)
        dev = self.device
        return Batch(
            ids.to(dev), attn.to(dev), responses.to(dev), response_attn.float().to(dev), plen,
            [s.end_positions for s in samples], [s.scores for s in samples],
            [{k: v.to(dev) for k, v in s.vision.items()} for s in samples], behaviour.to(dev),
            torch.tensor([s.behaviour is not None for s in samples], device=dev),
            torch.tensor([s.truncated for s in samples], device=dev),
            torch.tensor([s.temperature for s in samples], dtype=torch.float32, device=dev),
        )  # fmt: skip
