"""One source for each trainer option: the flags and their help come from the config dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
from typer.main import get_command

from ares_data.cli import app
from ares_train.options import option, sections
from ares_train.placement import RunsOn
from ares_train.ppo_config import PPOConfig
from ares_train.rollout_config import SamplingSettings
from ares_train.sft_config import SFTRunConfig


def _params(*path: str) -> dict[str, object]:
    command = get_command(app)
    for name in path:
        command = command.commands[name]
    return {p.name: p for p in command.params}


@pytest.mark.parametrize(("cls", "path", "left_out"), [
    (PPOConfig, ("train", "rl"), ("lora_dropout",)), (SFTRunConfig, ("train", "sft"), ()),
    (SamplingSettings, ("generate",), ()),
    (SamplingSettings, ("train",), ("seed",)), (RunsOn, ("eval", "accuracy"), ()), (RunsOn, ("eval", "winrate"), ()),
])
def test_every_config_field_is_a_flag_with_the_fields_help(cls, path, left_out):
    params = _params(*path)
    for field in fields(cls):
        if field.name in left_out:
            continue
        param = params[field.name]
        flag = field.name.replace("_", "-")
        assert (f"--no-{flag}" if field.default is True else f"--{flag}") in param.opts  # a switch flips the default
        assert param.help.startswith(field.metadata["help"])
        assert param.default is None  # not given -> the dataclass default applies
    assert {"--lr", "--epochs"} <= set(_params("train", "rl")["learning_rate"].opts + _params("train", "rl")[
        "ppo_epochs"].opts)


def test_flags_reach_the_config_and_a_bad_value_is_one_line(cli, tiny_model_dir):
    bad = cli("generate", "--round", "1", "--model", tiny_model_dir, "--dtype", "float8")
    assert bad.exit_code == 2 and "float8" in bad.output  # a choice, refused by the parser
    wrong = cli("train", "rl", "--round", "1", "--model", tiny_model_dir, "--reward-placement", "middle")
    assert wrong.exit_code == 2 and "middle" in wrong.output
    tpu = cli("generate", "--round", "1", "--model", tiny_model_dir, "--device", "tpu")
    assert tpu.exit_code == 1 and "--device 'tpu': expected auto, cpu, cuda or cuda:N" in tpu.stderr


def test_cuda_without_a_gpu_says_so(cli, tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = cli("generate", "--round", "1", "--model", tiny_model_dir, "--device", "cuda")
    assert result.exit_code == 1 and "no CUDA GPU is visible" in result.stderr


def test_the_rollout_engine_seam(cli, tiny_model_dir, feedback):
    """hf is the default engine; vllm is imported only when chosen and says why it cannot run here."""
    import importlib.util

    import torch

    from ares_data.errors import TrainingError
    from ares_train.loading import load_student
    from ares_train.rollout_engines import VLLM_INSTALL, HFEngine, make_engine

    model, tokenizer = load_student(str(tiny_model_dir))
    assert isinstance(make_engine("hf", model, tokenizer), HFEngine)
    with pytest.raises(TrainingError, match="expected one of hf, vllm"):
        make_engine("sglang", model, tokenizer)
    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are here: the engine would start")
    why = VLLM_INSTALL if importlib.util.find_spec("vllm") is None else "needs a CUDA GPU"
    with pytest.raises(TrainingError, match="vllm"):
        make_engine("vllm", model, tokenizer)
    feedback.question(1)
    result = cli("generate", "--round", "1", "--model", tiny_model_dir, "--rollout-engine", "vllm")
    assert result.exit_code == 1 and why in result.stderr.replace("\n", " ")
    assert "vllm" not in __import__("sys").modules  # never imported


@dataclass
class _Inherited:
    shared: int = option(0, "w")


@dataclass
class _ShortNamedToo(_Inherited):
    size: int = option(2, "y")
    # -- beta -----------
    rate: float = option(0.1, "z")


@dataclass
class _ShortNamed(_Inherited):
    # -- alpha ----------
    size: int = option(1, "x")
    shared: int = option(3, "v")


def test_sections_come_from_the_class_body_alone():
    assert sections(_ShortNamed) == {"size": "alpha", "shared": "alpha"}
    # not the next class's body (where the inherited `shared` is declared again), nor a longer name's
    assert sections(_ShortNamedToo) == {"size": "", "rate": "beta"}
