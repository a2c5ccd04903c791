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
response starts at the same column and the hidden states that predict it are one slice.
`save(dir)` writes the policy adapter at `dir/`, the critic adapter at `dir/critic/` and the
value head at `dir/value_head.safetensors`; `critic_from=dir` starts the next round's critic
from them.

What a row trains on: its `token_ids` exactly as sampled (`rollout_engines.py`), with their
behaviour `logprobs`, `finish_reason` and sampling `temperature`. A `length`-finished row has no
EOS: it is truncated, not ended, so GAE bootstraps from the critic's value of the state after
its last token (so does a row cut at `max_length`). A row without token ids (a rollout stored
before they were kept, or a caller's text) is re-tokenised from its text, EOS appended when
`append_eos`: the documented fallback.

The ratio starts at 1: every dropout is off (as in TRL's PPO), the prompt is tokenised as the
sampler tokenised it (`vision.encode`), and log-probs are taken at the rollout's temperature.
Before any update the policy is the reference (LoRA B starts at zero), so each batch's reference
pass is compared with the behaviour log-probs: `rollout_probs_diff_max`/`_mean` (as verl names
them, |p - p_behaviour| per token) say how far the trainer's forward is from the sampler's.

A round's rollouts are all sampled before its first update, so by a later batch the policy has
moved away from the sampler: each token's policy loss is weighted by `min(p_old / p_behaviour,
behaviour_is_cap)` (decoupled PPO with truncated importance sampling, as verl's `rollout_is`);
`behaviour_weight_mean`/`_capped` report the weights.

Memory: log-probs come from the last hidden states through the LM head a chunk of tokens at a
time (`ppo_math.token_logprobs`), never as float32 [B, T, V]; the critic reads hidden states
only and computes no LM-head logits.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from ares_data.errors import TrainingError

from . import ppo_math as pm
from .ppo_config import PPOConfig
from .rollout_engines import LENGTH, HFEngine, Sampled
from .sentence_tokens import sentence_ends_on_ids, tokenize_with_sentence_ends
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
    behaviour: list[float] | None  # the sampler's log-prob of each response token, when stored
    truncated: bool  # no EOS: cut at the sampler's length cap or at max_length
    temperature: float


@dataclass
class _Batch:
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

    def select(self, idx: torch.Tensor) -> "_Batch":
        rows = idx.tolist()
        return _Batch(
            self.input_ids[idx], self.attention_mask[idx], self.response_ids[idx], self.mask[idx], self.prompt_len,
            [self.end_positions[i] for i in rows], [self.scores[i] for i in rows], [self.vision[i] for i in rows],
            self.behaviour[idx], self.has_behaviour[idx], self.truncated[idx], self.temperature[idx],
        )  # fmt: skip

    def image_inputs(self) -> dict[str, torch.Tensor]:
        """The rows' image tensors, concatenated in row order (as their image tokens appear)."""
        return concat_images(self.vision)


def scores_match(row: Mapping[str, Any]) -> bool:
    """A row is usable only when it has one score per sentence."""
    return len(row["scores"]) == len(row["sentence_ends"])


def disable_dropout(model: Any) -> None:
    """Every dropout off (modules and the attention's functional dropout), as TRL's PPO does:
    the policy's forward is then the same function in the update as when old log-probs are taken."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for config in (model.config, model.config.get_text_config()):
        if hasattr(config, "attention_dropout"):
            config.attention_dropout = 0.0


class SentenceRewardPPOTrainer:
    def __init__(self, config: PPOConfig, model: Any, tokenizer: Any, critic_from: str | Path | None = None):
        """`tokenizer` is a VLM's processor when the student is one; rows may then carry an `image`.
        `critic_from`: an RL output dir whose critic adapter and value head start this critic."""
        torch.manual_seed(config.seed)
        self.processor = tokenizer if is_processor(tokenizer) else None
        self.processing = tokenizer
        self.config, self.tokenizer = config, text_tokenizer(tokenizer)
        lora = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=lora_targets(model, config.lora_target_modules, config.lora_vision), task_type="CAUSAL_LM",
        )  # fmt: skip
        if config.gradient_checkpointing:  # renamed `activation_checkpointing_*` in transformers 5.11
            enable = getattr(model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = get_peft_model(model, lora, adapter_name=POLICY)
        self.device = next(model.parameters()).device
        self.value_head = torch.nn.Linear(model.config.get_text_config().hidden_size, 1).to(self.device)
        if critic_from is None:
            self.model.add_adapter(CRITIC, lora)
        else:
            self._load_critic(Path(critic_from))
        self.critic_from = None if critic_from is None else str(critic_from)
        self.model.set_adapter(POLICY)
        disable_dropout(self.model)
        self.params = [p for n, p in self.model.named_parameters() if "lora_" in n]
        self.params += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.step_count = 0
        self.probs_diff: list[torch.Tensor] = []  # |p - p_behaviour| of every token that has both

    def _load_critic(self, directory: Path) -> None:
        """The critic adapter and value head an earlier PPO run saved (`save`)."""
        adapter, head = directory / CRITIC, directory / VALUE_HEAD_FILE
        if not (adapter / "adapter_config.json").is_file() or not head.is_file():
            raise TrainingError(f"no critic to carry over in {directory} (needs {CRITIC}/ and {VALUE_HEAD_FILE})")
        self.model.load_adapter(str(adapter), adapter_name=CRITIC, is_trainable=True)
        self.value_head.load_state_dict(load_file(head, device=str(self.device)))

    # -- data -----------------------------------------------------------------------------

    def _prompt_inputs(self, prompt: str, image: Any) -> tuple[list[int], dict[str, torch.Tensor]]:
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

    def _encode(self, row: Mapping[str, Any]) -> _Sample | None:
        """Token ids and sentence-end token positions; None when the row cannot be used."""
        if not scores_match(row):
            return None
        prompt_ids, vision = self._prompt_inputs(row["prompt"], row.get("image"))
        try:
            response_ids, ends, behaviour, truncated = self._response(row)
        except ValueError:
            return None
        budget = self.config.max_length - len(prompt_ids)
        if budget < 1 or not response_ids:
            return None
        kept = [(e, float(s)) for e, s in zip(ends, row["scores"]) if e < budget]
        return _Sample(prompt_ids, response_ids[:budget], [e for e, _ in kept], [s for _, s in kept], vision,
                       None if behaviour is None else [float(x) for x in behaviour[:budget]],
                       truncated or len(response_ids) > budget, float(row.get("temperature") or 1.0))

    def _collate(self, samples: Sequence[_Sample]) -> _Batch:
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
        return _Batch(
            ids.to(dev), attn.to(dev), responses.to(dev), response_attn.float().to(dev), plen,
            [s.end_positions for s in samples], [s.scores for s in samples],
            [{k: v.to(dev) for k, v in s.vision.items()} for s in samples], behaviour.to(dev),
            torch.tensor([s.behaviour is not None for s in samples], device=dev),
            torch.tensor([s.truncated for s in samples], device=dev),
            torch.tensor([s.temperature for s in samples], dtype=torch.float32, device=dev),
        )  # fmt: skip

    # -- forward passes -------------------------------------------------------------------

    @contextmanager
    def _adapter(self, name: str) -> Iterator[None]:
        self.model.set_adapter(name)
        try:
            yield
        finally:
            self.model.set_adapter(POLICY)

    def _model_inputs(self, batch: _Batch) -> dict[str, Any]:
        """The keyword arguments of the student's forward: built here only. Positions are the
        model's own: the Qwen-VL family's 3-D M-RoPE ones from its `get_rope_index`
        (`vision.model_positions`), else a count of attended tokens that skips the left padding,
        as `generate` gives them."""
        images = batch.image_inputs()
        positions = model_positions(self.model, batch.input_ids, batch.attention_mask, images)
        if positions is None:
            positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": positions,
                "use_cache": False, **images}

    def _hidden(self, batch: _Batch) -> torch.Tensor:
        """Last hidden states from the position before the first response token on: [B, R + 1, H].
        The model body only: no LM-head logits."""
        lm = self.model.get_base_model()
        body = getattr(lm, lm.base_model_prefix)
        return body(**self._model_inputs(batch)).last_hidden_state[:, batch.prompt_len - 1 :]

    def _logprobs(self, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob, entropy) of each real response token under the active adapter: [B, R] each."""
        states = self._hidden(batch)[:, :-1]
        real = batch.mask.bool()
        temperature = batch.temperature[:, None].expand_as(batch.mask)[real]
        base: Any = self.model.get_base_model()  # typed as a bare Module
        head = base.get_output_embeddings().weight
        picked, ent = pm.token_logprobs(states[real], head, batch.response_ids[real], temperature,
                                        self.config.logits_chunk_tokens)
        logprobs = torch.zeros(batch.mask.shape, dtype=torch.float32, device=self.device)
        entropy = torch.zeros_like(logprobs)
        return logprobs.masked_scatter(real, picked), entropy.masked_scatter(real, ent)

    def _values(self, batch: _Batch) -> torch.Tensor:
        """The critic's value of the state before each response token, and after the last
        position: [B, R + 1] (row b's bootstrap value sits at its length)."""
        with self._adapter(CRITIC):
            states = self._hidden(batch)
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
            old_logprobs, entropy = self._logprobs(batch)
            with self.model.disable_adapter():
                ref_logprobs, _ = self._logprobs(batch)
            all_values = self._values(batch).float()
        old_values = all_values[:, :-1] * mask
        lengths = mask.sum(-1).long()
        bootstrap = all_values.gather(1, lengths[:, None]).squeeze(1) * batch.truncated
        sampled = mask * batch.has_behaviour[:, None]
        diff = pm.probs_diff(ref_logprobs, batch.behaviour, sampled)
        self.probs_diff.append(diff.cpu())
        weights = pm.behaviour_weights(old_logprobs, batch.behaviour, sampled, cfg.behaviour_is_cap)
        score_reward = pm.score_rewards(batch.end_positions, batch.scores, mask, cfg.neutral_score,
                                        cfg.reward_placement)
        rewards, kl = pm.compute_rewards(old_logprobs, ref_logprobs, score_reward, mask, cfg.kl_coef)
        advantages, returns = pm.gae(rewards, old_values, mask, cfg.gamma, cfg.lam, bootstrap)
        if cfg.whiten_advantages:
            advantages = pm.whiten(advantages, mask)

        self.model.train()
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clip_frac", "value_clip_frac")}
        stats["first_ratio_deviation"] = []  # max |ratio - 1| on the batch's first mini-batch: 0 before any update
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(samples)).split(cfg.mini_batch_size):
                self._update(batch.select(idx.to(self.device)), idx.to(self.device), old_logprobs,
                             old_values, advantages, returns, weights, stats)
        all_scores = [s for row in batch.scores for s in row]
        metrics = {
            "step": self.step_count,
            "rows": len(samples),
            "dropped": dropped,
            "truncated": int(batch.truncated.sum().item()),
            "mean_score": sum(all_scores) / len(all_scores) if all_scores else float("nan"),
            "mean_reward": rewards.sum(-1).mean().item(),
            "mean_score_reward": score_reward.sum(-1).mean().item(),
            "kl": kl.sum(-1).mean().item(),
            "response_tokens": mask.sum(-1).mean().item(),
            "entropy": pm.masked_mean(entropy, mask).item(),
            **{k: sum(v) / len(v) for k, v in stats.items()},
            **({"rollout_probs_diff_max": diff.max().item(), "rollout_probs_diff_mean": diff.mean().item(),
                "behaviour_weight_mean": weights[sampled.bool()].mean().item(),
                "behaviour_weight_capped": (weights[sampled.bool()] == cfg.behaviour_is_cap).float().mean().item()}
               if diff.numel() else {}),
            "time_s": time.perf_counter() - started,
        }
        return metrics

    def _update(self, mb: _Batch, idx: torch.Tensor, old_logprobs: torch.Tensor, old_values: torch.Tensor,
                advantages: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor,
                stats: dict[str, list[float]]) -> None:
        """One gradient step on a mini-batch: policy loss, then value loss, one optimiser step.

        Each loss is backpropagated while its own adapter is active (set_adapter also decides
        which LoRA weights require grad), so the two graphs never mix. During the critic's
        warm-up the policy loss is measured but not applied.
        """
        cfg, mask = self.config, mb.mask
        self.optimizer.zero_grad()
        logprobs, _ = self._logprobs(mb)
        p_loss, clip_frac = pm.policy_loss(logprobs, old_logprobs[idx], advantages[idx], mask, cfg.clip_range,
                                           weights[idx])
        if not stats["first_ratio_deviation"]:
            ratio = torch.exp(logprobs.detach() - old_logprobs[idx])
            stats["first_ratio_deviation"].append((ratio - 1).abs()[mask.bool()].max().item())
        if self.step_count > cfg.critic_warmup_steps:
            p_loss.backward()
        values = self._values(mb)[:, :-1].float()
        v_loss, v_clip = pm.value_loss(values, old_values[idx], returns[idx], mask, cfg.value_clip_range)
        with self._adapter(CRITIC):
            (cfg.vf_coef * v_loss).backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        for key, value in (("policy_loss", p_loss), ("value_loss", v_loss), ("clip_frac", clip_frac),
                           ("value_clip_frac", v_clip)):
            stats[key].append(value.item())

    def rollout_probs_diff(self) -> dict[str, float]:
        """`rollout_probs_diff_max`/`_mean` over every token trained so far that has behaviour log-probs."""
        diffs = torch.cat(self.probs_diff) if self.probs_diff else torch.zeros(0)
        if not diffs.numel():
            return {}
        return {"rollout_probs_diff_max": diffs.max().item(), "rollout_probs_diff_mean": diffs.mean().item()}

    def train(self, rows: Iterable[Mapping[str, Any]], metrics_path: Path | None = None,
              on_step: Callable[[dict], None] | None = None) -> list[dict]:
        """PPO over `rows` in batches of `batch_size`; rows whose scores do not match their
        sentences are dropped and counted in the next step's `dropped`. `on_step` gets each
        step's metrics as soon as they exist (the progress bar, `--report-to`)."""
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
            if on_step is not None:
                on_step(m)

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

    def generate(self, prompts: Sequence[str], max_new_tokens: int, images: Sequence[Any] | None = None,
                 **sampling: Any) -> list[Sampled]:
        """Sample one response per prompt from the current policy (for an online generate ->
        score -> step loop), with the ids and log-probs `step` trains on. A VLM student sees each
        prompt's image (None: text only); `step` then takes it as the row's `image`."""
        rows = HFEngine(self.model, self.processing).sample(prompts, list(images or [None] * len(prompts)), n=1,
                                                           max_new_tokens=max_new_tokens, **sampling)
        return [row[0] for row in rows]

    def save(self, output_dir: str | Path) -> Path:
        """Policy adapter at `output_dir/`, critic at `output_dir/critic/`, value head beside them."""
        out = Path(output_dir)
        self.model.save_pretrained(out)
        save_file(self.value_head.state_dict(), out / VALUE_HEAD_FILE)
        return out
