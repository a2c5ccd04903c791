"""The wheel ships db/migrations and prompts/ inside ares_data, and nothing named db or prompts."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    pytest.importorskip("setuptools")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-w", str(out), "--no-deps",
                    "--no-build-isolation"], check=True, capture_output=True)
    return next(out.glob("ares_toolkit-*.whl"))


def test_the_wheel_holds_the_sql_and_prompts_as_ares_data_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"ares_data", "ares_train", wheel.name.split("-py3")[0] + ".dist-info"}
    sql = sorted(p.name for p in (REPO / "db" / "migrations").glob("*.sql"))
    assert sorted(n.split("/")[-1] for n in names if n.startswith("ares_data/migrations/") and n.endswith(".sql")) == sql
    prompts = sorted(p.name for p in (REPO / "prompts").glob("*.md"))
    assert sorted(n.split("/")[-1] for n in names if n.startswith("ares_data/prompts/") and n.endswith(".md")) == prompts
    assert "ares.cli" in zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()


def test_an_installed_wheel_migrates_a_store_and_loads_prompts(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import ares_data; from ares_data.store import Store; from ares_data.teacher.prompts import load; "
            "store = Store('w.db'); print(ares_data.__file__.startswith(%r), len(store.applied_now), bool(load('score_v1')))"
            % str(target))
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", str(len(list((REPO / "db" / "migrations").glob("*.sql")))), "True"]
