"""The verl reward manager, on a stand-in with DataProto's attributes and the SmolLM2 tokenizer."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from ares_data.splitter import split_sentences  # noqa: E402
from ares_train.verl_reward import SentenceScoreRewardManager, decoded_offsets  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def data_proto(tokenizer, prompts: list[str], responses: list[str], infos: list[dict]) -> SimpleNamespace:
    """What verl hands a reward manager: prompts left-padded, responses right-padded (+ EOS)."""
    p_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    r_ids = [tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for r in responses]
    plen, rlen = max(map(len, p_ids)), max(map(len, r_ids)) + 3
    pad = tokenizer.pad_token_id
    prompt_t = torch.tensor([[pad] * (plen - len(p)) + p for p in p_ids])
    resp_t = torch.tensor([r + [pad] * (rlen - len(r)) for r in r_ids])
    attn = torch.tensor([[0] * (plen - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (rlen - len(r))
                         for p, r in zip(p_ids, r_ids)])
    return SimpleNamespace(
        batch={"prompts": prompt_t, "responses": resp_t, "attention_mask": attn,
               "input_ids": torch.cat([prompt_t, resp_t], 1)},
        non_tensor_batch={"extra_info": np.array(infos, dtype=object)},
        meta_info={},
    )


def info(text: str, scores: list[float]) -> dict:
    return {"split": "train", "index": 0, "rationale_id": 1, "question_id": 1, "response": text,
            "sentence_ends": [s.end for s in split_sentences(text)], "scores": scores}


def test_scores_land_on_sentence_end_tokens(tokenizer, sqa):
    problems = json.loads(sqa["problems"].read_text())
    texts = [p["solution"] for p in problems.values() if len(split_sentences(p["solution"])) >= 3][:3]
    infos = [info(t, [round(0.1 * (k % 11), 1) for k in range(len(split_sentences(t)))]) for t in texts]
    data = data_proto(tokenizer, ["<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"] * 3, texts, infos)

    out = SentenceScoreRewardManager(tokenizer, num_examine=0)(data, return_dict=True)
    reward = out["reward_tensor"]
    assert reward.shape == data.batch["responses"].shape and reward.dtype == torch.float32
    assert out["reward_extra_info"]["ares_unmatched"] == [False] * 3
    for row, (text, row_info) in enumerate(zip(texts, infos)):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        expected = torch.zeros(reward.shape[1])
        for end, score in zip(row_info["sentence_ends"], row_info["scores"]):
            pos = next(k for k, (s, e) in enumerate(enc["offset_mapping"]) if s <= end - 1 < e)
            expected[pos] += score - 0.5
        torch.testing.assert_close(reward[row], expected)
        assert (reward[row] != 0).sum() == sum(s != 0.5 for s in row_info["scores"])


def test_a_new_response_or_a_count_mismatch_gets_no_reward(tokenizer):
    texts = ["The sky is blue. So the answer is (A).", "Ice melts. It is warm."]
    infos = [info("Something else entirely.", [1.0]), {**info(texts[1], [1.0, 0.0]), "scores": [1.0]}]
    data = data_proto(tokenizer, ["Q"] * 2, texts, infos)
    out = SentenceScoreRewardManager(tokenizer)(data, return_dict=True)
    assert out["reward_extra_info"]["ares_unmatched"] == [True, True]
    assert not out["reward_tensor"].any()
    assert torch.equal(SentenceScoreRewardManager(tokenizer)(data), out["reward_tensor"])


def test_decoded_offsets_give_the_multibyte_character_to_the_token_that_completes_it(tokenizer):
    text = "A deer 鹿. It was 45°C."  # 鹿 is three byte-level tokens
    ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    decoded, spans = decoded_offsets(tokenizer, ids)
    assert decoded == text
    deer = text.index("鹿")
    holders = [k for k, (s, e) in enumerate(spans) if s <= deer < e]
    assert tokenizer.decode(ids[: holders[0] + 1]).endswith("鹿")
    assert not tokenizer.decode(ids[: holders[0]]).endswith("鹿")
    assert spans[-1][0] == spans[-1][1] == len(text)  # EOS covers nothing
    covered = [c for s, e in spans for c in range(s, e)]
    assert covered == list(range(len(text)))
