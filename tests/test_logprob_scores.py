"""Probability-weighted scores (`--score-from logprobs`): the weighting rule on real-looking
llama.cpp / OpenAI payloads, the fake teacher's known distribution over loopback HTTP, and
exports with `--reward expected`."""

import asyncio
import json
import math

import pytest
from sqlmodel import select

from ares_data.errors import TeacherError
from ares_data.exporters import export_rl, read_shard
from ares_data.fake_answers import sentence_score
from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import Question, Rationale, Sentence, SentenceScore, TeacherCall
from ares_data.teacher import TeacherConfig, collect_scores
from ares_data.teacher.client import build_request
from ares_data.teacher.logprobs import distribution, expectations, expected, score_positions
from ares_data.teacher.prompts import score_ask

from teacher_support import add_rationales


def entry(token, p, *others):
    """One `logprobs.content` item: the sampled token with probability p, and other candidates."""
    top = [(token, p), *others]
    return {"token": token, "logprob": math.log(p), "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": math.log(q), "bytes": list(t.encode())} for t, q in top]}


def certain(*tokens):
    return [entry(t, 1.0) for t in tokens]


def weighted(text, content):
    return expectations(text, score_positions(text, content))


def test_digit_by_digit_tokens_weight_the_leading_and_the_tenths_digit():
    # llama.cpp (SmolLM2) writes `0.3` as "0" "." "3": p(0)=0.8, p(1)=0.2; after "0.": p(3)=0.5, p(4)=0.5
    text = '{"scores": [0.3]}'
    content = [*certain('{"', 'scores', '":', ' ['), entry("0", 0.8, ("1", 0.2)), entry(".", 1.0),
               entry("3", 0.5, ("4", 0.5)), *certain("]}")]
    [(path, (value, dist, mass))] = weighted(text, content).items()
    assert path == ("scores", 0)
    assert dist == pytest.approx({"0.3": 0.4, "0.4": 0.4, "1.0": 0.2})
    assert value == pytest.approx(0.3 * 0.4 + 0.4 * 0.4 + 0.2) and mass == pytest.approx(1.0)


def test_a_bare_zero_ends_the_number_and_scores_zero():
    # "0" then "," (the number ends: 0.0) or "." (the tenths follow, unobserved): only 0.0 and 1.0 are seen
    text = "[0, 1.0]"
    content = [entry("[", 1.0), entry("0", 0.7, ("1", 0.3)), entry(",", 0.9, (".", 0.1)), entry(" ", 1.0),
               entry("1", 0.6, ("0", 0.4)), entry(".", 1.0), entry("0", 1.0), entry("]", 1.0)]
    found = weighted(text, content)
    assert found[(0,)][1] == pytest.approx({"0.0": 0.63 / 0.93, "1.0": 0.3 / 0.93})
    assert found[(0,)][2] == pytest.approx(0.93)  # the unobserved `0.` branch
    # The sampled 1.0: its `0` branch was never scored, so only what the leading digit decided is
    # left, and the mass covered says so (0.6, not 1.0): the bias whole points avoid.
    assert found[(1,)] == (1.0, {"1.0": 1.0}, pytest.approx(0.6))


def test_one_token_per_number_with_a_leading_space_and_invalid_candidates_left_out():
    # OpenAI-style: " 0.9" is one token; "1.1" and "ok" are no valid scores, "0.8" without the space another path
    text = '{"R1": [ 0.9], "R2": [1.0]}'
    content = [*certain('{"', "R", "1", '":', " ["), entry(" 0.9", 0.5, (" 1.0", 0.3), (" 1.1", 0.1), (" ok", 0.05),
                                                               ("0.8", 0.05)),
               *certain('],', ' "', "R", "2", '":', " ["), entry("1.0", 0.9, ("0.5", 0.1)), *certain("]}")]
    found = weighted(text, content)
    assert set(found) == {("R1", 0), ("R2", 0)}  # the digits of the labels are not scores
    assert found[("R1", 0)][1] == pytest.approx({"0.9": 0.5 / 0.8, "1.0": 0.3 / 0.8})
    assert found[("R2", 0)][0] == pytest.approx(0.9 * 1.0 + 0.1 * 0.5)


