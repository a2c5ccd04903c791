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

With `advantage=grpo|rloo` there is no critic adapter and no value head: a question's k
rollouts, trained in one batch (`ppo_batches.batches`), are each other's baseline.

Sequences are laid out with prompts padded on the left and responses on the right
(`ppo_batches.RowEncoder`), so every response starts at the same column and the hidden states
that predict it are one slice. `save(dir)` writes the policy adapter at `dir/`, the critic
adapter at `dir/critic/` and the value head at `dir/value_head.safetensors`; `critic_from=dir`
starts the next round's critic from them.

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
them, |p - p_behaviour| per token) and `rollout_logprob_diff_max`/`_mean` (|log p - log
p_behaviour|, which also sees errors on unlikely tokens) say how far the trainer's forward is
from the sampler's. `kl_k3` estimates KL(policy || reference) per token (verl's `low_var_kl`),
weighted by p_policy / p_sampler so that it is the current policy's KL; `kl` is the summed
log-ratio on the sampled tokens, which can be negative.

A round's rollouts are all sampled before its first update, so by a later batch the policy has
moved away from the sampler: each token's policy loss is weighted by `min(p_old / p_behaviour,
behaviour_is_cap)` (decoupled PPO with truncated importance sampling, as verl's `rollout_is`);
`behaviour_weight_mean`/`_capped` report the weights, `stale_updates` the policy updates since
the batch's rows were sampled (a row's `sampled_at`, 0 for a round sampled before the run), and
a capped share above `max_capped_share` is logged or stops the run (`on_stale`).

Memory: log-probs come from the last hidden states through the LM head a chunk of tokens at a
time (`ppo_math.token_logprobs`), never as float32 [B, T, V]; the critic reads hidden states
only and computes no LM-head logits.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from ares_data.errors import TrainingError

from . import ppo_math as pm
from .ppo_batches import Batch, RowEncoder, batches, check_groups, group_of
from .ppo_config import PPOConfig
from .rollout_engines import HFEngine, Sampled
from .vision import is_processor, lora_targets, model_positions, text_tokenizer

POLICY, CRITIC = "default", "critic"
log = logging.getLogger(__name__)
VALUE_HEAD_FILE = "value_head.safetensors"


DROPOUT_ATTRIBUTES = ("attention_dropout", "dropout", "dropout_p", "attn_dropout")  # functional dropout rates


def disable_dropout(model: Any) -> None:
    """Every dropout off, as TRL's PPO does: each `nn.Dropout`'s p and each module's own copy of a
    functional dropout rate (attention layers copy `config.attention_dropout` when built, so the
    config alone is not enough). The policy's forward is then the same function in the update
    as when old log-probs are taken."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    for config in (model.config, model.config.get_text_config()):
        if hasattr(config, "attention_dropout"):
            config.attention_dropout = 0.0


def value_head(hidden_size: int) -> torch.nn.Linear:
    """`Linear(hidden, 1)` that starts near zero: weights N(0, 1/(hidden+1)) and bias 0, as
    OpenRLHF's value head, so a fresh critic's values are small, not noise as large as the
    rewards (`nn.Linear`'s default gave std ~1 against rewards of +-0.5). Not exactly zero: a
    zero head would pass no gradient to the critic adapter in the first update."""
    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.normal_(head.weight, std=1 / (hidden_size + 1))
    torch.nn.init.zeros_(head.bias)
    return head


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
        checkpointing = config.gradient_checkpointing
        self.gradient_checkpointing = next(model.parameters()).device.type == "cuda" if checkpointing is None \
            else checkpointing
        if self.gradient_checkpointing:  # renamed `activation_checkpointing_*` in transformers 5.11
            enable = getattr(model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = get_peft_model(model, lora, adapter_name=POLICY)
        self.device = next(model.parameters()).device
        self.value_head: torch.nn.Linear | None = None
        if config.critic_free and critic_from is not None:
            raise TrainingError(f"advantage={config.advantage} has no critic: nothing to start from {critic_from}")
        if not config.critic_free:
            self.value_head = value_head(model.config.get_text_config().hidden_size).to(self.device)
            if critic_from is None:
                self.model.add_adapter(CRITIC, lora)
            else:
                self._load_critic(Path(critic_from))
        self.critic_from = None if critic_from is None else str(critic_from)
        self.model.set_adapter(POLICY)
        disable_dropout(self.model)
        self.policy_params = [p for n, p in self.model.named_parameters() if "lora_" in n and f".{POLICY}." in n]
        self.critic_params = [p for n, p in self.model.named_parameters() if "lora_" in n and f".{CRITIC}." in n]
        self.critic_params += list(self.value_head.parameters()) if self.value_head is not None else []
        self.optimizer = torch.optim.AdamW(self.policy_params + self.critic_params, lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.encoder = RowEncoder(config, tokenizer, self.device)
        self.step_count = 0
        self.policy_updates = 0  # optimiser steps that moved the policy; a row's `sampled_at` is this count then
        self.stopped_stale: int | None = None  # the step whose staleness stopped training (on_stale=stop)
        self.agreement: dict[str, list[torch.Tensor]] = {"probs": [], "logprob": []}  # per token with both

    def _load_critic(self, directory: Path) -> None:
        """The critic adapter and value head an earlier PPO run saved (`save`)."""
        adapter, head = directory / CRITIC, directory / VALUE_HEAD_FILE
        if not (adapter / "adapter_config.json").is_file() or not head.is_file():
            raise TrainingError(f"no critic to carry over in {directory} (needs {CRITIC}/ and {VALUE_HEAD_FILE})")
        self.model.load_adapter(str(adapter), adapter_name=CRITIC, is_trainable=True)
        assert self.value_head is not None
        self.value_head.load_state_dict(load_file(head, device=str(self.device)))

    # -- forward passes -------------------------------------------------------------------

    @contextmanager
    def _adapter(self, name: str) -> Iterator[None]:
        self.model.set_adapter(name)
        try:
            yield
        finally:
            self.model.set_adapter(POLICY)

    def _model_inputs(self, batch: Batch) -> dict[str, Any]:
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

    def _hidden(self, batch: Batch) -> torch.Tensor:
        """Last hidden states from the position before the first response token on: [B, R + 1, H].
        The model body only: no LM-head logits."""
        lm = self.model.get_base_model()
        body = getattr(lm, lm.base_model_prefix)
        return body(**self._model_inputs(batch)).last_hidden_state[:, batch.prompt_len - 1 :]

    def _logprobs(self, batch: Batch, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log-prob, entropy when asked) of each real response token under the active adapter: [B, R] each."""
        states = self._hidden(batch)[:, :-1]
        real = batch.mask.bool()
        temperature = batch.temperature[:, None].expand_as(batch.mask)[real]
        base: Any = self.model.get_base_model()  # typed as a bare Module
        head = base.get_output_embeddings().weight
        picked, ent = pm.token_logprobs(states[real], head, batch.response_ids[real], temperature,
                                        self.config.logits_chunk_tokens, with_entropy)
        logprobs = torch.zeros(batch.mask.shape, dtype=torch.float32, device=self.device)
        entropy = None if ent is None else torch.zeros_like(logprobs).masked_scatter(real, ent)
        return logprobs.masked_scatter(real, picked), entropy

    def _values(self, batch: Batch) -> torch.Tensor:
        """The critic's value of the state before each response token, and after the last
        position: [B, R + 1] (row b's bootstrap value sits at its length)."""
        assert self.value_head is not None
        with self._adapter(CRITIC):
            states = self._hidden(batch)
            return self.value_head(states.to(self.value_head.weight.dtype)).squeeze(-1)

    # -- PPO ------------------------------------------------------------------------------

    def step(self, batch_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """One PPO batch: rollout statistics under the current policy, then `ppo_epochs` passes.
        With grpo/rloo the batch must hold whole groups of k >= 2 rollouts (`ppo_batches`)."""
        cfg, started = self.config, time.perf_counter()
        encoded = [(self.encoder.encode(row), group_of(row)) for row in batch_rows]
        samples = [s for s, _ in encoded if s is not None]
        groups = [g for s, g in encoded if s is not None]
        dropped = len(batch_rows) - len(samples)
        self.step_count += 1
        stale_updates = self.policy_updates - min(int(row.get("sampled_at") or 0) for row in batch_rows) \
            if batch_rows else 0
        if not samples:
            return {"step": self.step_count, "rows": 0, "dropped": dropped}
        if cfg.critic_free:
            check_groups(groups, cfg.advantage)
        batch = self.encoder.collate(samples)
        mask = batch.mask
        self.model.eval()
        with torch.no_grad():
            old_logprobs, entropy = self._logprobs(batch, with_entropy=True)
            with self.model.disable_adapter():
                ref_logprobs, _ = self._logprobs(batch)
        sampled = mask * batch.has_behaviour[:, None]
        diff = pm.probs_diff(ref_logprobs, batch.behaviour, sampled)
        log_diff = pm.logprob_diff(ref_logprobs, batch.behaviour, sampled)
        self.agreement["probs"].append(diff.cpu())
        self.agreement["logprob"].append(log_diff.cpu())
        weights = pm.behaviour_weights(old_logprobs, batch.behaviour, sampled, cfg.behaviour_is_cap)
        score_reward = pm.score_rewards(batch.end_positions, batch.scores, mask, cfg.neutral_score,
                                        cfg.reward_placement)
        rewards, kl = pm.compute_rewards(old_logprobs, ref_logprobs, score_reward, mask, cfg.kl_coef)
        if cfg.critic_free:
            rewards, old_values, returns = score_reward, None, None
            advantages = self._group_advantages(batch, score_reward, groups)
        else:
            old_values, advantages, returns = self._gae(batch, rewards)

        self.model.train()
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "clip_frac", "policy_grad_norm")}
        if not cfg.critic_free:
            stats.update(value_loss=[], value_clip_frac=[], critic_grad_norm=[])
        stats["first_ratio_deviation"] = []  # max |ratio - 1| on the batch's first mini-batch: 0 before any update
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(samples)).split(cfg.mini_batch_size):
                idx = idx.to(self.device)
                self._update(batch.select(idx), old_logprobs[idx], ref_logprobs[idx], advantages[idx], weights[idx],
                             None if old_values is None else (old_values[idx], returns[idx]), stats)
        all_scores = [s for row in batch.scores for s in row]
        assert entropy is not None
        metrics = {
            "step": self.step_count,
            "rows": len(samples),
            "dropped": dropped,
            "truncated": int(batch.truncated.sum().item()),
            "mean_score": sum(all_scores) / len(all_scores) if all_scores else float("nan"),
            "mean_reward": rewards.sum(-1).mean().item(),
            "mean_score_reward": score_reward.sum(-1).mean().item(),
            "kl": kl.sum(-1).mean().item(),
            "kl_k3": pm.sampled_kl(old_logprobs, ref_logprobs, batch.behaviour, mask, sampled).item(),
            "response_tokens": mask.sum(-1).mean().item(),
            "entropy": pm.masked_mean(entropy, mask).item(),
            **{k: sum(v) / len(v) for k, v in stats.items()},
            **({"rollout_probs_diff_max": diff.max().item(), "rollout_probs_diff_mean": diff.mean().item(),
                "rollout_logprob_diff_max": log_diff.max().item(), "rollout_logprob_diff_mean": log_diff.mean().item(),
                "behaviour_weight_mean": weights[sampled.bool()].mean().item(),
                "behaviour_weight_capped": (weights[sampled.bool()] == cfg.behaviour_is_cap).float().mean().item()}
               if diff.numel() else {}),
            "stale_updates": stale_updates,
            "time_s": time.perf_counter() - started,
        }
        self._check_staleness(metrics)
        return metrics

    def _check_staleness(self, metrics: dict[str, Any]) -> None:
        """Past `max_capped_share`: log it (`warn`) or end training after this batch (`stop`)."""
        cfg, share = self.config, metrics.get("behaviour_weight_capped", 0.0)
        if not cfg.behaviour_is_cap or share <= cfg.max_capped_share:
            return
        metrics["stale"] = True
        what = (f"PPO step {metrics['step']}: {share:.0%} of its tokens hit behaviour_is_cap (max_capped_share "
                f"{cfg.max_capped_share:.0%}), {metrics['stale_updates']} policy updates after they were sampled")
        if cfg.on_stale == "stop":
            self.stopped_stale = metrics["step"]
            log.warning("%s: stopping (on_stale=stop)", what)
        else:
            log.warning("%s: fewer questions per round or ppo_epochs=1 keep a round on-policy", what)

    def _gae(self, batch: Batch, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(old values, advantages, returns) from the critic: GAE, bootstrapped on truncated rows."""
        cfg, mask = self.config, batch.mask
        with torch.no_grad():
            all_values = self._values(batch).float()
        old_values = all_values[:, :-1] * mask
        lengths = mask.sum(-1).long()
        bootstrap = all_values.gather(1, lengths[:, None]).squeeze(1) * batch.truncated
        advantages, returns = pm.gae(rewards, old_values, mask, cfg.gamma, cfg.lam, bootstrap)
        if cfg.whiten_advantages:
            advantages = pm.whiten(advantages, mask)
        return old_values, advantages, returns

    def _group_advantages(self, batch: Batch, score_reward: torch.Tensor, groups: list[Any]) -> torch.Tensor:
        """grpo/rloo: each row against the other rollouts of its question, no critic."""
        cfg = self.config
        if cfg.advantage == "rloo":
            return pm.rloo_advantages(score_reward, batch.mask, groups)[0]
        steps = pm.score_steps(batch.end_positions, batch.mask, cfg.reward_placement)
        return pm.sentence_grpo_advantages(score_reward, batch.mask, groups, scale_rewards=cfg.scale_rewards,
                                           step_mask=steps)[0]

    def _update(self, mb: Batch, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, advantages: torch.Tensor,
                weights: torch.Tensor, critic: tuple[torch.Tensor, torch.Tensor] | None,
                stats: dict[str, list[float]]) -> None:
        """One gradient step on a mini-batch: policy loss, then (gae) value loss, one optimiser step.

        Each loss is backpropagated while its own adapter is active (set_adapter also decides
        which LoRA weights require grad), so the two graphs never mix; each side's gradient is
        clipped on its own, so a large critic gradient cannot shrink the policy's step. During
        the critic's warm-up the policy loss is measured but not applied. grpo/rloo add the k3
        KL to the reference to the loss (`kl` = its coefficient); gae has it in the reward.
        """
        cfg, mask = self.config, mb.mask
        self.optimizer.zero_grad()
        logprobs, _ = self._logprobs(mb)
        p_loss, clip_frac = pm.policy_loss(logprobs, old_logprobs, advantages, mask, cfg.clip_range, weights,
                                           cfg.loss_type, (ref_logprobs, cfg.kl_coef) if cfg.critic_free else None)
        if not stats["first_ratio_deviation"]:
            ratio = torch.exp(logprobs.detach() - old_logprobs)
            stats["first_ratio_deviation"].append((ratio - 1).abs()[mask.bool()].max().item())
        if self.step_count > cfg.critic_warmup_steps:
            p_loss.backward()
            self.policy_updates += 1
        stats["policy_grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(self.policy_params, cfg.max_grad_norm)))
        stats["policy_loss"].append(p_loss.item())
        stats["clip_frac"].append(clip_frac.item())
        if critic is not None:
            old_values, returns = critic
            values = self._values(mb)[:, :-1].float()
            v_loss, v_clip = pm.value_loss(values, old_values, returns, mask, cfg.value_clip_range)
            with self._adapter(CRITIC):
                (cfg.vf_coef * v_loss).backward()
            norm = torch.nn.utils.clip_grad_norm_(self.critic_params, cfg.max_grad_norm)
            stats["critic_grad_norm"].append(float(norm))
            stats["value_loss"].append(v_loss.item())
            stats["value_clip_frac"].append(v_clip.item())
        self.optimizer.step()

    def rollout_probs_diff(self) -> dict[str, float]:
        """`rollout_probs_diff_max`/`_mean` (|Δp|) and `rollout_logprob_diff_max`/`_mean` (|Δ log p|)
        over every token trained so far that has behaviour log-probs."""
        out = {}
        for name, parts in self.agreement.items():
            diffs = torch.cat(parts) if parts else torch.zeros(0)
            if diffs.numel():
                out |= {f"rollout_{name}_diff_max": diffs.max().item(),
                        f"rollout_{name}_diff_mean": diffs.mean().item()}
        return out

    def train(self, rows: Iterable[Mapping[str, Any]], metrics_path: Path | None = None,
              on_step: Callable[[dict], None] | None = None) -> list[dict]:
        """PPO over `rows` in batches (`ppo_batches.batches`: of `batch_size`, or of whole
        questions for grpo/rloo); rows whose scores do not match their sentences are dropped and
        counted in the next step's `dropped`. `on_step` gets each step's metrics as soon as they
        exist (the progress bar, `--report-to`)."""
        metrics: list[dict] = []
        for batch_rows, dropped in batches(rows, self.config.batch_size, self.config.advantage):
            if self.stopped_stale is not None:
                break
            m = self.step(batch_rows)
            m["dropped"] += dropped
            metrics.append(m)
            if metrics_path is not None:
                with open(metrics_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(m) + "\n")
            if on_step is not None:
                on_step(m)
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
        """Policy adapter at `output_dir/`; with a critic (gae), its adapter at `output_dir/critic/`
        and the value head beside them."""
        out = Path(output_dir)
        self.model.save_pretrained(out)
        if self.value_head is not None:
            save_file(self.value_head.state_dict(), out / VALUE_HEAD_FILE)
        return out
