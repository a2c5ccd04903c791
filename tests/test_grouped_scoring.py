"""Grouped scoring (`--group-by-question`), prompt-cache accounting and cached-input prices."""

import asyncio
import json
import os

import httpx
import pytest
from sqlmodel import select

from ares_data.errors import InvalidAnswer, PartlyInvalid
from ares_data.fake_answers import sentence_score
from ares_data.fake_teacher import serve_in_thread
from ares_data.tables import Sentence, SentenceScore, TeacherCall, TeacherCallRationale
from ares_data.teacher import TeacherConfig, collect_scores
from ares_data.teacher.client import TeacherClient, build_request, parse_reply
from ares_data.teacher.config import Provider
from ares_data.teacher.grouped import group_ask, parse_group
from ares_data.teacher.pricing import PrefixCache, cost, prompt_text, rates

from teacher_support import add_rationales


def teacher(url, **options):
    return TeacherConfig.from_options(base_url=url, model="fake", **{"rpm": 6000, "timeout": 2, **options})


@pytest.mark.both_backends
def test_one_call_per_question_scores_every_sentence_and_links_each_rationale(store):
    add_rationales(store, 8)  # 4 questions, 2 rationales each
    with serve_in_thread() as url:
        summary = asyncio.run(collect_scores(store, teacher(url), round=1, group_by_question=True))
        assert (summary.selected, summary.done, summary.calls) == (8, 8, 4)
        again = asyncio.run(collect_scores(store, teacher(url), round=1, group_by_question=True))
        assert (again.selected, again.calls) == (0, 0)
    with store.session() as s:
        calls = s.exec(select(TeacherCall).order_by(TeacherCall.id)).all()
        links = s.exec(select(TeacherCallRationale)).all()
        scored = s.exec(select(Sentence, SentenceScore).join(SentenceScore)).all()
        total = len(s.exec(select(Sentence.id)).all())
    assert [c.prompt_name for c in calls] == ["score_group_v1"] * 4 and all(c.rationale_id is None for c in calls)
    assert len(links) == 8 and len({link.rationale_id for link in links}) == 8
    assert len(scored) == total and all(score.score == sentence_score(" ".join(sentence.text.split()))
                                        for sentence, score in scored)
    by_call = {link.rationale_id: link.teacher_call_id for link in links}
    assert all(by_call[sentence.rationale_id] == score.teacher_call_id for sentence, score in scored)
    # Calls after the first the fake served share the instructions with it: reported as cached. Rows
    # are stored in the order answers arrive, not the order the fake served them.
    first, *later = sorted(calls, key=lambda c: c.cached_tokens_in)
    assert first.cached_tokens_in == 0 and all(0 < c.cached_tokens_in < c.tokens_in for c in later)
    assert summary.cached_tokens_in == sum(c.cached_tokens_in for c in calls)


def test_single_calls_of_one_question_hit_the_cache_on_the_shared_head(store):
    add_rationales(store, 2)  # one question, two rationales
    with serve_in_thread() as url:
        asyncio.run(collect_scores(store, teacher(url, concurrency=1), round=1))
    with store.session() as s:
        first, second = s.exec(select(TeacherCall).order_by(TeacherCall.id)).all()
    shared = os.path.commonprefix([prompt_text(first.request), prompt_text(second.request)])
    assert first.cached_tokens_in == 0 and second.cached_tokens_in == len(shared) // 512 * 128 > 0


def test_a_bad_list_re_asks_only_that_rationale(store):
    add_rationales(store, 2)
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        counts = body["response_format"]["json_schema"]["schema"]["properties"]
        lists = {label: [0.5] * counts[label]["maxItems"] for label in ("R1", "R2")}
        if len(bodies) == 1:
            lists["R2"] = lists["R2"] + [0.5]  # one score too many: R1 is usable, R2 is not
        else:
            lists = {"R2": [1.0] * (len(lists["R2"]))}
        content = json.dumps(lists)
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}],
                                         "usage": {"prompt_tokens": 100, "completion_tokens": 10}})

    config = teacher("http://127.0.0.1:9/v1")
    client = TeacherClient(config, transport=httpx.MockTransport(handler))
    summary = asyncio.run(collect_scores(store, config, round=1, group_by_question=True,
                                         client=client))
    assert (summary.done, summary.calls, dict(summary.failed)) == (2, 2, {})
    repair = bodies[1]["messages"][-1]["content"]
    assert "R2 (" in repair and "R1" not in repair and "R2: expected" in repair
    with store.session() as s:
        first, second = s.exec(select(TeacherCall).order_by(TeacherCall.id)).all()
        links = {(link.teacher_call_id, link.rationale_id) for link in s.exec(select(TeacherCallRationale))}
        scores = s.exec(select(Sentence, SentenceScore).join(SentenceScore)).all()
    assert (first.status, second.status, second.repair_of_id) == ("invalid", "ok", first.id)
    r1, r2 = sorted({sentence.rationale_id for sentence, _ in scores})
    assert links == {(first.id, r1), (first.id, r2), (second.id, r2)}
    assert {(sentence.rationale_id, score.teacher_call_id, score.score) for sentence, score in scores} == \
        {(r1, first.id, 0.5), (r2, second.id, 1.0)}


