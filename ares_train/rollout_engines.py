"""Rollout engines: what samples the student's responses, behind one seam.

An engine turns prompts into `Sampled` responses: the token ids exactly as sampled (EOS only
when it was sampled), the behaviour policy's log-prob of each of them, and why sampling
stopped (`stop`: an EOS was sampled; `length`: `max_new_tokens` was reached). PPO trains on
these ids and compares its first forward with these log-probs (`rollout_probs_diff_*`).

- `hf` (default): transformers `generate`, on the device the student was loaded on. The
  model's own `generation_config` (its top_p, top_k, repetition penalty...) is set aside: the
  sampling distribution is softmax(logits / temperature), truncated to `top_k` only when
  asked, and the log-probs are recorded from exactly the scores that were sampled from.
- `vllm` (optional extra, GPU only): the checkpoint's merged weights served by vLLM, with
  `logprobs_mode="processed_logprobs"` so its log-probs are those of the distribution it
  sampled from. vLLM is imported only when this engine is chosen.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, get_args

from ares_data.errors import TrainingError
from ares_data.extras import install_command

from .rollout_config import EngineName
from .vision import encode, text_tokenizer

STOP, LENGTH = "stop", "length"  # finish reasons: an EOS was sampled / cut at max_new_tokens
# generate's warpers that act after the log-prob recorder (so the stored log-probs would not be
# those of the distribution sampled from); refused rather than silently mis-recorded.
UNRECORDED_WARPERS = ("top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")
VLLM_INSTALL = f"{install_command('vllm')} (on a machine with a CUDA GPU)"


@dataclass
class Sampled:
    """One sampled response: ids as sampled, their behaviour log-probs, and why it stopped."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # STOP or LENGTH
    text: str  # the ids decoded without special tokens, stripped: the rationale text

    def record(self) -> dict[str, Any]:
        """What a rollout's `rationale.generation` keeps of it."""
        return {"token_ids": self.token_ids, "logprobs": self.logprobs, "finish_reason": self.finish_reason}


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a response: the generation config's EOS ids and the tokenizer's."""
    found = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(found if isinstance(found, list) else [found] if found is not None else [])
    eos = text_tokenizer(tokenizer).eos_token_id
    return ids | ({eos} if eos is not None else set())


def cut_at_eos(ids: Sequence[int], logprobs: Sequence[float], ends: set[int], tokenizer: Any) -> Sampled:
    """The response up to and including its first EOS (`stop`), else all of it (`length`)."""
    ids = [int(i) for i in ids]
    stop = next((i for i, t in enumerate(ids) if t in ends), None)
    kept = ids if stop is None else ids[: stop + 1]
    text = text_tokenizer(tokenizer).decode(kept, skip_special_tokens=True).strip()
    return Sampled(kept, [float(x) for x in logprobs[: len(kept)]], LENGTH if stop is None else STOP, text)


class _BehaviourLogprobs:
    """The last logits processor of a sampling `generate`: keeps log p(token) under the scores
    that token was drawn from. The sampled token is only known at the next call (or after
    `generate` returns), so one step's log-softmax is held at a time, not [steps, rows, vocab]."""

    def __init__(self) -> None:
        self.steps: list[Any] = []
        self.pending: Any = None

    def take(self, chosen: Any) -> None:
        if self.pending is not None:
            self.steps.append(self.pending.gather(1, chosen[:, None]).squeeze(1))
            self.pending = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self.take(input_ids[:, -1])
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores


