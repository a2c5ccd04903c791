"""verl's `ares_sentence` reward manager: time per batch against the fake teacher, and the cost of
finding token spans (one offset pass vs decoding every prefix).

A batch is `--prompts` prompts x `--n` responses (verl's `rollout.n`), each a few sentences,
tokenised by SmolLM2's tokenizer and handed to the manager as a real `DataProto`. The fake
teacher answers after `--latency` seconds. Each setting runs on a fresh store (a store that had
seen the batch would answer it from the request-hash cache). Printed: seconds per batch, teacher
calls (one grouped call per prompt), and per response the span time of both methods.

    .venv/bin/python benchmarks/verl_reward.py --prompts 16 --n 4 --latency 0.3
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer
from verl import DataProto

from ares_data.fake_teacher import serve_in_thread
from ares_data.store import Store
from ares_data.tables import Question
from ares_train.loading import resolve_model_path
from ares_train.sentence_tokens import _prefix_spans, decoded_spans
from ares_train.verl_reward import AresSentenceRewardManager

console = Console()
SENTENCES = ["Magnets attract iron.", "The nail sticks to the magnet.", "Wood does not stick.",
             "So the nail is made of iron.", "Plants need light to grow.", "The answer is (A)."]


def response(prompt: int, sample: int, length: int) -> str:
    picked = [SENTENCES[(prompt + sample + k) % len(SENTENCES)] for k in range(length)]
    return f"Sample {prompt}-{sample}. " + " ".join(picked)


def data_proto(tokenizer, texts: list[str], question_ids: list[int]) -> DataProto:
    eos = tokenizer.eos_token_id
    ids = [tokenizer(t, add_special_tokens=False).input_ids + [eos] for t in texts]
    width = max(map(len, ids))
    prompt = tokenizer("Why?", add_special_tokens=False).input_ids
    responses = torch.tensor([r + [eos] * (width - len(r)) for r in ids])
    prompts = torch.tensor([prompt] * len(ids))
    mask = torch.tensor([[1] * len(prompt) + [1] * len(r) + [0] * (width - len(r)) for r in ids])
    infos = np.array([{"question_id": q} for q in question_ids], dtype=object)
    return DataProto.from_dict(tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
                               non_tensors={"extra_info": infos, "uid": np.array([str(q) for q in question_ids],
                                                                                 dtype=object)})


def one_batch(tokenizer, url: str, prompts: int, n: int, sentences: int, concurrency: int) -> tuple[float, int]:
    """(seconds for the manager's call, teacher calls sent) on a fresh store."""
    with tempfile.TemporaryDirectory() as tmp:
        url_db = str(Path(tmp) / "ares.db")
        with Store(url_db) as store, store.session() as session:
            rows = [Question(dataset="bench", source_id=str(i), split="train", question=f"Q{i}?",
                             choices=["a", "b", "c"], answer_index=0) for i in range(prompts)]
            session.add_all(rows)
            session.flush()
            qids = [r.id for r in rows]
        texts = [response(p, s, sentences) for p in range(prompts) for s in range(n)]
        data = data_proto(tokenizer, texts, [qids[p] for p in range(prompts) for _ in range(n)])
        manager = AresSentenceRewardManager(tokenizer, 0, ares={
            "store": url_db, "teacher": {"base_url": url, "model": "fake", "rpm": 60000, "concurrency": concurrency}})
        started = time.monotonic()
        out = manager(data, return_dict=True)
        seconds = time.monotonic() - started
        assert sum(out["reward_extra_info"]["ares_failed"]) == 0
        calls = len(manager.rewarder.store.query_readonly("SELECT id FROM teacher_call")[1])
        manager.rewarder.close()
        return seconds, calls


def span_seconds(tokenizer, sentences: int, repeats: int = 5) -> tuple[int, float, float]:
    """(tokens, seconds per response: one offset pass, decoding every prefix)."""
    ids = tokenizer(response(0, 0, sentences), add_special_tokens=False).input_ids
    started = time.perf_counter()
    for _ in range(repeats):
        decoded_spans(tokenizer, ids)
    offsets = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        _prefix_spans(tokenizer, ids)
    prefixes = (time.perf_counter() - started) / repeats
    return len(ids), offsets, prefixes


def main(prompts: Annotated[int, typer.Option()] = 16, n: Annotated[int, typer.Option()] = 4,
         sentences: Annotated[int, typer.Option(help="Sentences per response.")] = 6,
         latency: Annotated[float, typer.Option(help="The fake teacher's seconds per answer.")] = 0.3) -> None:
    directory, gguf = resolve_model_path("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    table = Table(title=f"ares_sentence: {prompts} prompts x {n} responses, teacher latency {latency}s")
    for column in ("teacher concurrency", "seconds per batch", "teacher calls"):
        table.add_column(column, justify="right")
    with serve_in_thread(latency_ms=latency * 1000) as url:
        for concurrency in (1, 16):
            seconds, calls = one_batch(tokenizer, url, prompts, n, sentences, concurrency)
            table.add_row(str(concurrency), f"{seconds:.2f}", str(calls))
    console.print(table)
    spans = Table(title="token spans of one response (SmolLM2 tokenizer)")
    for column in ("sentences", "tokens", "one offset pass (ms)", "every prefix decoded (ms)"):
        spans.add_column(column, justify="right")
    for length in (6, 24, 96):
        tokens, offsets, prefixes = span_seconds(tokenizer, length)
        spans.add_row(str(length), str(tokens), f"{offsets * 1000:.2f}", f"{prefixes * 1000:.2f}")
    console.print(spans)


if __name__ == "__main__":
    typer.run(main)
