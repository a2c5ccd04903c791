"""The async teacher client: provider request formats, limits, retries, usage.

Two wire protocols: OpenAI chat completions (OpenAI, Azure, vLLM, SGLang, Ollama, llama.cpp,
LiteLLM, `transformers serve`) and the Anthropic Messages API. `build_request` turns an `Ask`
into the body sent and the body stored (the same, with image data replaced by its sha256);
`request_hash` of the stored body is the call's idempotency key. The key is read from its env
var here and nowhere else, sent in a header, and scrubbed from every error message.
Reasoning models (OpenAI o-series, gpt-5; `TeacherConfig.is_reasoning`) get
`max_completion_tokens` and no `temperature`, which they refuse. Every HTTP attempt, failed or
not, is kept as an `Attempt` (outcome, status, request id, model snapshot, usage) for the
store's `teacher_attempt` audit table.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from ..enums import AttemptOutcome
from ..errors import CallFailed, RequestRejected, RetryableError, TeacherError
from ..tables import utcnow
from .config import Provider, StructuredOutput, TeacherConfig
from .logprobs import logprob_content
from .pricing import estimate_tokens
from .prompts import Ask
from .ratelimit import LocalBucket, RateLimiter, StoreBucket, account_key
from .retry import brief, check_response, rejection, retrying

ANTHROPIC_VERSION = "2023-06-01"
TOP_LOGPROBS = 20  # OpenAI's most: enough for every value 0-10 (logprobs.py)


@dataclass
class Attempt:
    """One HTTP attempt and what it came to (`AttemptOutcome`)."""

    number: int
    outcome: AttemptOutcome
    started_at: datetime
    http_status: int | None = None
    error: str | None = None
    request_id: str | None = None
    model_snapshot: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens_in: int | None = None
    cache_write_tokens_in: int | None = None
    latency_ms: float | None = None


# sent, possibly answered and billed, usage unknown
MAYBE_BILLED = (AttemptOutcome.timeout, AttemptOutcome.network, AttemptOutcome.unreadable)


@dataclass
class Reply:
    text: str
    tokens_in: int | None
    tokens_out: int | None
    cached_tokens_in: int | None
    attempts: int
    latency_ms: float
    cache_write_tokens_in: int | None = None
    logprobs: list[dict[str, Any]] | None = None  # choices[0].logprobs.content, when asked for
    reasoning_tokens: int | None = None  # part of tokens_out
    request_id: str | None = None
    model_snapshot: str | None = None  # the `model` the provider says answered (e.g. gpt-4o-mini-2024-07-18)
    log: list[Attempt] = field(default_factory=list)
    finish_reason: str | None = None  # why the answer ended: stop, length, content_filter, refusal...
    refusal: str | None = None  # the model's refusal text (OpenAI `message.refusal`)


class StillAnswering(Exception):
    """A reasoning model's read timeout: the answer may still come, and be billed, so the call
    is not retried now (tenacity does not retry it); the next run asks again."""


CUT = {"length", "max_tokens"}  # finish/stop reasons of an answer cut at the token budget
REFUSED = {"content_filter", "refusal"}


def ending(provider: Provider, data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(finish reason, refusal text) of a provider's JSON reply."""
    if provider is Provider.anthropic:
        return data.get("stop_reason"), None
    choice = (data.get("choices") or [{}])[0]
    return choice.get("finish_reason"), (choice.get("message") or {}).get("refusal")



