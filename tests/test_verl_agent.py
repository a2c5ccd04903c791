"""The `ares_single_turn` agent loop inside verl 0.9.1's own v1 worker (`AgentLoopWorkerTQ`, in process):
a fake LLM server, verl's `RewardLoopWorker` with `ares_sentence` against the fake teacher on
127.0.0.1, and TransferQueue's put captured where the worker writes each sample."""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sqlmodel import select
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl_support import FakeServer, agent_worker, run_prompts, streaming, verl_config

from ares_data.errors import TrainingError
from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import Question, Rationale, TeacherCall
from ares_train.ppo_config import PPOConfig
from ares_train.verl_agent import AresAgentLoopOutput, check_config, dense_rewards
from ares_train.verl_reward import AresSentenceRewardManager

RESPONSES = [
    "Magnets attract iron. The nail sticks to the magnet. The answer is (A).",
    "Plants need light. The answer is (B).",
    "Iron is a metal. Metals conduct heat. So the pan warms up. The answer is (A).",
    "Glass is not magnetic. The answer is (C).",
]
N = 4


@pytest.fixture(scope="module")
def verl_cfg(tiny_model_dir, tmp_path_factory):
    return verl_config(tiny_model_dir, tmp_path_factory.mktemp("loops"), n=N, reward_workers=2)


@pytest.fixture(scope="module")
def worker(verl_cfg):
    return agent_worker(verl_cfg)


@pytest.fixture
def questions(store) -> list[int]:
    with store.session() as session:
        rows = [Question(dataset="test", source_id=f"q{i}", split=split, question=f"Question {i}?",
                         choices=["iron", "wood", "glass"], answer_index=0)
                for i, split in enumerate(["train", "train", "val"])]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


@pytest.fixture
def teacher_url():
    with serve_in_thread() as url:
        yield url


@pytest.fixture
def run(worker, verl_cfg, teacher_url):
    """verl's v1 worker runs prompts of these questions; returns what it put into TransferQueue."""
    cfg = verl_cfg.copy()
    cfg.reward.reward_kwargs.ares.teacher = {"base_url": teacher_url, "model": "fake", "rpm": 6000, "timeout": 2}

    def go(question_ids: list[int], *, fail_on: int | None = None, **kwargs):
        worker.llm_client = FakeServer(worker.tokenizer, RESPONSES, fail_on)
        with streaming(cfg) as seen:
            run_prompts(worker, question_ids, **kwargs)
        return seen

    return go


def reference(tokenizer, store_url: str, teacher_url: str, responses: list[list[int]], keys: list[str]):
    """The batch manager's dense [batch, response] rewards for the same token ids (the teacher's
    answers come from the store's request-hash cache, so nothing is sent again)."""
    width = max(map(len, responses))
    prompt = torch.tensor([[1, 2]] * len(responses))
    padded = torch.tensor([r + [0] * (width - len(r)) for r in responses])
    mask = torch.tensor([[1, 1] + [1] * len(r) + [0] * (width - len(r)) for r in responses])
    uids, sessions = zip(*(key.split("_")[:2] for key in keys))  # TransferQueue keys: {uid}_{session}_{index}
    data = DataProto.from_dict(
        tensors={"prompts": prompt, "responses": padded, "attention_mask": mask},
        non_tensors={"extra_info": np.array([{"question_id": int(u.removeprefix("uid-")), "split": "train"}
                                             for u in uids], dtype=object),
                     "uid": np.array(uids, dtype=object), "session_id": np.array([int(s) for s in sessions]),
                     "global_steps": np.array([3] * len(responses))})
    manager = AresSentenceRewardManager(tokenizer, 0, ares={
        "store": store_url, "run": "verl-test", "teacher": {"base_url": teacher_url, "model": "fake", "rpm": 6000}})
    return manager(data), mask[:, 2:]


