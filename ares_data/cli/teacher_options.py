"""The teacher flags, defined once: `collect-scores`, `collect-corrections`, and later `train`
and `eval winrate` take them with `@teacher_options` and receive a resolved `TeacherConfig`.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, get_args

import typer

from ..errors import AresError
from ..teacher.config import Provider, ScoreFrom, StructuredOutput, TeacherConfig

_PANEL = "Teacher"

TEACHER_OPTIONS: dict[str, Any] = {
    "provider": Annotated[Optional[Provider], typer.Option(
        help="Wire protocol: openai (chat completions: OpenAI, Azure, vLLM, SGLang, Ollama, llama.cpp, "
             "LiteLLM, transformers serve), anthropic (Messages API), or prm: a process reward model from "
             "`ares train prm`, run here (scores only; --model names its checkpoint).", rich_help_panel=_PANEL)],
    "model": Annotated[Optional[str], typer.Option(
        "--model", "--teacher-model",
        help="Teacher model name \\[env ARES_TEACHER_MODEL; default gpt-4o-mini / claude-3-5-haiku-latest].",
        rich_help_panel=_PANEL)],
    "base_url": Annotated[Optional[str], typer.Option(
        help="API base URL \\[env OPENAI_BASE_URL or ANTHROPIC_BASE_URL].", rich_help_panel=_PANEL)],
    "api_key_env": Annotated[Optional[str], typer.Option(
        metavar="NAME", help="Env var that holds the API key \\[default OPENAI_API_KEY / ANTHROPIC_API_KEY]. "
                             "Keys are never stored or printed.", rich_help_panel=_PANEL)],
    "teacher_config": Annotated[Optional[str], typer.Option(
        envvar="ARES_TEACHER_CONFIG", help="YAML file of teacher settings (flags and env vars win over it).",
        rich_help_panel=_PANEL)],
    "rpm": Annotated[Optional[float], typer.Option(
        help="The account's requests per minute, shared by every collector on the store and never exceeded "
             "\\[learned from the provider's rate-limit headers].", rich_help_panel=_PANEL)],
    "tpm": Annotated[Optional[float], typer.Option(
        help="The account's tokens per minute (OpenAI: a request reserves prompt + max tokens; Anthropic: its "
             "input tokens per minute, a request reserves its prompt), shared like --rpm "
             "\\[learned from the provider's headers].", rich_help_panel=_PANEL)],
    "concurrency": Annotated[Optional[int], typer.Option(help="Calls in flight at once \\[16].",
                                                         rich_help_panel=_PANEL)],
    "max_attempts": Annotated[Optional[int], typer.Option(help="HTTP attempts per call, retries included \\[6].",
                                                          rich_help_panel=_PANEL)],
    "max_repairs": Annotated[Optional[int], typer.Option(
        help="Re-asks after an invalid answer before the rationale is marked failed \\[2].", rich_help_panel=_PANEL)],
    "timeout": Annotated[Optional[float], typer.Option(
        help="Seconds to wait for one answer (read timeout; a reasoning model's: --reasoning-timeout) \\[60].",
        rich_help_panel=_PANEL)],
    "reasoning_timeout": Annotated[Optional[float], typer.Option(
        help="--timeout for a reasoning model, which may think for minutes; its read timeout is not retried "
             "in the run (the provider may still be answering, and billing, it) \\[600].", rich_help_panel=_PANEL)],
    "connect_timeout": Annotated[Optional[float], typer.Option(help="Seconds to connect to the server \\[10].",
                                                               rich_help_panel=_PANEL)],
    "write_timeout": Annotated[Optional[float], typer.Option(help="Seconds to send one request \\[30].",
                                                             rich_help_panel=_PANEL)],
    "max_retry_after": Annotated[Optional[float], typer.Option(
        help="Longest pause, in seconds, that a server's Retry-After imposes on every collector of the "
             "account (a longer or infinite one is cut to this) \\[60].", rich_help_panel=_PANEL)],
    "structured_output": Annotated[Optional[StructuredOutput], typer.Option(
        help="How JSON is requested \\[json_schema for openai, tool for anthropic].", rich_help_panel=_PANEL)],
    "score_from": Annotated[Optional[ScoreFrom], typer.Option(
        help="sampled: the score the teacher wrote; logprobs: also store its expected score under the "
             "teacher's token distribution (asks for top_logprobs; OpenAI-format servers) \\[sampled].",
        rich_help_panel=_PANEL)],
    "temperature": Annotated[Optional[float], typer.Option(help="Sampling temperature \\[0].", rich_help_panel=_PANEL)],
    "max_tokens": Annotated[Optional[int], typer.Option(help="Cap on the length of one answer, in tokens \\[1024].",
                                                        rich_help_panel=_PANEL)],
    "reasoning": Annotated[Optional[bool], typer.Option(
        "--reasoning/--no-reasoning", help="A reasoning model: send max_completion_tokens and no temperature "
                                           "\\[by name: o1, o3, o4-mini, gpt-5 ...].", rich_help_panel=_PANEL)],
    "price_in": Annotated[Optional[float], typer.Option(
        help="USD per million input tokens \\[built-in table for common models].", rich_help_panel=_PANEL)],
    "price_out": Annotated[Optional[float], typer.Option(
        help="USD per million output tokens \\[built-in table].", rich_help_panel=_PANEL)],
    "device": Annotated[Optional[str], typer.Option(
        help="Where --provider prm runs: auto|cpu|cuda[:N] \\[auto].", rich_help_panel=_PANEL)],
    "dtype": Annotated[Optional[str], typer.Option(
        help="Precision of --provider prm: auto|float32|bfloat16|float16 \\[auto].", rich_help_panel=_PANEL)],
}


def teacher_options(command: Callable[..., Any] | None = None, *, settings_param: str | None = None) -> Any:
    """Add the teacher flags to a command; it receives them as one `teacher: TeacherConfig`.

    `--teacher-model` names the teacher on every command; where the command has no `--model` of
    its own, `--model` is the same flag. A flag the command already has for itself (`ares train
    --model STUDENT`) becomes `--teacher-<name>` for the teacher. `settings_param` names the command's settings-file
    option whose `teacher` section fills the teacher flags that were not given.
    """
    if command is None:
        return functools.partial(teacher_options, settings_param=settings_param)
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "teacher"]
    taken = {p.name for p in own}
    names = {name: f"teacher_{name}" if name in taken else name for name in TEACHER_OPTIONS}
    added = [inspect.Parameter(names[name], inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=_prefixed(annotation, name) if names[name] != name else annotation)
             for name, annotation in TEACHER_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(param) for name, param in names.items()}
        if settings_param and kwargs.get(settings_param):
            from ..settings import read_settings

            section = read_settings(Path(kwargs[settings_param])).get("teacher") or {}
            flags.update({k.replace("-", "_"): v for k, v in section.items() if flags.get(k.replace("-", "_")) is None})
        config_file = flags.pop("teacher_config")
        return command(*args, teacher=TeacherConfig.from_options(config_file, **flags), **kwargs)

    params = [*own, *added]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__
    return wrapper


def _prefixed(annotation: Any, name: str) -> Any:
    """The same Annotated option as `--teacher-<name>`."""
    base, option = get_args(annotation)
    flag = "--teacher-" + name.replace("_", "-")
    return Annotated[base, typer.Option(flag, help=option.help, rich_help_panel=option.rich_help_panel)]


# Names of API teacher models (OpenAI, Anthropic, Google), which a student flag never takes.
_API_MODEL = re.compile(r"^(?:[\w.-]+/)?(gpt-|o\d(?:-|$)|chatgpt-|claude-|gemini-|text-davinci)", re.IGNORECASE)


def looks_like_teacher(model: str) -> bool:
    """True for an API model name (gpt-4o, o3-mini, claude-..., openai/gpt-4o) that is not a local path."""
    return bool(_API_MODEL.match(model)) and not Path(model).expanduser().exists()


def check_student(model: Optional[str], flag: str = "--model") -> None:
    """One line when a student flag is given a teacher's name: `ares train --model gpt-4o`."""
    if model and looks_like_teacher(model):
        raise AresError(f"{flag} {model!r} names the student (a local model: a directory, a .gguf or 'smollm2'); "
                        f"{model!r} looks like a teacher: give it as --teacher-model")