def _sampling_processors(temperature: float, top_k: int) -> list[Any]:
    """Temperature and top-k as our own processors, so they act before the log-probs are read."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper

    warpers: list[Any] = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    return warpers


class HFEngine:
    """transformers `generate` on the loaded student (text or vision-language)."""

    name = "hf"

    def __init__(self, model: Any, processing: Any):
        self.model, self.processing = model, processing

    def sample(self, prompts: Sequence[str], images: Sequence[Any], *, n: int, max_new_tokens: int,
               temperature: float = 1.0, top_k: int = 0, do_sample: bool = True, seed: int | None = None,
               **generate_kwargs: Any) -> list[list[Sampled]]:
        """`n` responses per prompt (greedy when `do_sample` is False); `generate_kwargs` add
        processors (min_new_tokens, suppress_tokens, ...) that act before the log-probs are read."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, set_seed

        refused = sorted(set(generate_kwargs) & set(UNRECORDED_WARPERS))
        if refused:
            raise TrainingError(f"{', '.join(refused)} would change the sampled distribution after its log-probs "
                                "are recorded: PPO could not score what was sampled (use temperature and top_k)")
        if seed is not None:
            set_seed(seed)
        tok = text_tokenizer(self.processing)
        tok.padding_side = "left"  # generation continues every row from its last token
        device = next(self.model.parameters()).device
        enc = encode(self.processing, prompts, images, return_tensors="pt", padding=True).to(device)
        ends = eos_ids(self.model, self.processing)
        # A clean config: none of the model's own sampling defaults (top_p, top_k=50, ...) applies.
        clean = GenerationConfig(do_sample=do_sample, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=tok.pad_token_id,
                                 eos_token_id=sorted(ends), bos_token_id=tok.bos_token_id)
        recorder = _BehaviourLogprobs()
        processors = [*_sampling_processors(temperature, top_k), recorder] if do_sample else [recorder]
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # under PEFT
        saved, inner.generation_config = inner.generation_config, clean
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.generate(**enc, generation_config=clean,
                                          logits_processor=LogitsProcessorList(processors), **generate_kwargs)
        finally:
            inner.generation_config = saved
        recorder.take(out[:, -1])
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        logprobs = torch.stack(recorder.steps, 1).tolist() if recorder.steps else [[] for _ in new]
        rows = [cut_at_eos(ids, lps, ends, self.processing) for ids, lps in zip(new, logprobs, strict=True)]
        return [rows[i:i + n] for i in range(0, len(rows), n)]


class VLLMEngine:
    """vLLM serving the checkpoint's merged weights (written once to a temporary directory)."""

    name = "vllm"

    def __init__(self, model: Any, processing: Any, dtype: str):
        import torch

        if importlib.util.find_spec("vllm") is None:
            raise TrainingError(f"--rollout-engine vllm: vLLM is not installed: {VLLM_INSTALL}")
        if not torch.cuda.is_available():
            raise TrainingError("--rollout-engine vllm needs a CUDA GPU; none is visible (use --rollout-engine hf)")
        from vllm import LLM

        self.processing, self._dir = processing, tempfile.TemporaryDirectory(prefix="ares-vllm-")
        model.save_pretrained(self._dir.name)  # adapters were merged on load: plain weights
        processing.save_pretrained(self._dir.name)
        self.ends = eos_ids(model, processing)
        # the HF copy stays loaded beside it: leave it room
        self.llm = LLM(model=str(Path(self._dir.name)), dtype=dtype, logprobs_mode="processed_logprobs",
                       gpu_memory_utilization=0.5)

    def sample(self, prompts: Sequence[str], images: Sequence[Any], *, n: int, max_new_tokens: int,
               temperature: float = 1.0, top_k: int = 0, do_sample: bool = True, seed: int | None = None,
               **generate_kwargs: Any) -> list[list[Sampled]]:
        from vllm import SamplingParams, TokensPrompt

        if generate_kwargs:
            raise TrainingError(f"the vllm engine does not take {sorted(generate_kwargs)}")
        if any(image is not None for image in images):
            raise TrainingError("the vllm engine samples text-only students here; use --rollout-engine hf for a VLM")
        params = SamplingParams(n=n, temperature=temperature if do_sample else 0.0, top_k=top_k or -1,
                                max_tokens=max_new_tokens, logprobs=0, seed=seed, skip_special_tokens=True)
        enc = encode(self.processing, prompts, None)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in enc["input_ids"]], params)
        return [[cut_at_eos(c.token_ids, [lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)], self.ends,
                            self.processing) for c in out.outputs] for out in outputs]


def make_engine(name: str, model: Any, processing: Any, dtype: str = "auto") -> HFEngine | VLLMEngine:
    """The engine called `name` over a loaded student."""
    if name not in get_args(EngineName):
        raise TrainingError(f"--rollout-engine {name!r}: expected one of {', '.join(get_args(EngineName))}")
    return HFEngine(model, processing) if name == "hf" else VLLMEngine(model, processing, dtype)
