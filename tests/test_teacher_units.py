"""Pure pieces of the teacher: retry decisions, answer validation, prompts, config, pricing."""

import asyncio
import json

import httpx
import pytest

from ares_data.errors import InvalidAnswer, QuotaError, RetryableError, TeacherError
from ares_data.teacher.client import TeacherClient, build_request, parse_reply, request_hash
from ares_data.teacher.config import Provider, StructuredOutput, TeacherConfig
from ares_data.teacher.pricing import cost, price
from ares_data.teacher.prompts import load, score_ask
from ares_data.teacher.ratelimit import RateLimiter
from ares_data.teacher.retry import (Decision, check_response, classify_status, is_retryable_exception, parse_duration,
                                     retry_after_seconds)
from ares_data.teacher.validation import parse_correction, parse_judgement, parse_scores


@pytest.mark.parametrize("status,body,decision", [
    (200, "", Decision.ok), (429, "slow down", Decision.retry), (500, "", Decision.retry),
    (503, "", Decision.retry), (408, "", Decision.retry),
    (400, "", Decision.permanent), (401, "", Decision.permanent), (403, "", Decision.permanent),
    (404, "", Decision.permanent), (429, '{"error": {"code": "insufficient_quota"}}', Decision.quota),
])
def test_classify_status(status, body, decision):
    assert classify_status(status, body) is decision


def test_retryable_exceptions():
    request = httpx.Request("POST", "http://x")
    assert is_retryable_exception(httpx.ReadTimeout("t", request=request))
    assert is_retryable_exception(httpx.ConnectError("refused", request=request))
    assert is_retryable_exception(httpx.RemoteProtocolError("dropped", request=request))
    assert is_retryable_exception(RetryableError("500"))
    assert not is_retryable_exception(TeacherError("401"))
    assert not is_retryable_exception(ValueError())


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10
    assert retry_after_seconds({}) is None and retry_after_seconds({"retry-after": "soon"}) is None
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02 and parse_duration("x1s") is None
    # not finite: no duration at all (a pause for ever would stall every collector of the account)
    assert retry_after_seconds({"retry-after": "inf"}) is None and parse_duration("nan") is None
    assert retry_after_seconds({"retry-after-ms": "inf", "retry-after": "2"}) == 2


def test_check_response_raises_the_right_error_and_redacts():
    def response(status, body="", headers=None):
        return httpx.Response(status, text=body, headers=headers or {}, request=httpx.Request("POST", "http://x"))

    with pytest.raises(RetryableError) as caught:
        check_response(response(429, "", {"retry-after": "2"}))
    assert caught.value.retry_after == 2
    with pytest.raises(QuotaError):
        check_response(response(429, '{"error": {"type": "insufficient_quota"}}'))
    with pytest.raises(TeacherError, match="HTTP 401") as caught:
        check_response(response(401, "bad key sk-secret"), lambda t: t.replace("sk-secret", "***"))
    assert "sk-secret" not in str(caught.value) and not isinstance(caught.value, RetryableError)


def test_client_retries_then_succeeds_on_mock_transport(monkeypatch):
    """Retry rules end to end over httpx.MockTransport: 503, then 429 with Retry-After, then 200."""
    replies = iter([httpx.Response(503), httpx.Response(429, headers={"retry-after": "0.2"}),
                    httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}],
                                              "usage": {"prompt_tokens": 5, "completion_tokens": 1}})])
    seen = []

    def handler(request):
        seen.append(request)
        return next(replies)

    config = TeacherConfig.from_options(base_url="http://127.0.0.1:9/v1", model="m", rpm=6000, max_attempts=4)

    async def go():
        async with TeacherClient(config, transport=httpx.MockTransport(handler)) as client:
            return await client.send({"messages": []})

    reply = asyncio.run(go())
    assert reply.text == "hi" and reply.attempts == 3 and reply.tokens_in == 5 and len(seen) == 3


def test_client_gives_up_on_401_at_once():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(401, json={"error": {"message": "no"}})

    config = TeacherConfig.from_options(base_url="http://127.0.0.1:9/v1", model="m", max_attempts=5)

    async def go():
        async with TeacherClient(config, transport=httpx.MockTransport(handler)) as client:
            await client.send({"messages": []})

    with pytest.raises(TeacherError, match="HTTP 401") as caught:
        asyncio.run(go())
    assert caught.value.permanent and len(calls) == 1


