"""End to end against llama.cpp's OpenAI-compatible server with the embedded SmolLM2 GGUF:
`collect-scores --structured-output json_object --score-from logprobs` stores expected scores.

The test suite does not build `llama-cpp-python[server]` (`make demo` builds it into .venv,
~5 min); without it the test is skipped with that reason.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlmodel import select

from servers import free_port, running

pytestmark = pytest.mark.slow


@pytest.fixture
def llama_server(tmp_path):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed in the venv "
                                                   "(`make demo` builds it)")
    from ares_data.errors import AresError
    from ares_train.loading import resolve_model_path

    try:
        directory, gguf_file = resolve_model_path("smollm2")
    except AresError as exc:
        pytest.skip(str(exc))
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(Path(directory) / gguf_file),
            "--host", "127.0.0.1", "--port", str(port), "--n_batch", "1", "--n_ubatch", "1"]  # see scripts/demo.sh
    with running(argv, f"http://127.0.0.1:{port}/v1/models", tmp_path / "llama.log"):
        yield f"http://127.0.0.1:{port}/v1"


def test_expected_scores_from_llama_cpp(llama_server, cli, store):
    from ares_data.tables import SentenceScore, TeacherCall
    from ares_data.teacher.client import TOP_LOGPROBS

    assert cli("import", "example").exit_code == 0
    result = cli("collect-scores", "--rationales", "gold", "--limit", "2", "--no-group-by-question",
                 "--base-url", llama_server, "--model", "smollm2", "--structured-output", "json_object",
                 "--score-from", "logprobs", "--timeout", "120", "--max-repairs", "1")
    assert result.exit_code == 0, result.output
    with store.session() as s:
        calls = s.exec(select(TeacherCall)).all()
        rows = s.exec(select(SentenceScore)).all()
    assert calls and all(c.request.get("top_logprobs") == TOP_LOGPROBS for c in calls)
    assert rows, result.output
    weighted = [r.expected_score for r in rows if r.expected_score is not None]
    assert weighted and all(0.0 <= value <= 1.0 for value in weighted)
    assert all(abs(sum(r.score_distribution.values()) - 1) < 1e-6 for r in rows if r.score_distribution)
