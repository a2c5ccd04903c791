"""The str Enums of ares_data/enums.py mirror the CHECK lists of the migrated schema, both ways."""

from __future__ import annotations

import re
import sqlite3

from ares_data.enums import CHECKED_COLUMNS, CallStatus, LabelOrigin

CHECK_IN = re.compile(r"CHECK\s*\(\s*(\w+)\s+IN\s*\(([^)]*)\)\s*\)", re.I)


def _check_lists(db_path) -> dict[tuple[str, str], set[str]]:
    con = sqlite3.connect(db_path)
    found = {}
    for table, sql in con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"):
        for column, values in CHECK_IN.findall(sql or ""):
            found[(table, column)] = {v.strip().strip("'") for v in values.split(",")}
    return found


def test_every_check_list_has_an_enum_with_the_same_values(store, db_path):
    checks = _check_lists(db_path)
    assert set(checks) == set(CHECKED_COLUMNS), "a CHECK (col IN (...)) without an Enum, or an Enum without one"
    for key, values in checks.items():
        assert {member.value for member in CHECKED_COLUMNS[key]} == values, key


def test_members_are_the_strings_the_store_holds():
    assert CallStatus.ok == "ok" and f"{CallStatus.ok}" == "ok" and str(LabelOrigin.label_studio) == "label-studio"