@pytest.mark.parametrize("text,expected", [
    ('{"scores": [0.5, 1.0, 0]}', [0.5, 1.0, 0.0]),
    ('Here you go:\n```json\n{"scores": [0.1, 0.2, 0.3]}\n```\nDone.', [0.1, 0.2, 0.3]),
    ('Sure! {"scores": [0.7, 0.8, 0.9]} hope that helps', [0.7, 0.8, 0.9]),
    ('Sentence [1] is right, [2] and [3] too. {"scores": [0.3, 0.4, 0.5]}', [0.3, 0.4, 0.5]),
    ('```json\n{"scores": [0.3, 0.4, 0.5]}\n```\nAgain: {"scores": [0.3, 0.4, 0.5]}', [0.3, 0.4, 0.5]),
])
def test_scores_parse_tolerantly(text, expected):
    assert parse_scores(text, 3) == expected


@pytest.mark.parametrize("text,code", [
    ('{"scores": [0.5, 1.0]}', "wrong_count"), ('{"scores": [0.5, 1.2, 0]}', "out_of_range"),
    ('{"scores": [0.5, 0.25, 0]}', "off_grid"), ('{"scores": [0.5, "x", 0]}', "not_number"),
    ("no json here", "not_json"), ('{"score": 1}', "no_scores"),
    ('Sure! {"scores": ["0.7", 0.8, 0.9]}', "not_number"),  # JSON numbers only
    ("Sentence [1] is fine, [0] is not, [1] again.", "no_scores"),  # brackets in prose are no answer
    ('{"scores": [0.1, 0.2, 0.3]} or rather {"scores": [0.3, 0.2, 0.1]}', "ambiguous"),
    ('{"scores": [true, 1, 0]}', "not_number"),
])
def test_scores_validate_strictly(text, code):
    with pytest.raises(InvalidAnswer) as caught:
        parse_scores(text, 3)
    assert caught.value.code == code


def test_corrections_and_judgements():
    assert parse_correction("  The fixed text.  ", "The text", ["Question: q"]) == "The fixed text."
    assert parse_correction("The text", "The text", ["Rationale to correct:\nThe text"]) == "The text"
    with pytest.raises(InvalidAnswer, match="empty"):
        parse_correction("  ", "orig", [])
    with pytest.raises(InvalidAnswer) as caught:
        parse_correction("Sure. Question: q Options: (A) x. Fixed.", "orig", ["Question: q\nOptions: (A) x"])
    assert caught.value.code == "echo"
    assert parse_judgement('{"winner": "b"}') == "B" and parse_judgement("tie") == "tie"
    with pytest.raises(InvalidAnswer):
        parse_judgement('{"winner": "C"}')


class _Q:
    id, question, choices, answer_index, hint, caption, image_path = 1, "Which?", ["x", "y"], 1, "hint", "", None


def test_score_prompt_puts_the_shared_part_first_and_fixes_the_schema():
    ask = score_ask(_Q(), ["One.", "Two.", "Three."])
    assert "numbered sentence" in ask.system
    assert ask.parts[0]["text"].startswith("Question: Which?") and "(B) y" in ask.parts[0]["text"]
    assert "[1] One.\n[2] Two.\n[3] Three." in ask.parts[1]["text"]
    items = ask.schema["properties"]["scores"]
    assert items["minItems"] == items["maxItems"] == 3 and items["items"]["enum"][1] == 0.1
    assert load("score_v1").version == load("score_v1").version and len(load("score_v1").version) == 16


def test_request_formats_and_hash(tmp_path):
    image = tmp_path / "q.png"
    image.write_bytes(b"\x89PNG fake")
    q = _Q()
    q.image_path = str(image)
    ask = score_ask(q, ["One."])
    openai = TeacherConfig.from_options(base_url="http://127.0.0.1:1/v1", model="m")
    body, stored = build_request(openai, ask)
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["response_format"]["json_schema"]["strict"] is True
    assert f"sha256:{ask.parts[0]['sha256']}" in json.dumps(stored)
    assert ask.parts[0]["data"] not in json.dumps(stored)
    anthropic = TeacherConfig.from_options(provider="anthropic", base_url="http://127.0.0.1:1", model="c")
    body_a, _ = build_request(anthropic, ask)
    assert body_a["system"] == ask.system and body_a["tool_choice"]["name"] == "sentence_scores"
    assert body_a["messages"][0]["content"][0]["source"]["type"] == "base64"
    none = TeacherConfig.from_options(base_url="http://127.0.0.1:1/v1", model="m", structured_output="none")
    assert "response_format" not in build_request(none, ask)[0]
    key = request_hash(openai, "score_v1", "v", stored)
    assert key == request_hash(openai, "score_v1", "v", stored) != request_hash(openai, "score_v1", "w", stored)
    assert parse_reply(Provider.anthropic, {"content": [{"type": "tool_use", "input": {"scores": [1]}}],
                                            "usage": {"input_tokens": 3, "output_tokens": 2}})[:3] == \
        ('{"scores": [1]}', 3, 2)


