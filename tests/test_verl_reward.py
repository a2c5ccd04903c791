"""The `ares_sentence` reward manager inside verl 0.9.1 (the `[verl]` extra): real `DataProto`
batches, verl's own registries and loaders, the project's fake teacher on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sqlmodel import select
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls as loop_registry
from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls
from verl.workers.reward_manager import get_reward_manager_cls as batch_registry

from ares_data.errors import TrainingError
from ares_data.fake_answers import sentence_score
from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import ModelCheckpoint, Question, Rationale, Sentence, TeacherCall, TeacherCallRationale
from ares_data.splitter import split_sentences
from ares_train.sentence_tokens import _prefix_spans, decoded_spans
from ares_train.verl_agent import dense_rewards
from ares_train.verl_reward import AresSentenceRewardLoop, AresSentenceRewardManager, VerlRewardSettings

RESPONSES = [
    "Magnets attract iron. The nail sticks to the magnet. The answer is (A).",
    " Plants need light.  The answer is (B).",
    "Iron is a metal. Metals conduct heat. So the pan warms up. The answer is (A).",
    "Glass is not magnetic. The answer is (C).",
]
PROMPT = "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def questions(store) -> list[int]:
    with store.session() as session:
        rows = [Question(dataset="test", source_id=f"q{i}", split="train", question=f"Question {i}?",
                         choices=["iron", "wood", "glass"], answer_index=0) for i in range(2)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def batch(tokenizer, responses: list[str], question_ids: list[int], *, step: int = 1, ids=None) -> DataProto:
    """What verl's trainer hands the reward manager: prompts left-padded, responses right-padded
    and ended by EOS, the dataset's extra_info, a uid per prompt, the global step."""
    p_ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    r_ids = ids or [tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for r in responses]
    width, pad = max(map(len, r_ids)) + 3, tokenizer.eos_token_id  # verl pads with pad or EOS; both are special
    responses_t = torch.tensor([r + [pad] * (width - len(r)) for r in r_ids])
    prompts_t = torch.tensor([p_ids] * len(r_ids))
    attention = torch.tensor([[1] * len(p_ids) + [1] * len(r) + [0] * (width - len(r)) for r in r_ids])
    infos = [{"split": "train", "index": i, "question_id": q} for i, q in enumerate(question_ids)]
    return DataProto.from_dict(
        tensors={"prompts": prompts_t, "responses": responses_t, "attention_mask": attention,
                 "input_ids": torch.cat([prompts_t, responses_t], 1)},
        non_tensors={"extra_info": np.array(infos, dtype=object), "uid": np.array([f"u{q}" for q in question_ids],
                                                                                   dtype=object),
                     "global_steps": np.array([step] * len(r_ids))})


def settings(url: str, **extra) -> dict:
    return {"run": "verl-test", "teacher": {"base_url": url, "model": "fake", "rpm": 6000, "timeout": 2}, **extra}


