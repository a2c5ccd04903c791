"""Critic-free PPO (`advantage=grpo|rloo`): it learns from sentence rewards, keeps a question's
rollouts in one batch, refuses groups it cannot compare, and creates, saves and carries no critic."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ares_data.errors import TrainingError  # noqa: E402
from ares_train import ppo_toy  # noqa: E402
from ares_train.ppo_batches import batches  # noqa: E402
from ares_train.ppo_config import PPOConfig  # noqa: E402
from ares_train.ppo_trainer import VALUE_HEAD_FILE  # noqa: E402

from ppo_support import make_trainer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return ppo_toy.toy_tokenizer()


def _row(group, scores=(1.0,)):
    return {"prompt": "p", "group": group, "response": "x", "sentence_ends": [1] * len(scores), "scores": list(scores)}


@pytest.mark.slow  # ~15 s alone
def test_grpo_with_sentence_rewards_moves_the_student_toward_rewarded_sentences(tokenizer):
    torch.manual_seed(0)
    metrics = list(ppo_toy.online(make_trainer(tokenizer, advantage="grpo"), steps=15))
    first = sum(m["mean_score"] for m in metrics[:3]) / 3
    last = sum(m["mean_score"] for m in metrics[-3:]) / 3
    assert first < 0.6
    assert last > first + 0.25, [round(m["mean_score"], 2) for m in metrics]
    assert all("value_loss" not in m for m in metrics)


def test_a_critic_free_trainer_creates_saves_and_carries_no_critic(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, advantage="grpo", batch_size=8, mini_batch_size=8, ppo_epochs=1)
    assert trainer.value_head is None and not trainer.critic_params
    assert not [n for n, _ in trainer.model.named_parameters() if ".critic." in n]
    metrics = trainer.step(ppo_toy.rollouts(trainer, 8))
    assert metrics["first_ratio_deviation"] < 1e-3 and metrics["kl"] == pytest.approx(0.0, abs=1e-6)
    assert "value_loss" not in metrics and "policy_grad_norm" in metrics
    out = trainer.save(tmp_path / "rl")
    assert (out / "adapter_config.json").is_file()
    assert not (out / "critic").exists() and not (out / VALUE_HEAD_FILE).exists()
    with pytest.raises(TrainingError, match="no critic"):
        make_trainer(tokenizer, advantage="rloo", reward_placement="final").__class__(
            PPOConfig(advantage="grpo"), ppo_toy.toy_model(tokenizer), tokenizer, critic_from=tmp_path)


@pytest.mark.parametrize("advantage, a", [("rloo", 1.0), ("grpo", 0.5 / 0.5 ** 0.5)])
def test_first_update_loss_by_hand_for_each_loss_type(tokenizer, advantage, a):
    """One question, two responses of 7 and 4 tokens (6 and 3 words + EOS) with outcomes +0.5 and
    -0.5 (reward_placement=final). RLOO: +-(0.5 - -0.5) = +-1; GRPO: +-0.5 / std(0.5, -0.5) = +-0.7071.
    At the first update the ratio is 1 and the policy is the reference (k3 KL 0), so the loss is
    -mean(A): over tokens (`bnpo`) -(7a - 4a) / 11, over responses (`grpo`) 0."""
    rows = []
    for text in ("red so then green so then", "so then it"):
        ends, scores = ppo_toy.score(text)
        rows.append({"prompt": ppo_toy.PROMPT, "response": text, "sentence_ends": ends, "scores": scores})
    assert [r["scores"] for r in rows] == [[1.0, 1.0], [0.0]]
    for loss_type, expected in (("bnpo", -(7 * a - 4 * a) / 11), ("grpo", 0.0)):
        trainer = make_trainer(tokenizer, advantage=advantage, reward_placement="final", loss_type=loss_type,
                               batch_size=2, mini_batch_size=2, ppo_epochs=1, kl_coef=0.5)
        metrics = trainer.step(rows)
        assert metrics["response_tokens"] == 5.5
        assert metrics["policy_loss"] == pytest.approx(expected, abs=1e-5)


def test_batches_keep_a_questions_rollouts_together():
    rows = [_row(g) for g in ["a", "b", "a", "c", "b", "c", "a", "b", "c"]]  # k = 3, interleaved
    out = list(batches(rows, batch_size=7, advantage="grpo"))  # two whole questions fit in 7
    assert [[r["group"] for r in b] for b, _ in out] == [["a", "a", "a", "b", "b", "b"], ["c", "c", "c"]]
    gae = list(batches(rows, batch_size=7, advantage="gae"))
    assert [len(b) for b, _ in gae] == [7, 2]  # gae takes rows in order


def test_groups_that_cannot_be_compared_are_refused_or_dropped():
    with pytest.raises(TrainingError, match="every question has one"):
        list(batches([_row("a"), _row("b")], 8, "grpo"))
    mismatched = {**_row("b"), "scores": [1.0, 0.0]}  # unusable: two scores, one sentence
    # b is left with one usable rollout: nothing to compare it with, so it is dropped (and counted);
    # c, with two of k = 3, is compared within those two
    rows = [_row("a"), _row("a"), _row("a"), _row("b"), mismatched, _row("c"), _row("c")]
    [(kept, dropped)] = list(batches(rows, 8, "rloo"))
    assert [r["group"] for r in kept] == ["a", "a", "a", "c", "c"] and dropped == 2
    with pytest.raises(TrainingError, match="batch_size 2 is too small"):
        list(batches([_row("a")] * 3, 2, "grpo"))


def test_config_checks_of_the_critic_free_estimators():
    with pytest.raises(TrainingError, match="reward_placement=final"):
        PPOConfig(advantage="rloo")
    with pytest.raises(TrainingError, match="critic_warmup_steps"):
        PPOConfig(advantage="grpo", critic_warmup_steps=2)
    with pytest.raises(TrainingError, match="advantage must be one of"):
        PPOConfig(advantage="ppo")
    assert PPOConfig(advantage="grpo").critic_free and not PPOConfig().critic_free
