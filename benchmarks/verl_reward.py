"""ARES's reward on the path verl's main_ppo really runs, against the offline collector: teacher calls
per response, bytes per scored sentence, seconds; and the cost of finding token spans.

Real path: verl 0.9.1's v1 agent-loop worker (`AgentLoopWorkerTQ._run_prompt`, in this process,
tests/verl_support.py) runs `--prompts` prompts x `--n` samples through the `ares_single_turn` agent
loop, whose groups go to `--reward-workers` RewardLoopWorkers running `ares_sentence` (routed by
prompt, as on a cluster), against the fake teacher answering after `--latency` seconds. Offline: the
same responses stored as a round's rollouts and scored by the collector, grouped (one call per
question, what `ares collect-scores --grouped` does) and per rationale (one call per response,
what scoring each sample alone costs). Each row on a fresh SQLite store (a store that had seen the
responses would answer from the request-hash cache).

    .venv/bin/python benchmarks/verl_reward.py --prompts 16 --n 4 --latency 0.3
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer, LlamaConfig

from ares_data.fake_teacher import serve_in_thread
from ares_data.store import Store
from ares_data.tables import Question
from ares_data.teacher import TeacherConfig
from ares_data.teacher.collect import CollectRequest, collect
from ares_train.loading import resolve_model_path
from ares_train.sentence_tokens import _prefix_spans, decoded_spans

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from verl_support import FakeServer, agent_worker, run_prompts, streaming, verl_config

console = Console(width=150)
SENTENCES = ["Magnets attract iron.", "The nail sticks to the magnet.", "Wood does not stick.",
             "So the nail is made of iron.", "Plants need light to grow.", "The answer is (A)."]


def response(prompt: int, sample: int, length: int) -> str:
    picked = [SENTENCES[(prompt + sample + k) % len(SENTENCES)] for k in range(length)]
    return f"Sample {prompt}-{sample}. " + " ".join(picked)


def questions(url: str, prompts: int) -> list[int]:
    with Store(url) as store, store.session() as session:
        rows = [Question(dataset="bench", source_id=str(i), split="train", question=f"Q{i}?",
                         choices=["a", "b", "c"], answer_index=0) for i in range(prompts)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def costs(url: str) -> tuple[int, int, int, int]:
    """(responses, teacher calls, sentences scored, bytes sent and received) in the store."""
    with Store(url) as store:
        _, rationales = store.query_readonly("SELECT count(*) FROM rationale")
        _, calls = store.query_readonly("SELECT request, response FROM teacher_call")
        _, scored = store.query_readonly("SELECT count(*) FROM sentence_score")
    size = sum(len(r if isinstance(r, str) else json.dumps(r)) + len(a or "") for r, a in calls)
    return rationales[0][0], len(calls), scored[0][0], size


def streaming_path(model_dir: Path, url: str, texts: list[str], prompts: int, n: int, workers: int,
                   teacher: dict) -> float:
    """Seconds for verl's v1 worker to generate (fake server), reward and put every sample (the reward
    workers already started)."""
    with tempfile.TemporaryDirectory() as loops:
        cfg = verl_config(model_dir, Path(loops), n=n, reward_workers=workers, teacher=teacher, store=url)
        worker = agent_worker(cfg)
        worker.llm_client = FakeServer(worker.tokenizer, texts)
        ids = questions(url, prompts)
        with streaming(cfg) as seen:
            started = time.monotonic()
            run_prompts(worker, ids)
            seconds = time.monotonic() - started
        assert len(seen.rows) == prompts * n
        return seconds


def offline(url: str, texts: list[str], prompts: int, n: int, teacher: dict, grouped: bool) -> float:
    """Seconds for the collector to score the same responses stored as round-1 rollouts."""
    ids = questions(url, prompts)
    with Store(url) as store:
        with store.session() as session:
            for k, text in enumerate(texts):
                store.add_rationale(session, question_id=ids[k // n], source="student", text=text, round=1,
                                    sample_index=k % n, dedup_key=f"bench:{k}")
        started = time.monotonic()
        asyncio.run(collect(store, TeacherConfig.from_options(None, **teacher),
                            CollectRequest("score", grouped=grouped, round=1)))
        return time.monotonic() - started


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
         sentences: Annotated[int, typer.Option(help="Sentences per response (after a first one).")] = 6,
         reward_workers: Annotated[int, typer.Option(help="verl's reward.num_workers.")] = 8,
         latency: Annotated[float, typer.Option(help="The fake teacher's seconds per answer.")] = 0.3) -> None:
    directory, gguf = resolve_model_path("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    texts = [response(p, s, sentences) for p in range(prompts) for s in range(n)]
    table = Table(title=f"ARES reward: {prompts} prompts x {n} responses, teacher latency {latency}s")
    for column in ("path", "responses", "teacher calls", "calls per response", "bytes per scored sentence",
                   "seconds"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(latency_ms=latency * 1000) as teacher_url:
        model_dir = Path(tmp) / "student"  # verl's worker reads the tokenizer and the model config, no weights
        tokenizer.save_pretrained(model_dir)
        LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2,
                    architectures=["LlamaForCausalLM"]).save_pretrained(model_dir)
        teacher = {"base_url": teacher_url, "model": "fake", "rpm": 60000, "concurrency": 16}
        runs = {
            f"verl streaming ({reward_workers} reward workers)":
                lambda url: streaming_path(model_dir, url, texts, prompts, n, reward_workers, teacher),
            "offline collector, grouped": lambda url: offline(url, texts, prompts, n, teacher, True),
            "offline collector, per rationale": lambda url: offline(url, texts, prompts, n, teacher, False),
        }
        for name, run in runs.items():
            url = str(Path(tmp) / f"{len(table.rows)}.db")
            seconds = run(url)
            responses, calls, scored, size = costs(url)
            table.add_row(name, str(responses), str(calls), f"{calls / responses:.2f}", f"{size / scored:.0f}",
                          f"{seconds:.2f}")
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
