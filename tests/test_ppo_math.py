"""PPO arithmetic against a small example worked out by hand (gamma 1, lambda 0.95)."""

from __future__ import annotations

import math
import statistics

import pytest

torch = pytest.importorskip("torch")

from ares_train import ppo_math as pm  # noqa: E402

# One response of 4 real tokens and one pad; sentence 0 ends on token 1, sentence 1 on token 3.
MASK = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
ENDS, SCORES = [[1, 3]], [[1.0, 0.2]]


def approx(tensor, expected):
    return tensor.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_sentence_scores_sit_on_sentence_end_tokens():
    placed = pm.score_rewards(ENDS, SCORES, MASK, neutral=0.5)
    assert approx(placed, [0.0, 0.5, 0.0, -0.3, 0.0])


def test_final_placement_puts_the_mean_score_on_the_last_real_token():
    placed = pm.score_rewards(ENDS, SCORES, MASK, neutral=0.5, placement="final")
    assert approx(placed, [0.0, 0.0, 0.0, 0.1, 0.0])


def test_two_sentences_ending_on_one_token_add_up():
    placed = pm.score_rewards([[2, 2]], [[1.0, 0.7]], MASK, neutral=0.5)
    assert approx(placed, [0.0, 0.0, 0.7, 0.0, 0.0])


def test_rewards_add_the_kl_penalty_per_token():
    logp = torch.tensor([[-1.0, -2.0, -1.0, -0.5, -9.0]])
    ref = torch.tensor([[-1.5, -2.0, -0.5, -0.5, -3.0]])
    placed = pm.score_rewards(ENDS, SCORES, MASK, neutral=0.5)
    rewards, kl = pm.compute_rewards(logp, ref, placed, MASK, kl_coef=0.1)
    assert approx(kl, [0.5, 0.0, -0.5, 0.0, 0.0])
    assert approx(rewards, [-0.05, 0.5, 0.05, -0.3, 0.0])


def test_gae_by_hand():
    rewards = torch.tensor([[-0.05, 0.5, 0.05, -0.3, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4, 7.0]])  # the pad's value must not leak in
    advantages, returns = pm.gae(rewards, values, MASK, gamma=1.0, lam=0.95)
    # t=3: delta = -0.3 + 0 - 0.4 = -0.7                     A3 = -0.7
    # t=2: delta = 0.05 + 0.4 - 0.3 = 0.15    A2 = 0.15 + 0.95 * -0.7   = -0.515
    # t=1: delta = 0.5 + 0.3 - 0.2 = 0.6      A1 = 0.6 + 0.95 * -0.515  = 0.11075
    # t=0: delta = -0.05 + 0.2 - 0.1 = 0.05   A0 = 0.05 + 0.95 * 0.11075 = 0.1552125
    assert approx(advantages, [0.1552125, 0.11075, -0.515, -0.7, 0.0])
    assert approx(returns, [0.2552125, 0.31075, -0.215, -0.3, 0.0])


def test_gae_with_lambda_one_returns_the_reward_to_go():
    rewards = torch.tensor([[-0.05, 0.5, 0.05, -0.3, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0]])
    _, returns = pm.gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    assert approx(returns, [0.2, 0.25, -0.25, -0.3, 0.0])


def test_whiten_uses_masked_entries_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    std = math.sqrt(1.25)  # population variance of 1..4
    assert approx(pm.whiten(x, MASK), [-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std, 0.0])
    assert approx(pm.whiten(x, MASK, shift_mean=False),
                  [2.5 - 1.5 / std, 2.5 - 0.5 / std, 2.5 + 0.5 / std, 2.5 + 1.5 / std, 0.0])


MASK2 = torch.ones(1, 2)
ADV = torch.tensor([[2.0, -1.0]])