def test_config_resolution(monkeypatch, tmp_path):
    path = tmp_path / "teacher.yaml"
    path.write_text("model: from-file\nrpm: 60\nbase_url: http://file:1/v1\n")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:2/v1")
    config = TeacherConfig.from_options(path, rpm=None, concurrency=3)
    assert (config.model, config.rpm, config.concurrency, config.base_url) == ("from-file", 60, 3, "http://env:2/v1")
    assert TeacherConfig.from_options(path, base_url="http://flag:3/v1").base_url == "http://flag:3/v1"
    assert TeacherConfig.from_options(provider="anthropic").structured_output is StructuredOutput.tool
    path.write_text("api_key: sk-no\n")
    with pytest.raises(TeacherError, match="api_key_env"):
        TeacherConfig.from_options(path)
    with pytest.raises(TeacherError, match="OPENAI_API_KEY"):
        TeacherConfig.from_options(base_url="https://api.openai.com/v1").api_key()
    monkeypatch.setenv("MY_KEY", "sk-mine")
    config = TeacherConfig.from_options(api_key_env="MY_KEY", base_url="https://api.openai.com/v1")
    assert config.api_key() == "sk-mine" and "sk-mine" not in json.dumps(config.describe())


def test_prices():
    assert price("gpt-4o-mini-2024-07-18") == (0.15, 0.60) and price("gpt-4o") == (2.5, 10.0)
    assert price("unknown") == (0, 0) and price("gpt-4o", 1.0, None) == (1.0, 10.0)
    assert cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(3.5)


def test_rate_limiter_spaces_requests_and_honours_a_pause():
    async def go():
        limiter = RateLimiter(rpm=600, concurrency=8)
        loop = asyncio.get_running_loop()
        times = []

        async def one():
            async with limiter.slot():
                times.append(loop.time())

        await asyncio.gather(*(one() for _ in range(6)))
        # The schedule is absolute: a late wake-up shortens the next gap, never the distance from the start.
        offsets = [t - times[0] - i * 0.1 for i, t in enumerate(times)]
        await limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"})
        before = loop.time()
        await one()
        return offsets, times[-1] - before

    offsets, after_pause = asyncio.run(go())
    assert min(offsets) >= -0.01
    assert after_pause >= 0.25


def test_token_limit_counts_before_sending_and_corrects_by_usage():
    async def go():
        limiter = RateLimiter(rpm=60_000, tpm=60_000, concurrency=4)  # 1,000 tokens/s, one minute's bucket
        loop = asyncio.get_running_loop()
        async with limiter.slot(tokens=60_000):
            pass
        limiter.correct(reserved=60_000, actual=60_200)  # the server counted 200 more
        start = loop.time()
        async with limiter.slot(tokens=100):
            pass
        return loop.time() - start

    assert 0.25 <= asyncio.run(go()) < 1.0  # 300 tokens short at 1,000/s


def test_a_rejected_dialect_names_the_flag_to_change():
    from ares_data.teacher.client import dialect_hint
    from ares_data.teacher.config import StructuredOutput

    body = {"messages": [], "response_format": {"type": "json_schema"}}
    hint = dialect_hint(422, body, StructuredOutput.json_schema)
    assert "--structured-output" in hint and "json_object" in hint and "json_schema)" in hint
    assert dialect_hint(500, body, StructuredOutput.json_schema) is None  # a server error is retried instead
    assert dialect_hint(400, {"messages": []}, StructuredOutput.none) is None  # nothing structured was asked

    def handler(request):  # llama.cpp's server refuses a json_schema response_format with 422
        return httpx.Response(422, json={"detail": [{"msg": "Input should be 'text' or 'json_object'"}]})

    config = TeacherConfig.from_options(base_url="http://127.0.0.1:9/v1", model="m", max_attempts=5)

    async def go():
        async with TeacherClient(config, transport=httpx.MockTransport(handler)) as client:
            await client.send(body)

    with pytest.raises(TeacherError, match="try --structured-output") as caught:
        asyncio.run(go())
    assert caught.value.permanent and caught.value.attempts == 1
