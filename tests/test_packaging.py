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
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert {name.split("/")[0] for name in names} == {"ares_data", "ares_train", dist_info}

    def shipped(folder: str, suffix: str) -> list[str]:
        return sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(folder) and n.endswith(suffix))

    assert shipped("ares_data/migrations/", ".sql") == sorted(p.name for p in REPO.glob("db/migrations/*.sql"))
    assert shipped("ares_data/prompts/", ".md") == sorted(p.name for p in REPO.glob("prompts/*.md"))
    assert "ares.cli" in zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()


def test_an_installed_wheel_migrates_a_store_and_loads_prompts(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import ares_data; from ares_data.store import Store; from ares_data.teacher.prompts import load; "
            "store = Store('w.db'); "
            f"print(ares_data.__file__.startswith({str(target)!r}), len(store.applied_now), bool(load('score_v1')))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["True", str(len(list((REPO / "db" / "migrations").glob("*.sql")))), "True"]
