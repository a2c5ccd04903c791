"""Teacher settings: one dataclass, resolved from flags, then env vars, then a config file.

The API key is never a field: the config names the env var that holds it, and only the
HTTP client reads it, so a config can be printed, stored or logged without leaking it.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, urlencode, urlparse, urlsplit, urlunsplit

from ..errors import AresError, TeacherError


class Provider(str, Enum):
    openai = "openai"
    anthropic = "anthropic"
    prm = "prm"  # a process reward model trained by `ares train prm`, run locally (teacher/local.py)


class StructuredOutput(str, Enum):
    """How a JSON answer is requested: the `response_format` dialect, tool use, or the prompt only."""

    json_schema = "json_schema"
    json_object = "json_object"
    tool = "tool"
    none = "none"


DEFAULTS: dict[Provider, dict[str, str]] = {
    Provider.openai: {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                      "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL",
                      "structured_output": "json_schema"},
    Provider.anthropic: {"base_url": "https://api.anthropic.com", "model": "claude-3-5-haiku-latest",
                         "api_key_env": "ANTHROPIC_API_KEY", "base_url_env": "ANTHROPIC_BASE_URL",
                         "structured_output": "tool"},
    # `model` names the PRM checkpoint; nothing is sent over HTTP and nothing is paid.
    Provider.prm: {"base_url": "local:prm", "model": "", "api_key_env": "", "base_url_env": "",
                   "structured_output": "none"},
}
REASONING_MODEL = re.compile(r"^(?:[\w.-]+/)?(o\d+|gpt-5(?!-chat))(\b|-|$)")  # o1, o4-mini, openai/o3, gpt-5


class ScoreFrom(str, Enum):
    """What a score call keeps: the sampled score, or also its expected value under the token
    distribution (`logprobs`, teacher/logprobs.py)."""

    sampled = "sampled"
    logprobs = "logprobs"


class CollectedRationales(str, Enum):
    """Which rationales a collector works on (a choice of `rationale.source` values, not the column's
    vocabulary: that is `enums.RationaleSource`)."""

    student = "student"
    gold = "gold"


CONFIG_ENV = "ARES_TEACHER_CONFIG"


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that decides how the teacher is called (what is asked lives in the prompts)."""

    provider: Provider = Provider.openai
    model: str = "gpt-4o-mini"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    # the account's limits, shared by every collector on a store; None = learned from the provider
    rpm: Optional[float] = None
    tpm: Optional[float] = None
    concurrency: int = 16
    # retries and repairs; timeouts in seconds: to connect, to read the answer, to send the request
    max_attempts: int = 6
    max_repairs: int = 2
    timeout: float = 60.0
    reasoning_timeout: float = 600.0  # a reasoning model's read timeout: it may think for minutes
    connect_timeout: float = 10.0
    write_timeout: float = 30.0
    max_retry_after: float = 60.0  # the longest pause a server's Retry-After imposes on the shared account
    # what is asked for
    structured_output: StructuredOutput = StructuredOutput.json_schema
    temperature: float = 0.0
    max_tokens: int = 1024
    reasoning: Optional[bool] = None  # a reasoning model (max_completion_tokens, no temperature); None = by name
    score_from: ScoreFrom = ScoreFrom.sampled
    # cost; None = the built-in price table
    price_in: Optional[float] = None
    price_out: Optional[float] = None
    # where a local teacher (--provider prm) runs
    device: str = "auto"
    dtype: str = "auto"

    @classmethod
    def from_options(cls, config_file: str | os.PathLike | None = None, **options: Any) -> "TeacherConfig":
        """Flags (`options`, None = not given) win over env vars, which win over the config file."""
        path = config_file or os.environ.get(CONFIG_ENV)
        merged: dict[str, Any] = _read_config_file(Path(path)) if path else {}
        merged.update({k: v for k, v in options.items() if v is not None})
        unknown = set(merged) - {f.name for f in fields(cls)}
        if unknown:
            raise TeacherError(f"unknown teacher setting(s): {', '.join(sorted(unknown))}")
        provider = Provider(merged.get("provider", Provider.openai))
        defaults = DEFAULTS[provider]
        base_url = options.get("base_url") or os.environ.get(defaults["base_url_env"]) \
            or merged.get("base_url") or defaults["base_url"]
        if provider is Provider.prm:  # a local model: free unless told otherwise
            merged.setdefault("price_in", 0.0)
            merged.setdefault("price_out", 0.0)
        merged.update(
            provider=provider,
            base_url=base_url.rstrip("/"),
            model=options.get("model") or os.environ.get("ARES_TEACHER_MODEL") or merged.get("model")
            or defaults["model"],
            api_key_env=merged.get("api_key_env") or defaults["api_key_env"],
            structured_output=StructuredOutput(merged.get("structured_output") or defaults["structured_output"]),
            score_from=ScoreFrom(merged.get("score_from") or ScoreFrom.sampled),
        )
        config = cls(**merged)
        config.check()
        return config

    def check(self) -> None:
        if self.provider is Provider.prm:
            if not self.model:
                raise TeacherError("--provider prm needs --model NAME|PATH: a PRM checkpoint from `ares train prm`")
            if self.score_from is ScoreFrom.logprobs:
                raise TeacherError("a PRM writes scores, not token logprobs; use --score-from sampled")
        if (self.rpm is not None and self.rpm <= 0) or (self.tpm is not None and self.tpm <= 0) \
                or self.concurrency < 1:
            raise TeacherError("--rpm, --tpm and --concurrency must be positive")
        if min(self.timeout, self.reasoning_timeout, self.connect_timeout, self.write_timeout) <= 0:
            raise TeacherError("--timeout, --reasoning-timeout, --connect-timeout and --write-timeout must be positive")
        if not 0 < self.max_retry_after < float("inf"):
            raise TeacherError("--max-retry-after must be a positive number of seconds")
        if self.max_attempts < 1 or self.max_repairs < 0:
            raise TeacherError("--max-attempts must be at least 1 and --max-repairs at least 0")
        if self.structured_output is StructuredOutput.tool and self.provider is not Provider.anthropic:
            raise TeacherError("--structured-output tool is the Anthropic dialect; use json_schema for openai")
        if self.structured_output in (StructuredOutput.json_schema, StructuredOutput.json_object) \
                and self.provider is Provider.anthropic:
            raise TeacherError("the Anthropic API takes --structured-output tool or none")
        if self.score_from is ScoreFrom.logprobs and self.provider is Provider.anthropic:
            raise TeacherError("the Anthropic API returns no token logprobs; use --score-from sampled")
        if self.score_from is ScoreFrom.logprobs and self.is_reasoning():
            raise TeacherError(f"{self.model} is a reasoning model, which returns no token logprobs; "
                               "use --score-from sampled (or --no-reasoning if it is not one)")

    def is_reasoning(self) -> bool:
        """--reasoning/--no-reasoning, else the model name: OpenAI's o-series and gpt-5 think first."""
        return self.reasoning if self.reasoning is not None else bool(REASONING_MODEL.match(self.model))

    def read_timeout(self) -> float:
        """Seconds to wait for an answer: --reasoning-timeout for a reasoning model, else --timeout."""
        return self.reasoning_timeout if self.is_reasoning() else self.timeout

    def api_key(self) -> str | None:
        """The key from the env var, or None for a local server that needs none."""
        key = os.environ.get(self.api_key_env)
        if not key and not is_loopback(self.base_url):
            raise TeacherError(f"no API key: set {self.api_key_env} (or name another variable with --api-key-env)")
        return key or None

    def describe(self) -> dict[str, Any]:
        """Plain values, safe to print or store: there is no key field, and credentials written
        into the base URL (user:password@, ?api-key=...) are redacted."""
        values = {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(self).items()}
        values["base_url"] = redact_url(self.base_url)
        return values


_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth|credential)", re.I)


def redact_url(url: str) -> str:
    """`url` with a password in it, and query values whose names say they are secrets, as `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = (user.split(":", 1)[0] + ":***" if ":" in user else "***") + "@" + host
    query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _read_config_file(path: Path) -> dict[str, Any]:
    """A YAML/TOML mapping of TeacherConfig fields; a key in it is refused, not read."""
    from ..settings import read_settings

    try:
        data = read_settings(path, "teacher config")
    except AresError as exc:
        raise TeacherError(str(exc)) from exc
    if "api_key" in data:
        raise TeacherError(f"teacher config {path} holds an api_key: keep keys in an env var (api_key_env)")
    return data
