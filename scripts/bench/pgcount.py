"""Database writes counted by PostgreSQL itself, for the peers that persist to it.

Runs in ``.venv-bench`` (psycopg). Each peer gets a database of its own in the benchmark's
throwaway cluster (``postgres.py``), and its writes are read from ``pg_stat_statements``, which
the cluster preloads: for every normalized statement the server executed in that database, how
many times (``calls``) and how many rows it inserted, updated or deleted (``rows``). The view is
updated as each statement ends, so a snapshot taken right after a run is exact (the cumulative
``pg_stat_database`` counters, by contrast, are flushed by each backend only every second or so,
or when it exits). A write is a statement whose verb is INSERT, UPDATE, DELETE or MERGE; reads,
``BEGIN``/``COMMIT`` and the counter's own queries (run from the ``postgres`` database) are not
counted. Write transactions (each one commit, so one WAL flush with the default
``synchronous_commit=on``) are the growth of the cluster's next transaction id: PostgreSQL gives
an id only to a transaction that writes. That figure is cluster-wide, so it holds while the peer
is the only client writing (the benchmark runs one peer at a time; autovacuum could add one).
The same code counts every peer, so their figures compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_VERB = re.compile(r"^\s*(INSERT|UPDATE|DELETE|MERGE)\b", re.I)
_CTE_WRITE = re.compile(r"^\s*WITH\b.*?\b(INSERT|UPDATE|DELETE|MERGE)\b", re.I | re.S)
_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)


class CountingUnavailable(RuntimeError):
    """The server cannot count statements (``pg_stat_statements`` is not loaded)."""


def database_dsn(dsn: str, name: str) -> str:
    """``dsn`` pointed at database ``name``."""
    return make_conninfo(dsn, dbname=name)


def url(dsn: str) -> str:
    """A ``postgresql://`` URL for a libpq DSN (SQLAlchemy-based clients want one)."""
    parts = conninfo_to_dict(dsn)
    user = parts.get("user", "postgres")
    host = parts.get("host", "127.0.0.1")
    query = "?sslmode=disable" if parts.get("sslmode") == "disable" else ""
    return f"postgresql://{user}@{host}:{parts.get('port', 5432)}/{parts['dbname']}{query}"


def create_database(dsn: str, name: str) -> str:
    """Create database ``name`` (dropping one left from an earlier run); its DSN.

    Fails with psycopg's own error, naming the server, when PostgreSQL cannot be reached."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_dsn(dsn, name)


@dataclass
class Snapshot:
    statements: dict[int, tuple[str, int, int]]  # queryid -> (query, calls, rows)
    next_xid: int  # the cluster's next transaction id: one is assigned per writing transaction


class WriteCounter:
    """Snapshots of one database's statements in ``pg_stat_statements``; writes between two."""

    def __init__(self, admin_dsn: str, database: str) -> None:
        self.admin_dsn = admin_dsn
        self.database = database
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            loaded = conn.execute(
                "SELECT 1 FROM pg_settings WHERE name = 'shared_preload_libraries' "
                "AND 'pg_stat_statements' = ANY(string_to_array(replace(setting, ' ', ''), ','))"
            ).fetchone()
            if not loaded:
                raise CountingUnavailable(
                    "pg_stat_statements is not in shared_preload_libraries: writes not counted"
                )
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def snapshot(self) -> Snapshot:
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT s.queryid, s.query, s.calls, s.rows FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
                (self.database,),
            ).fetchall()
            # read-only: taking a snapshot assigns no transaction id
            xid = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        statements: dict[int, tuple[str, int, int]] = {}
        for queryid, query, calls, count in rows:
            # one queryid can appear once per user and top-level flag: add them up
            _, c, r = statements.get(queryid, (query, 0, 0))
            statements[queryid] = (query, c + calls, r + count)
        return Snapshot(statements, int(xid[0]) if xid else 0)

    @staticmethod
    def writes(before: Snapshot, after: Snapshot) -> dict[str, Any]:
        """Write statements and rows written between two snapshots, with the statements."""
        calls = rows = 0
        by_statement: list[dict[str, Any]] = []
        for queryid, (query, c1, r1) in after.statements.items():
            _, c0, r0 = before.statements.get(queryid, (query, 0, 0))
            text = _COMMENT.sub(" ", query)
            match = _VERB.match(text) or _CTE_WRITE.match(text)
            if not match or c1 == c0:
                continue
            calls += c1 - c0
            rows += r1 - r0
            short = " ".join(text.split())
            by_statement.append(
                {
                    "verb": match.group(1).upper(),
                    "statement": short[:120] + ("..." if len(short) > 120 else ""),
                    "calls": c1 - c0,
                    "rows": r1 - r0,
                }
            )
        by_statement.sort(key=lambda s: -s["calls"])
        return {
            "write_statements": calls,
            "rows_written": rows,
            "write_transactions": after.next_xid - before.next_xid,
            "statements": by_statement,
        }
