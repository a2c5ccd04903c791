"""End to end against a real local teacher: `transformers serve` with the embedded SmolLM2.

Whatever a 135M model answers (it ignores response_format and tends to write prose), the run
completes and every call is accounted for: each rationale ends `ok` or `failed` with a reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from servers import free_port, running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    from ares_data.errors import AresError
    from ares_train.materialize import materialize

    try:
        return materialize("smollm2", tmp_path_factory.mktemp("smollm2") / "hf")
    except AresError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def transformers_serve(smollm2_dir, tmp_path):
    port = free_port()
    argv = [str(Path(sys.executable).with_name("transformers")), "serve", str(smollm2_dir),
            "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with running(argv, f"http://127.0.0.1:{port}/health", tmp_path / "serve.log",
                 env={**os.environ, "HF_HUB_OFFLINE": "1"}):
        yield f"http://127.0.0.1:{port}/v1", str(smollm2_dir)

def test_collect_scores_against_transformers_serve_accounts_for_every_call(cli, store, transformers_serve):
    url, model = transformers_serve
    assert cli("import", "example").exit_code == 0
    result = cli("collect-scores", "--rationales", "gold", "--limit", "3", "--base-url", url, "--model", model,
                 "--structured-output", "none", "--max-tokens", "48", "--max-repairs", "1", "--concurrency", "1",
                 "--timeout", "120")
    assert result.exit_code == 0, result.output
    assert "of 3 rationales" in result.stdout
    ended = ("SELECT COUNT(*) FROM v_call_rationale l JOIN teacher_call c ON c.id = l.teacher_call_id"
             " WHERE l.rationale_id = r.id AND c.status = '{}'")
    _, rows = store.query_readonly(f"SELECT r.id, ({ended.format('ok')}), ({ended.format('failed')})"
                                   " FROM rationale r WHERE r.source = 'gold' ORDER BY r.id LIMIT 3")
    for _, ok, failed in rows:
        assert ok + failed == 1  # every rationale reached an end: scored, or given up with a reason
    _, statuses = store.query_readonly("SELECT status, error FROM teacher_call")
    assert statuses and all(s in ("ok", "invalid", "failed") for s, _ in statuses)  # no transport error
    assert all(e for s, e in statuses if s != "ok")  # every failure keeps its reason
