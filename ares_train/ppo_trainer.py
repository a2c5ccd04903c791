"""PPO with sentence-level rewards, on transformers + PEFT (TRL 1.16 has no PPO trainer).

One base model in memory, two LoRA adapters on it:

- the **policy** is PEFT's `default` adapter (so `save_pretrained` writes it at the top of the
  output dir, where `PeftModel.from_pretrained(base, dir)` finds it);
- the **critic** is a second adapter, `critic`, switched in with `set_adapter`, plus a
  `Linear(hidden, 1)` value head on the last hidden state. A separate critic keeps value-loss
  gradients out of the policy's weights, at the cost of one more forward pass per update;
- the **reference** is the same model with adapters disabled (`with model.disable_adapter()`),
  i.e. the model the caller passed in (earlier rounds' adapters merged by the caller).

`get_peft_model` injects the adapters into the model passed in, in place.

Sequences are laid out with prompts padded on the left and responses on the right, so every
response starts at the same column and the logits that predict it are one slice.
`save(dir)` writes the policy adapter at `dir/`, the critic adapter at `dir/critic/` and the
value head at `dir/value_head.safetensors`.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from ares_data.errors import TrainingError

from . import ppo_math as pm
from .ppo_config import PPOConfig
from .sentence_tokens import tokenize_with_sentence_ends
from .vision import concat_images, encode, image_tensors, is_processor, lora_targets, model_positions, text_tokenizer

POLICY, CRITIC = "default", "critic"
VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class _Sample:
    prompt_ids: list[int]
    response_ids: list[int]
    end_positions: list[int]
    scores: list[float]
    vision: dict[str, torch.Tensor]  # a VLM's image tensors for this prompt; empty when text only


@dataclass
class _Batch:
    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor  # [B, R]
    mask: torch.Tensor  # [B, R] float, 1 on real response tokens
    prompt_len: int
    end_positions: list[list[int]]
    scores: list[list[float]]
    vision: list[dict[str, torch.Tensor]]

    def select(self, idx: torch.Tensor) -> "_Batch":
        rows = idx.tolist()
        return _Batch(
            self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx],
            self.response_ids[idx], self.mask[idx], self.prompt_len,
            [self.end_positions[i] for i in rows], [self.scores[i] for i in rows], [self.vision[i] for i in rows],
        )  # fmt: skip

    def image_inputs(self) -> dict[str, torch.Tensor]:
        """The rows' image tensors, concatenated in row order (as their image tokens appear)."""
        return concat_images(self.vision)


def scores_match(row: Mapping[str, Any]) -> bool:
    """A row is usable only when it has one score per sentence."""
    return len(row["scores"]) == len(row["sentence_ends"])