def expected_rewards(tokenizer, text: str, width: int) -> torch.Tensor:
    """`sentence_score - 0.5` on the token holding each sentence's last character."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    out = torch.zeros(width)
    stripped, shift = text.strip(), len(text) - len(text.lstrip())
    for span in split_sentences(stripped):
        token = next(k for k, (s, e) in enumerate(enc["offset_mapping"]) if s <= span.end - 1 + shift < e)
        out[token] += sentence_score(" ".join(span.text.split())) - 0.5
    return out


def test_registered_under_ares_sentence_in_both_of_verls_registries():
    assert batch_registry("ares_sentence") is AresSentenceRewardManager
    assert loop_registry("ares_sentence") is AresSentenceRewardLoop


@pytest.mark.both_backends  # a cluster's store is PostgreSQL
def test_batch_manager_scores_new_text_on_sentence_end_tokens_and_records_everything(store, tokenizer, questions,
                                                                                     caplog):
    caplog.set_level(logging.INFO, logger="ares.verl")
    data = batch(tokenizer, RESPONSES, [questions[0], questions[0], questions[1], questions[1]], step=3)
    with serve_in_thread() as url:
        manager = AresSentenceRewardManager(tokenizer, 0, ares=settings(url))
        out = manager(data, return_dict=True)
        again = manager(data)
    reward = out["reward_tensor"]
    assert reward.shape == data.batch["responses"].shape and reward.dtype == torch.float32
    for row, text in enumerate(RESPONSES):
        assert torch.allclose(reward[row], expected_rewards(tokenizer, text, reward.shape[1]))
    assert out["reward_extra_info"]["ares_failed"] == [0, 0, 0, 0]
    assert out["reward_extra_info"]["ares_sentences"] == [len(split_sentences(t.strip())) for t in RESPONSES]
    assert torch.equal(again, reward)
    assert "ares_sentence: 4 responses in" in caplog.text and "2 sent, 0 from the store" in caplog.text
    with store.session() as s:
        rationales = s.exec(select(Rationale).order_by(Rationale.id)).all()
        calls = s.exec(select(TeacherCall)).all()
        links = s.exec(select(TeacherCallRationale)).all()
        checkpoint = s.exec(select(ModelCheckpoint)).one()
    # One grouped call per prompt, linked to both of its responses; the same batch again pays nothing.
    assert len(calls) == 2 and all(c.prompt_name == "score_group_v1" and c.status == "ok" for c in calls)
    assert sorted(link.rationale_id for link in links) == [r.id for r in rationales]
    assert [r.text for r in rationales] == [t.strip() for t in RESPONSES]
    assert {(r.source, r.round, r.model_checkpoint_id) for r in rationales} == {("student", 3, checkpoint.id)}
    assert checkpoint.name == "verl-test" and [r.predicted_answer for r in rationales] == [0, 1, 0, 2]


def test_a_response_without_scores_gets_no_reward_and_is_counted(store, tokenizer, questions):
    eos = tokenizer.eos_token_id
    ids = [tokenizer(RESPONSES[0], add_special_tokens=False).input_ids + [eos], [eos]]  # the second is empty
    data = batch(tokenizer, [], [questions[0], questions[1]], ids=ids)
    with serve_in_thread() as url:
        out = AresSentenceRewardManager(tokenizer, 0, ares=settings(url))(data, return_dict=True)
    assert out["reward_extra_info"]["ares_failed"] == [0, 1]
    assert out["reward_tensor"][0].abs().sum() > 0 and out["reward_tensor"][1].abs().sum() == 0


def test_failed_teacher_calls_leave_the_batch_unrewarded_and_counted(store, tokenizer, questions):
    data = batch(tokenizer, RESPONSES[:2], questions)
    # Every answer is a fault (500, timeout, malformed, truncated or wrong count) and nothing is retried.
    with serve_in_thread(fault_rate=1.0, hang_s=0.1) as url:
        ares = settings(url)
        ares["teacher"].update(max_attempts=1, max_repairs=0)
        out = AresSentenceRewardManager(tokenizer, 0, ares=ares)(data, return_dict=True)
    assert out["reward_extra_info"]["ares_failed"] == [1, 1]
    assert out["reward_tensor"].abs().sum() == 0
    with store.session() as s:
        assert {c.status for c in s.exec(select(TeacherCall))} <= {"error", "failed"}
        assert len(s.exec(select(Rationale)).all()) == 2  # recorded all the same


def test_spans_from_one_offset_pass_and_from_pieces_when_verls_split_is_not_canonical(tokenizer):
    text = "Magnets attract iron. The answer is (A)."
    ids = tokenizer(text, add_special_tokens=False).input_ids
    decoded, spans = decoded_spans(tokenizer, ids + [tokenizer.eos_token_id])
    assert decoded == text and spans[-1] == (0, 0)
    assert spans[:-1] == [tuple(o) for o in tokenizer(text, add_special_tokens=False,
                                                      return_offsets_mapping=True)["offset_mapping"]]
    # "Magnets" written as two tokens a sampler may pick: not the tokenizer's own encoding.
    split = tokenizer("Mag", add_special_tokens=False).input_ids + tokenizer("nets", add_special_tokens=False).input_ids
    odd = split + tokenizer(" attract iron.", add_special_tokens=False).input_ids
    decoded, spans = decoded_spans(tokenizer, odd)
    assert decoded == "Magnets attract iron." and spans[len(split) - 1][1] == len("Magnets")
    assert spans[-1][1] == len(decoded)
    assert spans == _prefix_spans(tokenizer, odd)  # the quadratic fallback agrees


def verl_config(tokenizer_dir, ares: dict):
    """verl's own PPO config (Hydra compose of verl.trainer.config.ppo_trainer) with the overrides
    `run_verl.sh` uses for the reward manager."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={tokenizer_dir}", "reward.reward_manager.source=importlib",
            "reward.reward_manager.name=AresSentenceRewardLoop",
            "reward.reward_manager.module.path=pkg://ares_train.verl_reward", "reward.num_workers=1",
        ])
    OmegaConf.set_struct(cfg, False)
    cfg.reward.reward_kwargs = {"ares": ares}
    return cfg