def test_policy_loss_without_clipping():
    old = torch.tensor([[-1.0, -2.0]])
    loss, clip_frac = pm.policy_loss(old + math.log(1.1), old, ADV, MASK2, clip_range=0.2)
    assert loss.item() == pytest.approx((-2.0 * 1.1 + 1.0 * 1.1) / 2)
    assert clip_frac.item() == 0.0


def test_policy_loss_clips_a_ratio_that_moved_too_far_in_the_advantage_direction():
    old = torch.tensor([[-1.0, -2.0]])
    loss, clip_frac = pm.policy_loss(old + math.log(1.5), old, ADV, MASK2, clip_range=0.2)
    # token 0: max(-2 * 1.5, -2 * 1.2) = -2.4 (clipped); token 1: max(1.5, 1.2) = 1.5 (not)
    assert loss.item() == pytest.approx((-2.4 + 1.5) / 2)
    assert clip_frac.item() == 0.5


def test_behaviour_weights_are_the_truncated_ratio_to_the_sampler_where_it_is_known():
    logprobs = torch.tensor([[-1.0, -1.0, -1.0]])
    behaviour = torch.tensor([[-1.0 - math.log(0.5), -1.0 - math.log(4.0), 0.0]])
    known = torch.tensor([[1.0, 1.0, 0.0]])
    weights = pm.behaviour_weights(logprobs, behaviour, known, cap=2.0)
    # p/p_behaviour = 0.5 kept, 4 truncated to the cap, no behaviour log-prob: 1
    assert weights[0].tolist() == pytest.approx([0.5, 2.0, 1.0])
    assert pm.behaviour_weights(logprobs, behaviour, known, cap=0.0).tolist() == [[1.0, 1.0, 1.0]]


def test_policy_loss_weighs_each_tokens_term():
    old = torch.tensor([[-1.0, -2.0]])
    weighted, _ = pm.policy_loss(old + math.log(1.1), old, ADV, MASK2, 0.2, weights=torch.tensor([[0.5, 2.0]]))
    assert weighted.item() == pytest.approx((0.5 * -2.0 * 1.1 + 2.0 * 1.0 * 1.1) / 2)


def test_value_loss_without_clipping():
    loss, clip_frac = pm.value_loss(torch.tensor([[1.1]]), torch.tensor([[1.0]]),
                                    torch.tensor([[2.0]]), torch.ones(1, 1), clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.81)
    assert clip_frac.item() == 0.0


def test_value_loss_clips_a_value_that_overshot():
    # new value 2.5 is 0.5 from the target; clipped to 1.2 it is 0.8 away: the larger error counts.
    loss, clip_frac = pm.value_loss(torch.tensor([[2.5]]), torch.tensor([[1.0]]),
                                    torch.tensor([[2.0]]), torch.ones(1, 1), clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.64)
    assert clip_frac.item() == 1.0


def test_chunked_logprobs_equal_the_full_softmax_with_their_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(7, 5, requires_grad=True)
    head = torch.randn(11, 5)
    labels = torch.randint(0, 11, (7,))
    temperature = torch.tensor([1.0, 1.0, 0.7, 0.7, 2.0, 1.0, 1.0])
    full = torch.log_softmax(hidden @ head.T / temperature[:, None], -1)
    want = full.gather(-1, labels[:, None]).squeeze(-1)
    want_entropy = -(full.exp() * full).sum(-1)
    (want_grad,) = torch.autograd.grad(want.sum(), hidden)
    picked, ent = pm.token_logprobs(hidden, head, labels, temperature, chunk=3)  # chunks of 3, 3, 1
    torch.testing.assert_close(picked, want)
    assert ent is None  # not asked for: never computed, not in the backward's recomputation either
    with torch.no_grad():
        stats_pass, ent = pm.token_logprobs(hidden, head, labels, temperature, chunk=3, with_entropy=True)
    torch.testing.assert_close(stats_pass, want)
    torch.testing.assert_close(ent, want_entropy)
    (grad,) = torch.autograd.grad(picked.sum(), hidden)  # through the recomputed chunks
    torch.testing.assert_close(grad, want_grad)
    assert pm.token_logprobs(torch.zeros(1, 2), torch.zeros(4, 2), torch.tensor([2]), torch.ones(1), 8)[0].item() \
        == pytest.approx(-math.log(4))