def test_whole_points_are_one_token_each_and_cover_every_branch():
    # OpenAI-style tokens for points: "7" p 0.6, "8" p 0.3, "10" p 0.05, "12" (no score) p 0.05
    text = '{"scores": [7, 10]}'
    content = [*certain('{"', "scores", '":', " ["), entry("7", 0.6, ("8", 0.3), ("10", 0.05), ("12", 0.05)),
               entry(",", 1.0), entry(" ", 1.0), entry("10", 0.55, ("0", 0.45)), *certain("]}")]
    found = expectations(text, score_positions(text, content), points=True)
    value, dist, mass = found[("scores", 0)]
    assert dist == pytest.approx({"0.7": 0.6 / 0.95, "0.8": 0.3 / 0.95, "1.0": 0.05 / 0.95}) and mass == 0.95
    # p(10)=0.55 beside p(0)=0.45: the expected score is 0.55, where a digit-by-digit 1.0 gave 1.0
    assert found[("scores", 1)][0] == pytest.approx(0.55) and found[("scores", 1)][2] == pytest.approx(1.0)


def test_digit_by_digit_points_follow_a_sampled_one_to_the_next_digit():
    # "1" then "0" (10) or "," (1): both observed when "1" is sampled; an unsampled "1" is one point
    text = "[1, 3]"
    content = [entry("[", 1.0), entry("1", 0.5, ("2", 0.5)), entry(",", 0.4, ("0", 0.6)), entry(" ", 1.0),
               entry("3", 0.7, ("1", 0.3)), entry("]", 1.0)]
    found = expectations(text, score_positions(text, content), points=True)
    assert found[(0,)][1] == pytest.approx({"0.1": 0.2, "0.2": 0.5, "1.0": 0.3}) and found[(0,)][2] == 1.0
    assert found[(1,)][1] == pytest.approx({"0.1": 0.3, "0.3": 0.7}) and found[(1,)][2] == pytest.approx(1.0)


def test_tokens_that_do_not_spell_the_answer_give_nothing():
    assert score_positions('{"scores": [0.5]}', certain('{"scores": [0.4]}')) is None
    assert score_positions('{"scores": [0.5]}', None) is None
    assert weighted("[0.5, 0.5]", certain("[0.5]")) == {}
    assert distribution([[0, "x", {"x": 0.0}]]) is None


def test_llama_cpp_payload_parses(tmp_path):
    """A chat completion as llama-cpp-python's server returns it (logprobs.content with bytes)."""
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": '{"scores":[1.0,0.5]}'},
                          "logprobs": {"content": [
                              *certain('{"', "scores", '":['), entry("1", 0.9, ("0", 0.1)), entry(".", 1.0),
                              entry("0", 1.0), entry(",", 1.0), entry("0", 1.0), entry(".", 1.0),
                              entry("5", 0.5, ("6", 0.25), ("4", 0.25)), *certain("]}")]},
                          "finish_reason": "stop"}]}
    from ares_data.teacher.logprobs import logprob_content

    text = reply["choices"][0]["message"]["content"]
    found = weighted(text, logprob_content(reply["choices"][0]))
    assert found[("scores", 0)][0] == 1.0 and found[("scores", 1)][0] == pytest.approx(0.5)


def test_score_calls_ask_for_logprobs_only_with_score_from_logprobs():
    question = Question(dataset="t", source_id="1", split="train", question="Q?", choices=["a", "b"])
    ask = score_ask(question, ["One."])
    config = TeacherConfig.from_options(base_url="http://127.0.0.1:1/v1", model="m", score_from="logprobs")
    body, stored = build_request(config, ask, logprobs=True)
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and stored["top_logprobs"] == 20
    assert "logprobs" not in build_request(config, ask)[0]
    with pytest.raises(TeacherError, match="--score-from sampled"):
        TeacherConfig.from_options(provider="anthropic", score_from="logprobs")


def fake_expected(score):
    """The fake's distribution: score p 0.6, +0.1 p 0.3, -0.1 p 0.1, renormalised over the grid."""
    pairs = [(round(score + step, 1), p) for step, p in ((0.0, 0.6), (0.1, 0.3), (-0.1, 0.1))]
    valid = [(v, p) for v, p in pairs if 0.0 <= v <= 1.0]
    return sum(v * p for v, p in valid) / sum(p for _, p in valid)


