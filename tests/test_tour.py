"""docs/tour.md is what scripts/tour.py prints: the README's tour against the fake teacher."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # among the longest of `make test` (--durations); CI runs it in `make test-slow`
def test_docs_tour_is_what_the_tour_prints_now():
    script, doc = ROOT / "scripts" / "tour.py", ROOT / "docs" / "tour.md"
    done = subprocess.run([sys.executable, str(script), "--check", str(doc)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