def test_gae_bootstraps_a_truncated_row_from_the_value_after_its_last_token():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 0.0], [0.1, 0.2, 0.3, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    ended, _ = pm.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    cut, returns = pm.gae(rewards, values, mask, gamma=1.0, lam=1.0, last_values=torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(cut[0], ended[0])  # a zero bootstrap is an ended episode
    torch.testing.assert_close(returns[1], torch.tensor([1.5, 1.5, 1.5, 0.0]))  # reward + value after the cut


# -- critic-free advantages ----------------------------------------------------------------
# Two questions, interleaved rows. q1: row A has two sentences (tokens 1 and 3: +0.5, -0.5), row B
# one (token 2: +0.5). q2: row C has two (token 0: +0.3, token 2: exactly 0, a neutral score: only
# the step mask knows it is a step), row D one (token 3: +0.3).
GROUP_REWARDS = torch.tensor([[0.0, 0.5, 0.0, -0.5, 0.0],
                              [0.3, 0.0, 0.0, 0.0, 0.0],
                              [0.0, 0.0, 0.5, 0.0, 0.0],
                              [0.0, 0.0, 0.0, 0.3, 0.0]])
GROUP_MASK = torch.tensor([[1.0, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
GROUP_STEPS = GROUP_REWARDS != 0
GROUP_STEPS[1, 2] = True
GROUPS = ["q1", "q2", "q1", "q2"]


def test_sentence_grpo_normalises_each_step_over_its_question_and_sums_the_steps_to_come():
    # q1's step rewards {0.5, -0.5, 0.5}: mean 1/6, unbiased std sqrt(1/3), so 0.5 -> +1/sqrt(3) = 0.57735
    # and -0.5 -> -2/sqrt(3) = -1.1547. q2's {0.3, 0.0, 0.3}: mean 0.2, std sqrt(0.03): the same two values.
    up, down = 1 / math.sqrt(3), -2 / math.sqrt(3)
    advantages, returns = pm.sentence_grpo_advantages(GROUP_REWARDS, GROUP_MASK, GROUPS, step_mask=GROUP_STEPS)
    expected = [[up + down, up + down, down, down, 0.0],  # A: both steps ahead, then the second only
                [up + down, down, down, 0.0, 0.0],        # C: the zero-reward step counts (-1.1547)
                [up, up, up, 0.0, 0.0],                   # B: its one step ends at token 2
                [up, up, up, up, 0.0]]                    # D: step at token 3; token 4 has none after it
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(returns, advantages)
    # as verl calls a registered estimator: keywords, `index` a numpy array of uids, its `config`
    import numpy as np

    verl_style, _ = pm.sentence_grpo_advantages(token_level_rewards=GROUP_REWARDS, response_mask=GROUP_MASK,
                                                index=np.array(GROUPS, dtype=object), config=None,
                                                step_mask=GROUP_STEPS)
    torch.testing.assert_close(verl_style, advantages)


def test_sentence_grpo_without_a_step_mask_takes_the_nonzero_rewards_as_steps():
    # C's zero step is invisible: q2's steps are {0.3, 0.3}, std 0, so every q2 advantage is 0
    advantages, _ = pm.sentence_grpo_advantages(GROUP_REWARDS, GROUP_MASK, GROUPS)
    assert advantages[[1, 3]].abs().max().item() < 1e-6
    assert advantages[0, 0].item() == pytest.approx(-1 / math.sqrt(3), abs=1e-5)


def test_sentence_grpo_scale_rewards_none_and_batch():
    unscaled, _ = pm.sentence_grpo_advantages(GROUP_REWARDS, GROUP_MASK, GROUPS, scale_rewards="none",
                                              step_mask=GROUP_STEPS)
    # q1 centred: 0.5 -> 1/3, -0.5 -> -2/3
    assert unscaled[0].tolist() == pytest.approx([-1 / 3, -1 / 3, -2 / 3, -2 / 3, 0.0], abs=1e-6)
    assert unscaled[2].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0], abs=1e-6)
    batch, _ = pm.sentence_grpo_advantages(GROUP_REWARDS, GROUP_MASK, GROUPS, scale_rewards="batch",
                                           step_mask=GROUP_STEPS)
    std = statistics.stdev([0.5, -0.5, 0.5, 0.3, 0.0, 0.3])  # every step of the batch, group-centred apart
    torch.testing.assert_close(batch, unscaled / (std + 1e-6), atol=1e-5, rtol=0)


def test_one_outcome_reward_per_row_is_outcome_grpo():
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    steps = pm.score_steps([[0], [1], [0]], mask, placement="final")
    assert steps.tolist() == [[False, True], [False, True], [True, False]]  # the last real token, 0 reward too
    advantages, _ = pm.sentence_grpo_advantages(rewards, mask, [7, 7, 7], step_mask=steps)
    # outcomes 1, 0, 0.5: mean 0.5, std 0.5
    torch.testing.assert_close(advantages, torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]]), atol=1e-5, rtol=0)