def teacher(url, **options):
    return TeacherConfig.from_options(base_url=url, model="fake", **{"rpm": 6000, "timeout": 5, **options})


@pytest.mark.both_backends
@pytest.mark.parametrize("grouped", [False, True], ids=["single", "grouped"])
def test_collect_scores_stores_expected_scores_from_the_fake(store, grouped):
    add_rationales(store, 4)
    with serve_in_thread() as url:
        summary = asyncio.run(collect_scores(store, teacher(url, score_from="logprobs"), round=1,
                                             group_by_question=grouped))
    assert summary.done == 4
    with store.session() as s:
        rows = s.exec(select(Sentence, SentenceScore).join(SentenceScore)).all()
        calls = s.exec(select(TeacherCall)).all()
    assert rows and all(c.request["top_logprobs"] == 20 and c.score_logprobs for c in calls)
    assert {c.prompt_name for c in calls} == {"score_group_points_v1" if grouped else "score_points_v1"}
    for sentence, row in rows:
        sampled = sentence_score(" ".join(sentence.text.split()))
        assert row.score == sampled
        assert row.expected_score == pytest.approx(fake_expected(sampled))
        assert sum(row.score_distribution.values()) == pytest.approx(1.0)
        assert row.score_distribution[f"{sampled:.1f}"] > 0.5
        assert row.score_mass == pytest.approx(1.0 if 0.0 < sampled < 1.0 else 0.9)  # -1 or 11: no score


def test_sampled_calls_store_no_expected_scores(store):
    add_rationales(store, 2)
    with serve_in_thread() as url:
        asyncio.run(collect_scores(store, teacher(url), round=1))
    with store.session() as s:
        rows = s.exec(select(SentenceScore)).all()
        calls = s.exec(select(TeacherCall)).all()
    assert rows and all(r.expected_score is None and r.score_distribution is None for r in rows)
    assert all("logprobs" not in c.request and c.score_logprobs is None for c in calls)


def test_a_reused_answer_brings_its_expected_scores(store):
    """Two identical rationales share one request: the second is answered from the stored call."""
    ids = add_rationales(store, 1)
    with store.session() as s:
        first = s.get(Rationale, ids[0])
        store.add_rationale(s, question_id=first.question_id, source="student", text=first.text, dedup_key="twin",
                            round=1, sample_index=1)
    with serve_in_thread() as url:
        summary = asyncio.run(collect_scores(store, teacher(url, score_from="logprobs", concurrency=1), round=1))
    assert (summary.calls, summary.reused) == (1, 1)
    with store.session() as s:
        rows = s.exec(select(SentenceScore)).all()
    assert len(rows) == 2 * 5 and all(r.expected_score is not None for r in rows)


@pytest.mark.both_backends
def test_export_with_reward_expected_uses_the_expected_scores(store, cli, tmp_path):
    add_rationales(store, 2)
    with serve_in_thread() as url:
        asyncio.run(collect_scores(store, teacher(url, score_from="logprobs"), round=1))
    sampled = read_shard(export_rl(store, 1, tmp_path / "sampled").path)
    result = cli("export", "rl", "--round", "1", "--reward", "expected", "--out", tmp_path / "expected")
    assert result.exit_code == 0, result.output
    weighted_rows = read_shard(tmp_path / "expected")
    assert [r["scores"] for r in weighted_rows] == [[pytest.approx(fake_expected(s)) for s in r["scores"]]
                                                    for r in sampled]
    manifest = json.loads((tmp_path / "expected" / "manifest.json").read_text())
    assert manifest["reward"] == "expected"
    assert json.loads((tmp_path / "sampled" / "manifest.json").read_text())["reward"] == "sampled"


def test_reward_expected_skips_rollouts_scored_without_logprobs(store, feedback, tmp_path):
    from ares_data.errors import ExportError

    question = feedback.question(1)
    feedback.score(feedback.rollout(question, "Two is even. The answer is (A)."), [1.0, 1.0])
    assert read_shard(export_rl(store, 1, tmp_path / "s").path)[0]["scores"] == [1.0, 1.0]
    with pytest.raises(ExportError, match="1 no_expected_score"):
        export_rl(store, 1, tmp_path / "e", reward="expected")


def test_expected_is_the_mean_of_the_distribution():
    assert expected({"0.2": 0.5, "0.4": 0.5}) == pytest.approx(0.3)