def _openai_content(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "image":
        return {"type": "image_url", "image_url": {"url": f"data:{part['media_type']};base64,{part['data']}"}}
    return part


def _anthropic_content(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "image":
        return {"type": "image", "source": {"type": "base64", "media_type": part["media_type"], "data": part["data"]}}
    return part


def build_request(config: TeacherConfig, ask: Ask, logprobs: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(body to send, body to store and hash) in the provider's format; `logprobs` asks an
    OpenAI-format server for the top token logprobs (teacher/logprobs.py)."""
    anthropic = config.provider is Provider.anthropic
    content = [(_anthropic_content if anthropic else _openai_content)(p) for p in ask.parts]
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    for answer, repair in ask.turns:
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": repair}]
    body: dict[str, Any] = {"model": config.model, "max_tokens": max(config.max_tokens, ask.max_tokens or 0),
                            "temperature": config.temperature}
    if config.is_reasoning() and not anthropic:
        body = {"model": config.model, "max_completion_tokens": max(config.max_tokens, ask.max_tokens or 0)}
    if anthropic:
        if len(content) > 1:  # cache system + shared head; the last part is what this call alone asks
            content[-2] = {**content[-2], "cache_control": {"type": "ephemeral"}}
        body.update(system=ask.system, messages=messages)
    else:
        if all(p["type"] == "text" for p in ask.parts):  # plain text: what every chat template can render
            messages[0]["content"] = "\n".join(p["text"] for p in ask.parts)
        body["messages"] = [{"role": "system", "content": ask.system}, *messages]
    if ask.schema is not None:
        body.update(_structured(config.structured_output, ask))
    if logprobs and not anthropic:
        body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
    return body, stored_body(body)


def _structured(dialect: StructuredOutput, ask: Ask) -> dict[str, Any]:
    if dialect is StructuredOutput.json_schema:
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": ask.schema_name, "schema": ask.schema, "strict": True}}}
    if dialect is StructuredOutput.json_object:
        return {"response_format": {"type": "json_object", "schema": ask.schema}}
    if dialect is StructuredOutput.tool:
        return {"tools": [{"name": ask.schema_name, "description": "Submit the answer.", "input_schema": ask.schema}],
                "tool_choice": {"type": "tool", "name": ask.schema_name}}
    return {}


STRUCTURED = {"response_format", "tools", "tool_choice", "json_schema"}
FLAGS = {"logprobs": "--score-from sampled", "top_logprobs": "--score-from sampled", "temperature": "--temperature",
         "max_tokens": "--max-tokens", "model": "--model"}


def dialect_hint(status: int, body: dict[str, Any], dialect: StructuredOutput, detail: str = "",
                 param: str | None = None) -> str | None:
    """A rejected request names the flag to change: --reasoning when the server refused the
    length or temperature parameter, else --structured-output when structured output was asked
    (and the server named no other parameter as `param`)."""
    if status not in (400, 422):
        return None
    if ("max_tokens" in detail and "max_tokens" in body) or ("temperature" in detail and "temperature" in body):
        return (f"the server refused max_tokens/temperature ({brief(detail, 160)}); "
                "if the model is a reasoning model, add --reasoning")
    if not (STRUCTURED & body.keys()):
        return None
    if param is not None and param.split(".")[0] not in STRUCTURED:
        return None
    others = ", ".join(d.value for d in StructuredOutput if d is not dialect)
    return (f"the server rejected the structured-output request ({dialect.value}); "
            f"try --structured-output with one of: {others}")


def format_hint(status: int, body: dict[str, Any], dialect: StructuredOutput, param: str | None,
                detail: str = "") -> str:
    """What to change when the server refused the request's format, naming its parameter."""
    known = dialect_hint(status, body, dialect, detail, param)
    if known:
        return known
    if param is None:
        return "the server refused the request's format (it names no parameter); check the teacher flags"
    name = param.split(".")[0]
    flag = f" (set by {FLAGS[name]})" if name in FLAGS else ""
    return f"the server does not accept the parameter {name!r}{flag}"


def stored_body(body: dict[str, Any]) -> dict[str, Any]:
    """The body as stored and hashed: each inline image's base64 data replaced by `sha256:` and
    the digest of its bytes (OpenAI data URLs and Anthropic base64 sources alike)."""
    if not any(isinstance(m.get("content"), list) for m in body.get("messages", [])):
        return body

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") == "image_url" and str(node["image_url"]["url"]).startswith("data:"):
                head, data = node["image_url"]["url"].split(",", 1)
                return {**node, "image_url": {**node["image_url"], "url": f"{head},{_digest(data)}"}}
            if node.get("type") == "base64" and "data" in node:
                return {**node, "data": _digest(node["data"])}
            return {k: strip(v) for k, v in node.items()}
        return [strip(v) for v in node] if isinstance(node, list) else node

    return strip(body)


def _digest(data: str) -> str:
    return "sha256:" + hashlib.sha256(base64.b64decode(data)).hexdigest()


def request_hash(config: TeacherConfig, prompt_name: str, prompt_version: str, stored: dict[str, Any]) -> str:
    key = {"provider": config.provider.value, "prompt": prompt_name, "version": prompt_version,
           "body": stored}
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def parse_reply(provider: Provider, data: dict[str, Any]) -> tuple[str, int | None, int | None, int | None]:
    """(text, tokens in, tokens out, cached tokens in) from a provider's JSON reply."""
    usage = data.get("usage") or {}
    if provider is Provider.anthropic:
        blocks = data["content"]
        tool = [b["input"] for b in blocks if b.get("type") == "tool_use"]
        text = json.dumps(tool[0]) if tool else "".join(b.get("text", "") for b in blocks)
        # Anthropic's input_tokens leaves out the cached ones; tokens_in counts every input token.
        tokens_in = usage.get("input_tokens")
        if tokens_in is not None:
            tokens_in += (usage.get("cache_read_input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0)
        return text, tokens_in, usage.get("output_tokens"), usage.get("cache_read_input_tokens")
    message = data["choices"][0]["message"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    return message.get("content") or "", usage.get("prompt_tokens"), usage.get("completion_tokens"), cached


def reasoning_tokens(data: dict[str, Any]) -> int | None:
    """The reasoning part of the output tokens (OpenAI reports it; Anthropic counts thinking in
    output_tokens without a split)."""
    details = (data.get("usage") or {}).get("completion_tokens_details") or {}
    value = details.get("reasoning_tokens")
    return value if isinstance(value, int) else None


def request_id(headers: httpx.Headers) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


def max_out(body: dict[str, Any], default: int) -> int:
    """The answer length a request allows, whichever name it uses."""
    return int(body.get("max_completion_tokens") or body.get("max_tokens") or default)


def _outcome(exc: BaseException) -> AttemptOutcome:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.WriteTimeout, httpx.WriteError,
                        httpx.PoolTimeout)):
        return AttemptOutcome.not_sent
    if isinstance(exc, httpx.TimeoutException):
        return AttemptOutcome.timeout
    return AttemptOutcome.network


class TeacherClient:
    """One connection pool and one set of limits, shared by every call of a run."""

    def __init__(self, config: TeacherConfig, transport: httpx.AsyncBaseTransport | None = None,
                 store: Any = None):
        """`store`: share the account's limits with every collector on it (teacher_rate_bucket)."""
        self.config = config
        self._key = config.api_key()
        account = account_key(config.provider.value, config.base_url, config.model, self._key)
        bucket = StoreBucket(store, account) if store is not None else LocalBucket()
        self.limiter = RateLimiter(config.rpm, config.tpm, config.concurrency, bucket, max_pause=config.max_retry_after)
        headers = {"content-type": "application/json"}
        if config.provider is Provider.anthropic:
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if self._key:
                headers["x-api-key"] = self._key
            self._path = "/v1/messages" if not config.base_url.endswith("/v1") else "/messages"
        else:
            if self._key:
                headers["authorization"] = f"Bearer {self._key}"
            self._path = "/chat/completions"
        limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
        timeout = httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout(),
                                write=config.write_timeout, pool=None)
        self._http = httpx.AsyncClient(base_url=config.base_url, headers=headers, timeout=timeout,
                                       limits=limits, transport=transport)

    async def __aenter__(self) -> "TeacherClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.limiter.release()
        await self._http.aclose()

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _reservation(self, body: dict[str, Any]) -> int:
        """Tokens a request counts against the limit before its usage is known: OpenAI counts the
        prompt + max tokens; Anthropic's input-token limit the prompt only (output has its own)."""
        prompt = estimate_tokens(body)
        return prompt if self.config.provider is Provider.anthropic else prompt + max_out(body, self.config.max_tokens)

    def _counted(self, tokens_in: int, tokens_out: int | None, cached: int | None) -> int:
        """Tokens an answer counted against the limit: Anthropic's input-token limit leaves out
        cache reads (and output); OpenAI counts prompt and answer."""
        if self.config.provider is Provider.anthropic:
            return tokens_in - (cached or 0)
        return tokens_in + (tokens_out or 0)

    async def send(self, body: dict[str, Any]) -> Reply:
        """POST `body` within the limits, retrying what is worth retrying; raises CallFailed.
        Each attempt reserves its tokens; an attempt answered 429 or 5xx gives them back, an
        answered one is corrected by its usage. A reasoning model's read timeout is not retried:
        the provider may still be answering, and billing, the request (`StillAnswering`)."""
        reserved = self._reservation(body)
        log: list[Attempt] = []
        try:
            async for attempt in retrying(self.config.max_attempts, retry_after_cap=self.config.max_retry_after):
                with attempt:
                    return await self._attempt(body, reserved, log)
        except (RetryableError, httpx.HTTPError, StillAnswering) as exc:
            raise CallFailed(self._describe(exc), len(log), permanent=False, log=log) from None
        except RequestRejected as exc:
            raise CallFailed(self.redact(str(exc)), len(log), permanent=True, log=log, rejected=True) from None
        except TeacherError as exc:
            raise CallFailed(self.redact(str(exc)), len(log), permanent=True, log=log) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, body: dict[str, Any], reserved: int, log: list[Attempt]) -> Reply:
        entry = Attempt(len(log) + 1, AttemptOutcome.ok, utcnow())
        log.append(entry)
        async with self.limiter.slot(reserved):
            entry.started_at, started = utcnow(), time.perf_counter()  # sent now, not when it began to wait
            try:
                response = await self._http.post(self._path, json=body)
                await response.aread()
            except httpx.HTTPError as exc:
                entry.outcome, entry.error = _outcome(exc), self._describe(exc)
                entry.latency_ms = round((time.perf_counter() - started) * 1000, 1)
                if entry.outcome is AttemptOutcome.timeout and self.config.is_reasoning():
                    raise StillAnswering(entry.error) from exc
                raise
            latency_ms = (time.perf_counter() - started) * 1000
        entry.http_status, entry.request_id = response.status_code, request_id(response.headers)
        entry.latency_ms = round(latency_ms, 1)
        if response.status_code == 429 or response.status_code >= 500:  # not counted by the provider
            self.limiter.correct(reserved, 0)
        await self.limiter.observe(response.headers)
        try:
            if response.status_code in (400, 422):  # about the format: stop, naming the parameter
                answered = self.redact(response.text)
                about_format, param = rejection(response.status_code, answered)
                if about_format:
                    hint = format_hint(response.status_code, body, self.config.structured_output, param, answered)
                    raise TeacherError(f"teacher answered HTTP {response.status_code}: {hint} ({brief(answered)})")
            try:
                check_response(response, self.redact)
            except RetryableError as exc:
                if exc.retry_after:
                    await self.limiter.pause(exc.retry_after)
                raise
        except TeacherError as exc:
            status = response.status_code
            entry.outcome = (AttemptOutcome.rate_limited if status == 429 else AttemptOutcome.server_error
                             if status >= 500 else AttemptOutcome.client_error)
            entry.error = self.redact(str(exc))
            raise
        try:
            data = response.json()
            text, tokens_in, tokens_out, cached = parse_reply(self.config.provider, data)
            content = logprob_content(data["choices"][0]) if "logprobs" in body else None
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            entry.outcome, entry.error = AttemptOutcome.unreadable, f"unreadable reply ({exc.__class__.__name__})"
            raise RetryableError(entry.error) from exc
        if tokens_in is not None:
            self.limiter.correct(reserved, self._counted(tokens_in, tokens_out, cached))
        written = (data.get("usage") or {}).get("cache_creation_input_tokens")
        entry.model_snapshot = data.get("model") if isinstance(data.get("model"), str) else None
        entry.tokens_in, entry.tokens_out, entry.reasoning_tokens = tokens_in, tokens_out, reasoning_tokens(data)
        entry.cached_tokens_in, entry.cache_write_tokens_in = cached, written
        finish, refusal = ending(self.config.provider, data)
        return Reply(self.redact(text), tokens_in, tokens_out, cached, entry.number, latency_ms, written, content,
                     entry.reasoning_tokens, entry.request_id, entry.model_snapshot, log, finish, refusal)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, (httpx.ConnectTimeout, httpx.WriteTimeout)):
            return f"{exc.__class__.__name__}: no connection or request sent within " \
                   f"{self.config.connect_timeout:g}/{self.config.write_timeout:g} s"
        if isinstance(exc, StillAnswering):
            return f"{exc}; not asked again in this run: a reasoning model may still be answering, and billing, it"
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out after {self.config.read_timeout():g} s"
        if isinstance(exc, RetryableError):
            return str(exc)
        return self.redact(f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__)


