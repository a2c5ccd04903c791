"""The PPO arithmetic as small pure functions on tensors; the trainer only orchestrates them.

Every per-token tensor is [batch, response_len], aligned with the response tokens, with a 0/1
`mask` that is 1 on real tokens. Padding is on the right only, so a padded position never
lies between two real ones (GAE relies on this).
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch
from torch import Tensor

from .ppo_config import LossType, RewardPlacement, ScaleRewards


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _chunk_logprobs(hidden: Tensor, head: Tensor, labels: Tensor, inv_temperature: Tensor) -> Tensor:
    logits = torch.nn.functional.linear(hidden, head).float() * inv_temperature
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _chunk_logprobs_entropy(hidden: Tensor, head: Tensor, labels: Tensor,
                            inv_temperature: Tensor) -> tuple[Tensor, Tensor]:
    logits = torch.nn.functional.linear(hidden, head).float() * inv_temperature
    lse = torch.logsumexp(logits, dim=-1)
    ent = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse, ent


def token_logprobs(hidden: Tensor, head: Tensor, labels: Tensor, temperature: Tensor,
                   chunk: int, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """(log p(label), entropy or None) of each row of `hidden` [N, H] under softmax(hidden @ head.T / t).

    Logits exist for `chunk` rows at a time only; with gradients on, each chunk is recomputed in
    the backward pass (activation checkpointing), so no [N, V] float32 tensor is ever kept.
    `temperature` is one value per row [N]. The entropy is computed once, without gradient,
    and only `with_entropy` (a no-grad statistics pass): never recomputed in a backward pass.
    """
    from torch.utils.checkpoint import checkpoint

    inv = (1.0 / temperature.float()).unsqueeze(-1)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or head.requires_grad)
    picked, entropy = [], []
    for start in range(0, hidden.shape[0], chunk):
        part = (hidden[start:start + chunk], head, labels[start:start + chunk], inv[start:start + chunk])
        if with_entropy:
            with torch.no_grad():
                lp, ent = _chunk_logprobs_entropy(*part)
            picked.append(lp)
            entropy.append(ent)
        else:
            picked.append(checkpoint(_chunk_logprobs, *part, use_reentrant=False) if grad else _chunk_logprobs(*part))
    empty = hidden.new_zeros(0, dtype=torch.float32)
    return (torch.cat(picked) if picked else empty), ((torch.cat(entropy) if entropy else empty)
                                                      if with_entropy else None)


def probs_diff(logprobs: Tensor, behaviour: Tensor, mask: Tensor) -> Tensor:
    """|p - p_behaviour| per masked token, flattened (verl's `rollout_probs_diff`). Blind to
    errors on unlikely tokens: |0.002 - 0.001| is small; `logprob_diff` sees them."""
    return (logprobs.exp() - behaviour.exp()).abs()[mask.bool()]


def logprob_diff(logprobs: Tensor, behaviour: Tensor, mask: Tensor) -> Tensor:
    """|log p - log p_behaviour| per masked token, flattened: the agreement check in log space."""
    return (logprobs - behaviour).abs()[mask.bool()]


def sampled_kl(logprobs: Tensor, ref_logprobs: Tensor, behaviour: Tensor, mask: Tensor, sampled: Tensor) -> Tensor:
    """KL(p || p_ref) per token, estimated with `k3_kl` on tokens the sampler drew, each weighted
    by p / p_behaviour (self-normalised) where the sampler's log-prob is known (`sampled`), so
    it estimates the KL under the current policy's distribution, not the sampler's; >= 0."""
    weights = torch.where(sampled.bool(), torch.exp((logprobs - behaviour).clamp(max=10)), torch.ones_like(logprobs))
    weights = weights * mask
    return (weights * k3_kl(logprobs, ref_logprobs)).sum() / weights.sum().clamp(min=1e-8)


def score_rewards(
    end_positions: Sequence[Sequence[int]],
    scores: Sequence[Sequence[float]],
    mask: Tensor,
    neutral: float,
    placement: RewardPlacement = "sentence",
) -> Tensor:
    """The teacher's part of the reward, [B, T].

    `sentence`: `score_i - neutral` on the last token of sentence i (two sentences ending on
    the same token add up). `final`: one reward, `mean(scores) - neutral`, on the last real
    token: the sparse baseline the credit-assignment benchmark compares against.
    """
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    lengths = mask.sum(-1).long()
    for b, (positions, row_scores) in enumerate(zip(end_positions, scores)):
        if not row_scores:
            continue
        if placement == "final":
            out[b, lengths[b] - 1] += sum(row_scores) / len(row_scores) - neutral
        else:
            for pos, score in zip(positions, row_scores):
                out[b, pos] += score - neutral
    return out


def score_steps(end_positions: Sequence[Sequence[int]], mask: Tensor,
                placement: RewardPlacement = "sentence") -> Tensor:
    """Where `score_rewards` puts rewards, as a bool [B, T]: GRPO's steps, including those whose
    reward is exactly 0 (a score equal to the neutral one)."""
    out = torch.zeros(mask.shape, dtype=torch.bool, device=mask.device)
    lengths = mask.sum(-1).long()
    for b, positions in enumerate(end_positions):
        for pos in positions[-1:] if placement == "final" else positions:
            out[b, lengths[b] - 1 if placement == "final" else pos] = True
    return out


def compute_rewards(
    logprobs: Tensor, ref_logprobs: Tensor, score_reward: Tensor, mask: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor]:
    """Per-token reward `-kl_coef * (logp_old - logp_ref) + score_reward`; returns (rewards, kl)."""
    kl = (logprobs - ref_logprobs) * mask
    return (score_reward - kl_coef * kl) * mask, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float,
        last_values: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens; returns (advantages, returns).

    After a row's last real token the episode ends (value 0), unless `last_values` [B] gives the
    value to bootstrap from: a truncated response (cut at a length cap, no EOS) did not end.
    """
    rewards, values = rewards * mask, values * mask
    steps = rewards.shape[-1]
    lengths = mask.sum(-1).long()
    after = torch.zeros_like(rewards)  # the value of the state after each token, when it is the row's last
    if last_values is not None:
        rows = torch.arange(len(lengths), device=mask.device)[lengths > 0]
        after[rows, lengths[rows] - 1] = last_values[rows].to(after.dtype)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        next_value = next_value + after[:, t]  # values past the last real token are 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Scale to unit variance over the masked entries (population variance); centre if asked."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def behaviour_weights(logprobs: Tensor, behaviour: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Truncated importance weights `min(p / p_behaviour, cap)` per token, for samples drawn by an
    older policy (or another engine) than the one whose `logprobs` start the update; 1 where
    `mask` is 0 (no behaviour log-prob) and everywhere when `cap` is 0 (the correction off)."""
    if cap <= 0:
        return torch.ones_like(logprobs)
    weights = torch.exp(logprobs - behaviour).clamp(max=cap)
    return torch.where(mask.bool(), weights, torch.ones_like(weights))


def aggregate(x: Tensor, mask: Tensor, loss_type: LossType = "bnpo") -> Tensor:
    """A per-token loss as one number, TRL's GRPO names: `bnpo` is the mean over all masked tokens;
    `grpo` the mean over each row's tokens, then over the rows that have any."""
    if loss_type == "bnpo":
        return masked_mean(x, mask)
    per_row = (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return masked_mean(per_row, (mask.sum(-1) > 0).float())


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token `exp(r) - r - 1` with `r = log p_ref - log p` (Schulman's k3, verl's `low_var_kl`):
    an unbiased, non-negative estimate of KL(p || p_ref) for tokens drawn from p. Clamped to
    [-10, 10] in log space and value, as verl does, so one rare token cannot blow it up."""
    r = (ref_logprobs - logprobs).clamp(-10, 10)
    return (torch.exp(r) - r - 1).clamp(max=10)


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float,
    weights: Tensor | None = None, loss_type: LossType = "bnpo",
    kl: tuple[Tensor, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate loss, each token's term times its `weights` (`behaviour_weights`, no
    gradient) when given, aggregated by `loss_type`; `kl` = (reference log-probs, coefficient)
    adds `coef * k3_kl` per token, GRPO's KL term. Returns (loss, fraction of tokens where the
    clip was active)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    surrogate = torch.maximum(unclipped, clipped)
    per_token = surrogate if weights is None else weights * surrogate
    if kl is not None:
        per_token = per_token + kl[1] * k3_kl(logprobs, kl[0])
    return aggregate(per_token, mask, loss_type), masked_mean((clipped > unclipped).float(), mask)


def group_index(index: Sequence[Hashable] | Any, device: torch.device | None = None) -> Tensor:
    """Group labels (question ids, verl's `uid` array, any hashables) as 0..G-1 in first-seen order: [B] long."""
    seen: dict[Hashable, int] = {}
    return torch.tensor([seen.setdefault(g, len(seen)) for g in list(index)], dtype=torch.long, device=device)


def sentence_grpo_advantages(
    token_level_rewards: Tensor, response_mask: Tensor, index: Sequence[Hashable] | Any, epsilon: float = 1e-6,
    scale_rewards: ScaleRewards = "group", step_mask: Tensor | None = None, config: Any = None,
) -> tuple[Tensor, Tensor]:
    """GRPO with process supervision (DeepSeekMath section 4.1.3) for sentence rewards: (advantages, returns) [B, T].

    `token_level_rewards` [B, T] holds each step's (sentence's) reward at its last token, 0
    elsewhere; `index` [B] says which group (question) each row answers; `step_mask` [B, T] marks
    the step ends when a step's reward may be exactly 0 (default: the nonzero rewards). Each step
    reward is centred on the mean of all step rewards of its group (the group's k rollouts
    together, whatever their step counts) and divided by their std (`scale_rewards="group"`,
    unbiased, plus `epsilon`), by the std of every step reward in the batch (`"batch"`) or not at
    all (`"none"`); a token's advantage is the sum of the normalised rewards of its row's steps
    that end at or after it. With one step per row at its last token (an outcome reward) this is
    outcome GRPO, verl's `compute_grpo_outcome_advantage`.

    The signature is verl's advantage-estimator one (`register_adv_est` functions get
    `token_level_rewards`, `response_mask`, `index` = the batch's `uid`s, and `config`, which is
    not read here: pass options as keyword arguments). Returns advantages twice, as verl's GRPO does.
    """
    mask = response_mask.bool()
    steps = (token_level_rewards != 0 if step_mask is None else step_mask.bool()) & mask
    rewards = token_level_rewards.float()
    groups = group_index(index, rewards.device)
    normalised = torch.zeros_like(rewards)
    everything = rewards[steps]
    batch_std = everything.std() if everything.numel() > 1 else everything.new_zeros(())
    for g in groups.unique():
        in_group = steps & (groups == g)[:, None]
        values = rewards[in_group]
        if not values.numel():
            continue
        centred = values - values.mean()
        if scale_rewards == "group":
            centred = centred / ((values.std() if values.numel() > 1 else values.new_zeros(())) + epsilon)
        elif scale_rewards == "batch":
            centred = centred / (batch_std + epsilon)
        normalised[in_group] = centred
    advantages = normalised.flip(-1).cumsum(-1).flip(-1) * response_mask
    return advantages, advantages


def rloo_advantages(
    token_level_rewards: Tensor, response_mask: Tensor, index: Sequence[Hashable] | Any, config: Any = None,
) -> tuple[Tensor, Tensor]:
    """RLOO (Ahmadian et al. 2024): each row's outcome (the sum of its token rewards) minus the
    mean outcome of the other rows of its group, on every response token; verl's estimator
    signature, as `sentence_grpo_advantages`. A row alone in its group keeps its raw outcome."""
    outcome = (token_level_rewards.float() * response_mask).sum(-1)
    groups = group_index(index, outcome.device)
    count = torch.zeros(int(groups.max()) + 1 if groups.numel() else 0, device=outcome.device)
    total = torch.zeros_like(count)
    count.index_add_(0, groups, torch.ones_like(outcome))
    total.index_add_(0, groups, outcome)
    n = count[groups]
    others = torch.where(n > 1, (total[groups] - outcome) / (n - 1).clamp(min=1), torch.zeros_like(outcome))
    advantages = (outcome - others)[:, None] * response_mask
    return advantages, advantages


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss `0.5 * max((v - R)^2, (v_clip - R)^2)`; returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    return loss, masked_mean((clipped_err > unclipped_err).float(), mask)