def gae(token_level_rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> DataProto:
    """verl's compute_advantage with GAE, as the v1 trainer calls it (the offline PPO's gamma and lambda)."""
    config = PPOConfig()
    data = DataProto.from_dict(tensors={"token_level_rewards": token_level_rewards, "response_mask": mask,
                                        "values": values})
    return compute_advantage(data, core_algos.AdvantageEstimator.GAE, gamma=config.gamma, lam=config.lam,
                             config=OmegaConf.create({}))


def test_a_prompts_samples_cost_one_grouped_call_and_reach_rm_scores_densely(store, db_url, questions, worker, run,
                                                                             teacher_url):
    seen = run(questions[:2])
    rows = seen.rows
    assert len(rows) == 2 * N and {r["partition"] for r in rows.values()} == {"train"}
    # One reward worker per prompt, called once with its N samples; one grouped teacher call each.
    assert sorted(uid for uid, _ in seen.routed) == [f"uid-{q}" for q in questions[:2]]
    with store.session() as s:
        calls = s.exec(select(TeacherCall)).all()
        rationales = s.exec(select(Rationale).order_by(Rationale.id)).all()
    assert len(calls) == 2 and all(c.prompt_name == "score_group_v1" for c in calls)
    assert sorted((r.question_id, r.sample_index) for r in rationales) == sorted(
        (q, i) for q in questions[:2] for i in range(N))  # each sample its own index, not 0
    assert {r.generation["split"] for r in rationales} == {"train"}

    keys = sorted(rows)
    fields = [rows[k]["fields"] for k in keys]
    responses = [f["responses"].tolist() for f in fields]
    dense, mask = reference(worker.tokenizer, db_url, teacher_url, responses, keys)
    for row, f in enumerate(fields):
        rm = f["rm_scores"]
        assert rm.shape == f["responses"].shape and rm.dtype == torch.float32
        assert torch.allclose(rm, dense[row, :len(rm)], atol=1e-6)  # token for token
        info = f["extra_fields"]["reward_extra_info"]
        assert "ares_placed" not in info and info["ares_failed"] == 0
    assert any((f["rm_scores"][:-1] != 0).any() for f in fields)  # rewards before the last token
    rm_padded = torch.nn.utils.rnn.pad_sequence([f["rm_scores"] for f in fields], batch_first=True)
    values = torch.linspace(-0.3, 0.3, mask.numel()).reshape(mask.shape) * mask
    ours, ref = gae(rm_padded, mask, values), gae(dense, mask, values)
    assert torch.allclose(ours.batch["returns"], ref.batch["returns"], atol=1e-6)
    assert torch.allclose(ours.batch["advantages"], ref.batch["advantages"], atol=1e-6)


def test_opposite_sign_sentence_rewards_give_tokens_different_advantages():
    """+0.4, +0.1, -0.1, -0.4 sum to 0: on the last token (verl's own output) GAE sees nothing."""
    placed = '[[2, 0.4], [5, 0.1], [8, -0.1], [11, -0.4]]'
    common = dict(prompt_ids=[1, 2], response_ids=list(range(100, 112)), response_mask=[1] * 12, metrics={})
    dense = AresAgentLoopOutput(**common, reward_score=0.0, token_rewards=dense_rewards(placed, 12)).as_dict()
    summed = AgentLoopOutput(**common, reward_score=0.0).as_dict()
    assert dense["rm_scores"][[2, 5, 8, 11]].tolist() == pytest.approx([0.4, 0.1, -0.1, -0.4])
    mask, values = torch.ones(1, 12, dtype=torch.int64), torch.zeros(1, 12)
    ours = gae(dense["rm_scores"][None], mask, values).batch["advantages"]
    verls = gae(summed["rm_scores"][None], mask, values).batch["advantages"]
    assert len(set(ours[0].tolist())) > 1 and torch.count_nonzero(verls) == 0


def test_a_sample_that_fails_to_generate_does_not_hold_back_its_siblings(store, questions, run):
    # verl marks the prompt failed; the others were scored, nothing hangs.
    assert len(run(questions[:1], fail_on=1).rows) == N - 1
    with store.session() as s:
        assert len(s.exec(select(TeacherCall)).all()) == 1


def test_validation_is_scored_and_recorded_with_its_split(store, questions, run, verl_cfg):
    val_n = verl_cfg.actor_rollout_ref.rollout.val_kwargs.n
    rows = run(questions[2:], splits=["val"], validate=True).rows
    assert len(rows) == val_n and {r["partition"] for r in rows.values()} == {"val"}
    with store.session() as s:
        assert {r.generation["split"] for r in s.exec(select(Rationale))} == {"val"}


def test_a_sample_outside_the_agent_loop_is_refused(verl_cfg):
    """verl's own per-sample call (its single_turn_agent, or the legacy trainer) would keep only the sum."""
    cfg = verl_cfg.copy()
    cfg.reward.reward_kwargs.ares.teacher = {"base_url": "http://127.0.0.1:9", "model": "fake"}
    worker = RewardLoopWorker(cfg)
    data = DataProto.from_dict(tensors={"prompts": torch.tensor([[1]]), "responses": torch.tensor([[2]]),
                                        "attention_mask": torch.tensor([[1, 1]])},
                               non_tensors={"extra_info": np.array([{"question_id": 1}], dtype=object)})
    with pytest.raises(TrainingError, match="outside the ares_single_turn agent loop"):
        asyncio.run(worker.compute_score(data))
    with pytest.raises(TrainingError, match="sums the sentence rewards"):
        worker.reward_manager.assemble_rm_scores(data, [0.0])


@pytest.mark.parametrize("override, message", [
    ("trainer.use_v1=false", "legacy trainer"),
    ("actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent", "need ares_single_turn"),
    ("actor_rollout_ref.rollout.agent.agent_loop_config_path=null", "no ares_single_turn entry"),
    ("reward.reward_model.enable=true", "instead of the teacher"),
])
def test_configs_that_would_lose_the_dense_rewards_are_refused(verl_cfg, override, message):
    check_config(verl_cfg)
    key, value = override.split("=")
    cfg = verl_cfg.copy()
    OmegaConf.update(cfg, key, OmegaConf.create(f"v: {value}").v)
    with pytest.raises(TrainingError, match=message):
        check_config(cfg)


def test_run_verl_stops_at_start_on_the_legacy_trainer(tmp_path, monkeypatch, verl_cfg):
    """`python -m ares_train.verl_main` (what run_verl.sh runs): one line, exit status 1, before Ray starts."""
    from hydra.core.global_hydra import GlobalHydra

    from ares_train import verl_main

    loops = verl_cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["verl_main", "trainer.use_v1=false", "hydra.run.dir=.",
                                      "actor_rollout_ref.rollout.agent.default_agent_loop=ares_single_turn",
                                      f"actor_rollout_ref.rollout.agent.agent_loop_config_path={loops}"])
    try:
        with pytest.raises(SystemExit) as stopped:
            verl_main.main()
    finally:
        GlobalHydra.instance().clear()
    assert str(stopped.value).startswith("run_verl.sh: trainer.use_v1=false: verl's legacy trainer puts the sum")
    assert "\n" not in str(stopped.value)


