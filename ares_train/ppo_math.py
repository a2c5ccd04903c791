"""The PPO arithmetic as small pure functions on tensors; the trainer only orchestrates them.

Every per-token tensor is [batch, response_len], aligned with the response tokens, with a 0/1
`mask` that is 1 on real tokens. Padding is on the right only, so a padded position never
lies between two real ones (GAE relies on this).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .ppo_config import RewardPlacement


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _chunk_logprobs(hidden: Tensor, head: Tensor, labels: Tensor, inv_temperature: Tensor) -> tuple[Tensor, Tensor]:
    logits = torch.nn.functional.linear(hidden, head).float() * inv_temperature
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        ent = lse - (probs * logits).sum(-1)
    return picked, ent


def token_logprobs(hidden: Tensor, head: Tensor, labels: Tensor, temperature: Tensor,
                   chunk: int) -> tuple[Tensor, Tensor]:
    """(log p(label), entropy) of each row of `hidden` [N, H] under softmax(hidden @ head.T / t).

    Logits exist for `chunk` rows at a time only; with gradients on, each chunk is recomputed in
    the backward pass (activation checkpointing), so no [N, V] float32 tensor is ever kept.
    `temperature` is one value per row [N]; the entropy carries no gradient.
    """
    from torch.utils.checkpoint import checkpoint

    inv = (1.0 / temperature.float()).unsqueeze(-1)
    pieces = []
    for start in range(0, hidden.shape[0], chunk):
        part = (hidden[start:start + chunk], head, labels[start:start + chunk], inv[start:start + chunk])
        grad = torch.is_grad_enabled() and (hidden.requires_grad or head.requires_grad)
        pieces.append(checkpoint(_chunk_logprobs, *part, use_reentrant=False) if grad else _chunk_logprobs(*part))
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.float32), hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat([p for p, _ in pieces]), torch.cat([e for _, e in pieces])


def probs_diff(logprobs: Tensor, behaviour: Tensor, mask: Tensor) -> Tensor:
    """|p - p_behaviour| per masked token, flattened (verl's `rollout_probs_diff`)."""
    return (logprobs.exp() - behaviour.exp()).abs()[mask.bool()]


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


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate loss, each token's term times its `weights` (`behaviour_weights`, no
    gradient) when given; returns (loss, fraction of tokens where the clip was active)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    surrogate = torch.maximum(unclipped, clipped)
    loss = masked_mean(surrogate if weights is None else weights * surrogate, mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss `0.5 * max((v - R)^2, (v_clip - R)^2)`; returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    return loss, masked_mean((clipped_err > unclipped_err).float(), mask)