def test_verls_reward_loop_worker_returns_the_placed_rewards_beside_the_sum(store, tokenizer, tokenizer_dir,
                                                                          questions):
    data = batch(tokenizer, RESPONSES, [questions[0], questions[0], questions[1], questions[1]], step=2)
    data.non_tensor_batch["session_id"] = np.array([0, 1, 0, 1])
    data.non_tensor_batch["ares_group"] = np.array([2] * 4)  # what the ares_single_turn agent loop sends
    with serve_in_thread() as url:
        cfg = verl_config(tokenizer_dir, settings(url))
        assert resolve_reward_manager_cls(cfg) is AresSentenceRewardLoop
        assert isinstance(load_reward_manager(cfg, tokenizer), AresSentenceRewardLoop)
        worker = RewardLoopWorker(cfg)  # what each Ray reward worker runs, in this process
        outputs = asyncio.run(worker.compute_score_batch(data))
    width = data.batch["responses"].shape[1]
    dense = [expected_rewards(tokenizer, t, width) for t in RESPONSES]
    assert [o["reward_score"] for o in outputs] == pytest.approx([float(d.sum()) for d in dense], abs=1e-6)
    for o, d in zip(outputs, dense):
        assert torch.allclose(torch.tensor(dense_rewards(o["reward_extra_info"]["ares_placed"], width)), d)
    assert [o["reward_extra_info"]["ares_failed"] for o in outputs] == [0, 0, 0, 0]
    with store.session() as s:
        calls = s.exec(select(TeacherCall)).all()
        rationales = s.exec(select(Rationale).order_by(Rationale.id)).all()
        sentences = len(s.exec(select(Sentence)).all())
    # The four per-sample calls arrived together: one grouped call per prompt.
    assert len(calls) == 2 and {r.round for r in rationales} == {2}
    assert [r.sample_index for r in rationales] == [0, 1, 0, 1]
    assert sentences == sum(len(split_sentences(t)) for t in RESPONSES)


def test_validation_can_go_unscored_unrecorded_and_unpaid(store, tokenizer, tokenizer_dir, questions):
    data = batch(tokenizer, RESPONSES[:2], questions)
    data.non_tensor_batch["extra_info"] = np.array([{"split": "val", "index": i, "question_id": q}
                                                    for i, q in enumerate(questions)], dtype=object)
    data.non_tensor_batch["ares_group"] = np.array([1, 1])
    with serve_in_thread() as url:
        worker = RewardLoopWorker(verl_config(tokenizer_dir, settings(url, score_validation=False)))
        outputs = asyncio.run(worker.compute_score_batch(data))
    assert [o["reward_score"] for o in outputs] == [0, 0]
    assert [o["reward_extra_info"]["ares_placed"] for o in outputs] == ["[]", "[]"]
    with store.session() as s:
        assert s.exec(select(Rationale)).all() == [] and s.exec(select(TeacherCall)).all() == []


def test_settings_refuse_unknown_keys():
    with pytest.raises(TrainingError, match="unknown setting"):
        VerlRewardSettings.from_mapping({"stroe": "x"})


def test_a_batch_from_other_data_is_refused_in_one_line(store, tokenizer, questions):
    data = batch(tokenizer, RESPONSES[:1], questions[:1])
    data.non_tensor_batch["extra_info"] = np.array([{"index": 0}], dtype=object)  # not `ares export verl` data
    with serve_in_thread() as url, pytest.raises(TrainingError, match="row 0: extra_info has no question_id"):
        AresSentenceRewardManager(tokenizer, 0, ares=settings(url))(data)
