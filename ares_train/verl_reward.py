"""A verl reward manager that turns stored sentence scores into token-level rewards.

With it, PPO with ARES's dense rewards runs on verl's Ray cluster instead of our one-machine
trainer. It follows verl's reward-manager interface (`AbstractRewardManager`):
`__init__(tokenizer, num_examine, compute_score=None, reward_fn_key="data_source", **kwargs)`
and `__call__(data: DataProto, return_dict=False)` returning a float `reward_tensor` of shape
[batch, response_length] (or `{"reward_tensor", "reward_extra_info"}`).

Each row of the exported verl parquet carries `extra_info = {split, index, rationale_id,
question_id, response, sentence_ends, scores}`. For each sample the manager decodes the valid
response tokens, finds the stored response in that text, and puts `score_i - neutral` on the
token holding the last character of sentence i (`sentence_tokens.sentence_end_tokens`, with
each token's character span taken from incremental decoding, so the spans belong to verl's own
token ids). The KL penalty is left to verl (`algorithm.use_kl_in_reward` or the actor's KL
loss). A sample whose decoded response does not contain the stored one (the actor wrote
something new) or whose score count does not match its sentences gets no reward and is counted
in `reward_extra_info["ares_unmatched"]`.

Use: import this module in the verl entry point, which registers the class under the name
`ares_sentence` when verl is importable, and set `reward_model.reward_manager=ares_sentence`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

import torch

from .ppo_math import score_rewards
from .sentence_tokens import sentence_end_tokens

try:  # verl is optional: the class works (and is tested) with any object of DataProto's shape
    from verl.workers.reward_manager import register
    from verl.workers.reward_manager.abstract import AbstractRewardManager as _Base
except ImportError:
    register, _Base = None, object

REGISTERED_NAME = "ares_sentence"


def decoded_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text and each token's character span in it (special tokens get empty spans).

    A token that ends inside a multi-byte character decodes to U+FFFD; it gets an empty span and
    the token that completes the character holds it.
    """
    spans, end = [], 0
    for k in range(len(ids)):
        text = tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
        new_end = max(end, len(text.rstrip("\ufffd")))
        spans.append((end, new_end))
        end = new_end
    return tokenizer.decode(ids, skip_special_tokens=True), spans


class SentenceScoreRewardManager(_Base):
    """Dense token rewards from the teacher's sentence scores stored in `extra_info`."""

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Callable[..., Any] | None = None,
        reward_fn_key: str = "data_source",
        neutral_score: float = 0.5,
        **kwargs: Any,
    ):
        # compute_score / reward_fn_key are part of verl's interface; the scores are stored.
        self.tokenizer, self.num_examine, self.neutral = tokenizer, num_examine, neutral_score

    def _sentence_tokens(self, ids: list[int], info: dict) -> tuple[list[int], list[float]] | None:
        """Token position and score of each stored sentence, or None when they do not apply."""
        ends, scores = list(info["sentence_ends"]), [float(s) for s in info["scores"]]
        if len(ends) != len(scores):
            return None
        text, spans = decoded_offsets(self.tokenizer, ids)
        shift = text.find(info["response"])
        if shift < 0:
            return None
        try:
            return sentence_end_tokens(spans, [e + shift for e in ends]), scores
        except ValueError:
            return None

    def __call__(self, data: Any, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        responses = data.batch["responses"]
        prompt_len = data.batch["prompts"].shape[-1]
        mask = data.batch["attention_mask"][:, prompt_len:].float()
        infos = data.non_tensor_batch["extra_info"]
        positions, scores = [], []
        extra: dict[str, list] = defaultdict(list)
        for i in range(responses.shape[0]):
            valid = int(mask[i].sum())
            placed = self._sentence_tokens(responses[i, :valid].tolist(), infos[i])
            extra["ares_unmatched"].append(placed is None)
            positions.append(placed[0] if placed else [])
            scores.append(placed[1] if placed else [])
            if i < self.num_examine:
                print("[ares response]", infos[i]["response"], "[scores]", scores[-1])
        reward = score_rewards(positions, scores, mask, self.neutral, "sentence").to(responses.device)
        if return_dict:
            return {"reward_tensor": reward, "reward_extra_info": dict(extra)}
        return reward


if register is not None:
    register(REGISTERED_NAME)(SentenceScoreRewardManager)