class SentenceRewardPPOTrainer:
    def __init__(self, config: PPOConfig, model: Any, tokenizer: Any):
        """`tokenizer` is a VLM's processor when the student is one; rows may then carry an `image`."""
        torch.manual_seed(config.seed)
        self.processor = tokenizer if is_processor(tokenizer) else None
        self.config, self.tokenizer = config, text_tokenizer(tokenizer)
        tokenizer = self.tokenizer
        lora = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=lora_targets(model, config.lora_target_modules, config.lora_vision), task_type="CAUSAL_LM",
        )  # fmt: skip
        self.model = get_peft_model(model, lora, adapter_name=POLICY)
        self.model.add_adapter(CRITIC, lora)
        self.model.set_adapter(POLICY)
        self.device = next(model.parameters()).device
        hidden = model.config.get_text_config().hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.device)
        self.params = [p for n, p in self.model.named_parameters() if "lora_" in n]
        self.params += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        bos = tokenizer.bos_token_id
        # Chat-formatted prompts already carry their template tokens, so they are tokenised
        # without special tokens; only a BOS the tokenizer would add and the text lacks is added.
        adds_bos = bos is not None and tokenizer("x").input_ids[:1] == [bos]
        self._bos = [bos] if adds_bos else []
        self.step_count = 0

    # -- data -----------------------------------------------------------------------------

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self._with_bos(self.tokenizer(prompt, add_special_tokens=False).input_ids)

    def _with_bos(self, ids: list[int]) -> list[int]:
        return ids if not self._bos or ids[:1] == self._bos else self._bos + ids

    def _prompt_inputs(self, prompt: str, image: Any) -> tuple[list[int], dict[str, torch.Tensor]]:
        """Prompt token ids, plus a VLM's image tensors (image tokens expanded) when the row has an image."""
        if image is None or self.processor is None:
            return self._prompt_ids(prompt), {}
        encoded = encode(self.processor, [prompt], [image], return_tensors="pt")
        return self._with_bos(encoded["input_ids"][0].tolist()), image_tensors(encoded)

    def _left_pad(self, seqs: Sequence[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts padded on the left to `width`: (ids, attention mask)."""
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for b, seq in enumerate(seqs):
            ids[b, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attn[b, width - len(seq) :] = 1
        return ids, attn

    def _encode(self, row: Mapping[str, Any]) -> _Sample | None:
        """Token ids and sentence-end token positions; None when the row cannot be used."""
        if not scores_match(row):
            return None
        prompt_ids, vision = self._prompt_inputs(row["prompt"], row.get("image"))
        try:
            response_ids, ends = tokenize_with_sentence_ends(self.tokenizer, row["response"], row["sentence_ends"])
        except ValueError:
            return None
        if self.config.append_eos and self.tokenizer.eos_token_id is not None:
            response_ids.append(self.tokenizer.eos_token_id)
        budget = self.config.max_length - len(prompt_ids)
        if budget < 1 or not response_ids:
            return None
        kept = [(e, float(s)) for e, s in zip(ends, row["scores"]) if e < budget]
        return _Sample(prompt_ids, response_ids[:budget], [e for e, _ in kept], [s for _, s in kept], vision)

    def _collate(self, samples: Sequence[_Sample]) -> _Batch:
        plen = max(len(s.prompt_ids) for s in samples)
        rlen = max(len(s.response_ids) for s in samples)
        prompts, prompt_attn = self._left_pad([s.prompt_ids for s in samples], plen)
        responses = torch.full((len(samples), rlen), self.pad_id, dtype=torch.long)
        response_attn = torch.zeros_like(responses)
        for b, s in enumerate(samples):
            responses[b, : len(s.response_ids)] = torch.tensor(s.response_ids, dtype=torch.long)
            response_attn[b, : len(s.response_ids)] = 1
        ids, attn = torch.cat([prompts, responses], 1), torch.cat([prompt_attn, response_attn], 1)
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        return _Batch(
            ids.to(dev), attn.to(dev), position_ids.to(dev), ids[:, plen:].to(dev),
            attn[:, plen:].float().to(dev), plen,
            [s.end_positions for s in samples], [s.scores for s in samples],
            [{k: v.to(dev) for k, v in s.vision.items()} for s in samples],
        )  # fmt: skip

    # -- forward passes -------------------------------------------------------------------

    @contextmanager
    def _adapter(self, name: str) -> Iterator[None]:
        self.model.set_adapter(name)
        try:
            yield
        finally:
            self.model.set_adapter(POLICY)

    def _run(self, batch: _Batch, *, hidden: bool = False) -> Any:
        images = batch.image_inputs()
        positions = model_positions(self.model, batch.input_ids, batch.attention_mask, images)  # Qwen-VL: 3-D
        return self.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            position_ids=batch.position_ids if positions is None else positions, output_hidden_states=hidden,
            use_cache=False, **images,
        )  # fmt: skip

    def _response_logits(self, batch: _Batch) -> torch.Tensor:
        """Logits that predict each response token: [B, R, V]."""
        return self._run(batch).logits[:, batch.prompt_len - 1 : -1]

    def _values(self, batch: _Batch) -> torch.Tensor:
        """The critic's value of each response position: [B, R]."""
        with self._adapter(CRITIC):
            states = self._run(batch, hidden=True).hidden_states[-1][:, batch.prompt_len - 1 : -1]
            return self.value_head(states.to(self.value_head.weight.dtype)).squeeze(-1)

    # -- PPO ------------------------------------------------------------------------------

    def step(self, batch_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """One PPO batch: rollout statistics under the current policy, then `ppo_epochs` passes."""
        cfg, started = self.config, time.perf_counter()
        samples = [s for s in map(self._encode, batch_rows) if s is not None]
        dropped = len(batch_rows) - len(samples)
        self.step_count += 1
        if not samples:
            return {"step": self.step_count, "rows": 0, "dropped": dropped}
        batch = self._collate(samples)
        mask = batch.mask
        self.model.eval()
        with torch.no_grad():
            old_logprobs = pm.logprobs_of(self._response_logits(batch), batch.response_ids)
            with self.model.disable_adapter():
                ref_logprobs = pm.logprobs_of(self._response_logits(batch), batch.response_ids)
            old_values = self._values(batch).float()
        score_reward = pm.score_rewards(batch.end_positions, batch.scores, mask, cfg.neutral_score,
                                        cfg.reward_placement)
        rewards, kl = pm.compute_rewards(old_logprobs, ref_logprobs, score_reward, mask, cfg.kl_coef)
        advantages, returns = pm.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = pm.whiten(advantages, mask)

        self.model.train()
        stats: dict[str, list[float]] = {k: [] for k in
                                         ("policy_loss", "value_loss", "clip_frac", "value_clip_frac", "entropy")}
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(samples)).split(cfg.mini_batch_size):
                self._update(batch.select(idx.to(self.device)), idx.to(self.device), old_logprobs,
                             old_values, advantages, returns, stats)
        all_scores = [s for row in batch.scores for s in row]
        metrics = {
            "step": self.step_count,
            "rows": len(samples),
            "dropped": dropped,
            "mean_score": sum(all_scores) / len(all_scores) if all_scores else float("nan"),
            "mean_reward": rewards.sum(-1).mean().item(),
            "mean_score_reward": score_reward.sum(-1).mean().item(),
            "kl": kl.sum(-1).mean().item(),
            "response_tokens": mask.sum(-1).mean().item(),
            **{k: sum(v) / len(v) for k, v in stats.items()},
            "time_s": time.perf_counter() - started,
        }
        return metrics

    def _update(self, mb: _Batch, idx: torch.Tensor, old_logprobs: torch.Tensor, old_values: torch.Tensor,
                advantages: torch.Tensor, returns: torch.Tensor, stats: dict[str, list[float]]) -> None:
        """One gradient step on a mini-batch: policy loss, then value loss, one optimiser step.

        Each loss is backpropagated while its own adapter is active (set_adapter also decides
        which LoRA weights require grad), so the two graphs never mix.
        """
        cfg, mask = self.config, mb.mask
        self.optimizer.zero_grad()
        logits = self._response_logits(mb)
        logprobs = pm.logprobs_of(logits, mb.response_ids)
        p_loss, clip_frac = pm.policy_loss(logprobs, old_logprobs[idx], advantages[idx], mask, cfg.clip_range)
        p_loss.backward()
        values = self._values(mb).float()
        v_loss, v_clip = pm.value_loss(values, old_values[idx], returns[idx], mask, cfg.value_clip_range)
        with self._adapter(CRITIC):
            (cfg.vf_coef * v_loss).backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            ent = pm.masked_mean(pm.entropy(logits.detach()), mask)
        for key, value in (("policy_loss", p_loss), ("value_loss", v_loss), ("clip_frac", clip_frac),
                           ("value_clip_frac", v_clip), ("entropy", ent)):
            stats[key].append(value.item())

    def train(self, rows: Iterable[Mapping[str, Any]], metrics_path: Path | None = None) -> list[dict]:
        """PPO over `rows` in batches of `batch_size`; rows whose scores do not match their
        sentences are dropped and counted in the next step's `dropped`."""
        metrics: list[dict] = []
        pending: list[Mapping[str, Any]] = []
        dropped = 0

        def flush() -> None:
            nonlocal dropped
            m = self.step(pending)
            m["dropped"] += dropped
            dropped = 0
            pending.clear()
            metrics.append(m)
            if metrics_path is not None:
                with open(metrics_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(m) + "\n")

        for row in rows:
            if not scores_match(row):
                dropped += 1
                continue
            pending.append(row)
            if len(pending) == self.config.batch_size:
                flush()
        if pending or dropped:
            flush()
        if not metrics or all(m["rows"] == 0 for m in metrics):
            raise TrainingError(f"no usable rows to train on ({sum(m['dropped'] for m in metrics)} dropped)")
        return metrics

    # -- online use and output --------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
        """Sample responses from the current policy (for an online generate -> score -> step loop)."""
        encoded = [self._prompt_ids(p) for p in prompts]
        plen = max(map(len, encoded))
        ids, attn = self._left_pad(encoded, plen)
        self.model.eval()
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=attn.to(self.device),
                                  max_new_tokens=max_new_tokens, pad_token_id=self.pad_id, **generate_kwargs)
        return self.tokenizer.batch_decode(out[:, plen:], skip_special_tokens=True)

    def save(self, output_dir: str | Path) -> Path:
        """Policy adapter at `output_dir/`, critic at `output_dir/critic/`, value head beside them."""
        out = Path(output_dir)
        self.model.save_pretrained(out)
        save_file(self.value_head.state_dict(), out / VALUE_HEAD_FILE)
        return out