def test_verl_computes_sentence_grpo_with_the_offline_trainers_function(verl_cfg):
    """verl's own compute_advantage, with the registered estimator, gives exactly what the offline
    trainer's ppo_math gives for the same dense rewards and uids; the KL-in-reward config is refused."""
    from ares_train import ppo_math
    from ares_train.verl_advantage import ESTIMATOR, register_sentence_grpo

    cfg = verl_cfg.copy()
    cfg.algorithm.adv_estimator = ESTIMATOR
    cfg.algorithm.use_kl_in_reward = True
    with pytest.raises(TrainingError, match="use_kl_in_reward=true"):
        check_config(cfg)
    cfg.algorithm.use_kl_in_reward = False
    check_config(cfg)
    register_sentence_grpo()
    # two rollouts of question a (2 and 1 sentences), one of b; rewards at sentence ends
    rewards = torch.tensor([[0.0, 0.4, 0.0, -0.4], [0.0, 0.0, 0.1, 0.0], [0.3, 0.0, -0.1, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]])
    uids = np.array(["a", "a", "b"], dtype=object)
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": uids})
    out = compute_advantage(data, ESTIMATOR, config=OmegaConf.create({"norm_adv_by_std_in_grpo": True}))
    expected, _ = ppo_math.sentence_grpo_advantages(rewards, mask, list(uids))
    torch.testing.assert_close(out.batch["advantages"], expected)
    assert len(set(out.batch["advantages"][0, :4].tolist())) > 1  # earlier tokens carry later steps' credit
    unscaled = compute_advantage(DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                                                     non_tensors={"uid": uids}),
                                 ESTIMATOR, config=OmegaConf.create({"norm_adv_by_std_in_grpo": False}))
    torch.testing.assert_close(unscaled.batch["advantages"],
                               ppo_math.sentence_grpo_advantages(rewards, mask, list(uids), scale_rewards="none")[0])