def test_rloo_subtracts_the_mean_of_the_other_rollouts():
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.5, 0.0], [0.0, 0.2]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    advantages, _ = pm.rloo_advantages(rewards, mask, ["a", "a", "a", "b"])
    # a: 1 - (0 + 0.5)/2 = 0.75, 0 - 0.75 = -0.75, 0.5 - 0.5 = 0; b alone keeps its outcome
    torch.testing.assert_close(advantages, torch.tensor([[0.75, 0.75], [-0.75, -0.75], [0.0, 0.0], [0.2, 0.2]]))


def test_loss_aggregation_token_mean_against_sequence_mean():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert pm.aggregate(x, mask, "bnpo").item() == pytest.approx(8 / 5)  # every token weighs the same
    assert pm.aggregate(x, mask, "grpo").item() == pytest.approx((1 + 4) / 2)  # every response weighs the same


def test_k3_kl_and_the_kl_term_of_the_policy_loss():
    logp = torch.tensor([[-1.0, -1.0]])
    ref = logp + torch.tensor([[0.0, math.log(2.0)]])
    assert pm.k3_kl(logp, ref).tolist()[0] == pytest.approx([0.0, 2 - math.log(2) - 1])
    plain, _ = pm.policy_loss(logp, logp, ADV, MASK2, 0.2)
    with_kl, _ = pm.policy_loss(logp, logp, ADV, MASK2, 0.2, kl=(ref, 0.5))
    assert with_kl.item() == pytest.approx(plain.item() + 0.5 * (2 - math.log(2) - 1) / 2)


def test_sampled_kl_weighs_each_drawn_token_by_policy_over_sampler():
    logp = torch.tensor([[-1.0, -1.0, -1.0]])
    ref = logp + torch.tensor([[0.0, math.log(2.0), 5.0]])
    behaviour = logp - torch.tensor([[0.0, math.log(2.0), 0.0]])  # the second token: p = 2 p_sampler
    mask, sampled = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    # weights 1 and 2, k3 0 and 2 - ln 2 - 1; the masked third token counts for nothing
    assert pm.sampled_kl(logp, ref, behaviour, mask, sampled).item() == pytest.approx(2 * (1 - math.log(2)) / 3)
    unknown = torch.zeros(1, 3)  # no sampler log-probs: plain mean
    assert pm.sampled_kl(logp, ref, behaviour, mask, unknown).item() == pytest.approx((1 - math.log(2)) / 2)
