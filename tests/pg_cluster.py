"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder, 127.0.0.1 on a free port.

initdb refuses to run as root, so as root the cluster belongs to `nobody` (run through
`runuser`). Durability is switched off: the cluster lives for one test session. Set
`ARES_TEST_PG_URL` to an existing server's admin URL to use it instead of starting one.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from servers import free_port

ENV_URL = "ARES_TEST_PG_URL"
UNPRIVILEGED_USER = "nobody"
FAST_UNSAFE = "-F -c full_page_writes=off -c synchronous_commit=off -c max_connections=50"


class ClusterUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says why (shown as the skip reason)."""


def find_bindir() -> Path:
    """The folder of `initdb` and `pg_ctl`: on PATH, or the newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise ClusterUnavailable("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
                                 "`make test` installs it with apt-get")
    return Path(found[-1]).parent


def _run(argv: list[str], as_user: str | None) -> None:
    name = Path(argv[0]).name
    if as_user:
        argv = ["runuser", "-u", as_user, "--", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterUnavailable(f"{name} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ClusterUnavailable(f"{name} failed: " + " | ".join(tail))


def _start(bindir: Path, base: Path, as_user: str | None, tries: int = 3) -> int:
    """Start the server on a free port (another port if one was taken meanwhile); return the port."""
    failure = ClusterUnavailable("pg_ctl was not run")
    for _ in range(tries):
        port = free_port()
        try:
            _run([str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "server.log"), "-w",
                  "-t", "60", "-o", f"-h 127.0.0.1 -p {port} -k {base} {FAST_UNSAFE}", "start"], as_user)
            return port
        except ClusterUnavailable as exc:
            failure = exc
    raise failure


@contextmanager
def running_cluster() -> Iterator[str]:
    """Yield the admin URL (user `postgres`, database `postgres`) of a cluster that is stopped and
    deleted when the block ends."""
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    bindir = find_bindir()
    as_user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
    # Not under pytest's tmp dir: that one is private to root, and the server runs as `nobody`.
    base = Path(tempfile.mkdtemp(prefix="ares-pg-"))
    data = base / "data"
    try:
        if as_user:
            shutil.chown(base, as_user)
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-locale", "--no-sync", "--no-instructions"], as_user)
        port = _start(bindir, base, as_user)
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], as_user)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Yield the URL of a new, empty database; it is dropped (with any connection left) afterwards."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from ares_data.store import resolve_url

    admin_url = resolve_url(admin_url)
    name = f"ares_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