def test_parse_group_checks_each_list_like_a_single_answer():
    wanted = {"R1": 2, "R2": 1}
    assert parse_group('```json\n{"R1": [0.1, 1], "R2": {"scores": [0.5]}, "R9": [7]}\n```', wanted) == \
        {"R1": [0.1, 1.0], "R2": [0.5]}
    with pytest.raises(PartlyInvalid) as bad:
        parse_group('{"R1": [0.1, 0.25], "R2": [0.5]}', wanted)
    assert bad.value.code == "off_grid" and bad.value.valid == {"R2": [0.5]} and str(bad.value).startswith("R1:")
    with pytest.raises(PartlyInvalid) as missing:
        parse_group('{"R1": [0.1, 0.2]}', wanted)
    assert missing.value.valid == {"R1": [0.1, 0.2]} and "R2: no score list" in str(missing.value)
    with pytest.raises(InvalidAnswer):
        parse_group("[0.1]", wanted)


def test_group_ask_puts_the_shared_head_first_and_counts_each_list():
    class Q:
        question, choices, answer_index, hint, caption, image_path = "Q?", ["a", "b"], 0, "", "", None

    ask = group_ask(Q(), [["One.", "Two."], ["Three."]])
    assert ask.parts[0]["text"].startswith("Question: Q?") and "Rationale R2, " in ask.parts[-1]["text"]
    assert [ask.schema["properties"][r]["maxItems"] for r in ("R1", "R2")] == [2, 1]
    anthropic = TeacherConfig.from_options(provider="anthropic", base_url="http://127.0.0.1:1", model="c")
    body, _ = build_request(anthropic, ask)
    content = body["messages"][0]["content"]
    assert content[0]["cache_control"] == {"type": "ephemeral"} and "cache_control" not in content[-1]


def test_anthropic_usage_counts_cache_reads_and_writes_as_input():
    data = {"content": [{"type": "text", "text": "{}"}],
            "usage": {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 1000,
                      "cache_creation_input_tokens": 300}}
    assert parse_reply(Provider.anthropic, data)[1:] == (1310, 2, 1000)
    openai = {"choices": [{"message": {"content": "x"}}],
              "usage": {"prompt_tokens": 1200, "completion_tokens": 3,
                        "prompt_tokens_details": {"cached_tokens": 1024}}}
    assert parse_reply(Provider.openai, openai)[1:] == (1200, 3, 1024)


def test_cached_input_is_priced_at_the_cached_rate():
    assert rates("gpt-4o-mini-2024-07-18").cached == 0.075
    full = cost("gpt-4o-mini", 2000, 100)
    assert cost("gpt-4o-mini", 2000, 100, cached_in=1000) == pytest.approx(full - 1000 * 0.075 / 1e6)
    haiku = rates("claude-3-5-haiku-latest")
    assert (haiku.cached, haiku.cache_write) == pytest.approx((0.08, 1.0))
    assert cost("claude-3-5-haiku", 1300, 0, cached_in=1000, cache_write_in=300) == pytest.approx(
        (1000 * 0.08 + 300 * 1.0) / 1e6)
    assert rates("gpt-4o", price_in=5.0).cached == 2.5 and rates("local", price_in=1.0).cached == 1.0


def test_prefix_cache_counts_only_heads_sent_before_and_long_enough():
    def body(question, rationale):
        return {"messages": [{"role": "system", "content": "S" * 6000},
                             {"role": "user", "content": [{"type": "text", "text": question},
                                                          {"type": "text", "text": rationale}]}]}

    cache = PrefixCache(min_tokens=1024)
    assert cache.read(body("q1", "a")) == 0
    second = cache.read(body("q1", "b"))
    assert 1000 < second <= cache.read(body("q1", "a"))  # the whole request was sent before
    assert second % 128 == 0  # whole 128-token chunks, as OpenAI caches them
    assert PrefixCache(min_tokens=2000).read(body("q", "a")) == 0
    short = PrefixCache(min_tokens=2000)
    short.read(body("q", "a"))
    assert short.read(body("q", "b")) == 0  # a 1,000-token head is below this provider's minimum
