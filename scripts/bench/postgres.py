"""A throwaway PostgreSQL cluster for the LangGraph checkpointer, on a free loopback port.

Uses Debian's ``postgresql`` package (``make bench`` installs it when it is missing). The data
directory is a fresh temporary directory owned by the ``postgres`` user (the server refuses to
run as root); ``initdb`` and ``pg_ctl`` run as that user through ``runuser`` when we are root.
Server settings are the defaults: every commit waits for its WAL flush (``fsync=on``,
``synchronous_commit=on``), as a durable checkpointer in production would. The one addition is
``shared_preload_libraries=pg_stat_statements`` when the server ships it (Debian's package does),
so the peers can count their writes from the server itself (``pgcount.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cloudagents.local.emulators import free_port


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed or would not start; the message says why."""


@dataclass
class Postgres:
    bindir: Path
    datadir: Path
    port: int
    version: str
    stat_statements: bool = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _as_postgres(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
                timeout=30,
            )
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with ``initdb``, else ``initdb`` on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _has_stat_statements(bindir: Path) -> bool:
    """Whether this server has the ``pg_stat_statements`` module (``pg_config --pkglibdir``)."""
    try:
        libdir = subprocess.run(
            [str(bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        libdir = str(bindir.parent / "lib")
    return (Path(libdir) / "pg_stat_statements.so").exists()


def _as_postgres(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=True, cwd="/"
    )


def start() -> Postgres:
    """initdb + pg_ctl start on a free port; raises ``PostgresUnavailable`` with the reason."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no initdb; apt-get install postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="cloudagents-bench-pg-"))
    datadir = root / "data"
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres", group="postgres")
            os.chmod(root, 0o700)
        _as_postgres(
            [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust"],
            timeout=120,
        )
        port = free_port()
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root}"
        stat_statements = _has_stat_statements(bindir)
        if stat_statements:
            options += " -c shared_preload_libraries=pg_stat_statements"
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-o",
                options,
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            timeout=90,
        )
        version = _as_postgres([str(bindir / "postgres"), "--version"], timeout=30).stdout.strip()
    except (subprocess.SubprocessError, OSError, KeyError, LookupError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        log = root / "server.log"
        with contextlib.suppress(OSError):
            detail += log.read_text()[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"PostgreSQL did not start: {exc} {detail}".strip()) from exc
    pg = Postgres(
        bindir=bindir,
        datadir=datadir,
        port=port,
        version=version,
        stat_statements=stat_statements,
    )
    _wait_ready(pg)
    return pg


def _wait_ready(pg: Postgres, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run(
            [str(pg.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            pg.stop()
            raise PostgresUnavailable("PostgreSQL started but never accepted connections")
        time.sleep(0.2)
