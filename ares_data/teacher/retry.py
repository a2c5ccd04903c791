"""When to retry a teacher call: small pure functions over statuses, bodies and headers.

Retried: 429 (rate limit), 5xx, timeouts, dropped connections, an unreadable reply.
Not retried: 400/401/403/404/413/422 and a 429 that says the quota is exhausted. A 400 about
one request (context length, content policy, anything not about the request's format) fails
that request only (`RequestRejected`); one about the format (an unsupported parameter, a
response_format the server cannot do) and 401/403/404 stop the run.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from enum import Enum
from typing import Callable, Mapping

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..errors import QuotaError, RequestRejected, RetryableError, TeacherError

RETRY_CAP_S = 60.0  # the longest wait a server's Retry-After (or reset) imposes by default


class Decision(str, Enum):
    ok = "ok"
    retry = "retry"
    permanent = "permanent"
    quota = "quota"



def classify_status(status: int, body: str = "") -> Decision:
    if status < 300:
        return Decision.ok
    if status == 429:
        return Decision.quota if "insufficient_quota" in body or "quota exceeded" in body.lower() else Decision.retry
    if status in (408, 409) or status >= 500:
        return Decision.retry
    return Decision.permanent


# Provider error codes of one request's content, and of the request's format.
REQUEST_CODES = {"context_length_exceeded", "content_policy_violation", "content_filter", "string_above_max_length",
                 "invalid_image", "invalid_image_url", "image_parse_error", "invalid_image_format", "request_too_large"}
FORMAT_CODES = {"unsupported_parameter", "unsupported_value", "unknown_parameter", "invalid_parameter"}
_REQUEST_WORDS = re.compile(r"context length|context window|maximum context|too many tokens|prompt is too long|"
                            r"content (management )?policy|safety system|flagged", re.IGNORECASE)
_FORMAT_WORDS = re.compile(r"unsupported|unrecognized|not supported|unknown (parameter|field|argument)|"
                           r"extra (inputs|fields)|not permitted|response_format|json_schema|json_object|tool_choice",
                           re.IGNORECASE)
_STRUCTURED_WORDS = re.compile(r"response_format|json_schema|json_object|tool_choice", re.IGNORECASE)
_PARAM_IN_TEXT = (re.compile(r"[`'\"]([a-z_][\w.]*)[`'\"]"),
                  re.compile(r"(?:parameter|argument|field)s?(?: supplied)?:\s*([A-Za-z_][\w.]*)"))


def _error_fields(text: str) -> tuple[str, str, str | None]:
    """(code, message, param) of an error body in the OpenAI, Anthropic or FastAPI shape."""
    try:
        data = json.loads(text)
    except ValueError:
        return "", text, None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or ""), str(error.get("message") or ""), error.get("param")
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI/pydantic: loc names the field
        loc = [str(p) for p in detail[0].get("loc") or [] if p != "body"]
        return "", str(detail[0].get("msg") or ""), loc[0] if loc else None
    return "", text, None


def rejection(status: int, text: str) -> tuple[bool, str | None]:
    """(is it about the request's format, the parameter named) for a 400/413/422 answer.
    Format: an unsupported parameter or value (the run's settings are wrong: stop). Otherwise
    the request itself was refused (context length, content policy, a bad image): only it fails."""
    code, message, param = _error_fields(text)
    if status == 413 or code in REQUEST_CODES or _REQUEST_WORDS.search(message):
        return False, param
    if status == 422 or code in FORMAT_CODES or _FORMAT_WORDS.search(message):
        if param is None and _STRUCTURED_WORDS.search(message):
            param = "response_format"
        for pattern in _PARAM_IN_TEXT:
            found = pattern.search(message) if param is None else None
            param = found.group(1) if found else param
        return True, param
    return False, param


def is_retryable_exception(exc: BaseException) -> bool:
    """Timeouts, refused or dropped connections, broken replies and our own RetryableError."""
    return isinstance(exc, (RetryableError, httpx.TimeoutException, httpx.NetworkError,
                            httpx.RemoteProtocolError))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float | None:
    """`1.5`, `20ms`, `6m0s` (the OpenAI x-ratelimit-reset-* format) as seconds; `inf` and `nan`
    are no duration (None)."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """`retry-after-ms`, else `retry-after` as seconds or an HTTP date; None when absent, unreadable
    or not finite (`inf`)."""
    try:
        milliseconds = float(headers.get("retry-after-ms", "nan"))
    except ValueError:
        milliseconds = math.nan
    if math.isfinite(milliseconds):
        return max(0.0, milliseconds / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def brief(text: str, limit: int = 200) -> str:
    """An error body on one line, cut to `limit` characters: cut only text already redacted, or
    part of a key echoed by the server survives the cut where redaction no longer finds it."""
    return " ".join(text.split())[:limit]


def check_response(response: httpx.Response, redact: Callable[[str], str] = str) -> None:
    """Raise for a non-2xx reply: RetryableError, QuotaError or TeacherError (one line each)."""
    decision = classify_status(response.status_code, response.text)
    if decision is Decision.ok:
        return
    message = f"teacher answered HTTP {response.status_code}: {brief(redact(response.text))}"
    if decision is Decision.retry:
        raise RetryableError(message, retry_after_seconds(response.headers))
    if decision is Decision.quota:
        raise QuotaError(f"{message} (the account is out of quota; retrying cannot help)")
    if response.status_code in (400, 413, 422) and not rejection(response.status_code, response.text)[0]:
        raise RequestRejected(message)
    raise TeacherError(message)


def wait_for(base: wait_random_exponential, cap: float = RETRY_CAP_S) -> Callable[[RetryCallState], float]:
    """Jittered exponential backoff, but never shorter than the server's Retry-After (up to `cap`)."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        return max(base(state), min(asked, cap)) if asked is not None else base(state)

    return wait


def retrying(max_attempts: int, *, initial: float = 0.5, maximum: float = 20.0,
             retry_after_cap: float = RETRY_CAP_S) -> AsyncRetrying:
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=wait_for(wait_random_exponential(multiplier=initial, max=maximum), retry_after_cap),
        retry=retry_if_exception(is_retryable_exception),
        reraise=True,
    )
