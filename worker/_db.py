"""The review store's schema: plain SQL files in ``worker/migrations``, applied in order.

``NNNN_name.sql`` files are versions; ``schema_migrations`` records which ran. ``upgrade``
applies the missing ones, each in its own transaction, under an advisory lock so two
pods starting at once do not race. A worker never migrates on its own: it checks
(``require_current``) and refuses to start against an older schema, because code that
writes columns a database lacks fails per message, long after the start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

MIGRATIONS = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK = 0x6D6F6465  # advisory lock id: "mode"


class DatabaseBehind(RuntimeError):
    """The database's schema is older than this code's migrations."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match[1]), path.stem, path.read_text(encoding="utf-8")))
    return found


def connect(url: str) -> psycopg.Connection[Any]:
    # autocommit: every write says where its transaction is (``conn.transaction()``)
    return psycopg.connect(
        url, connect_timeout=5, application_name="moderation-worker", autocommit=True
    )


def applied(conn: psycopg.Connection[Any]) -> int:
    """The highest version applied (0 for an empty database). Reads only."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def upgrade(url: str) -> list[str]:
    """Apply what is missing; the names applied (empty: already current)."""
    done: list[str] = []
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            current = applied(conn)
            for migration in migrations():
                if migration.version <= current:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                done.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    return done


def status(url: str) -> tuple[int, int]:
    """(applied, latest) versions."""
    latest = max((m.version for m in migrations()), default=0)
    with connect(url) as conn:
        return applied(conn), latest


def require_current(url: str) -> None:
    have, latest = status(url)
    if have < latest:
        raise DatabaseBehind(
            f"the review store's schema is at version {have}, this worker needs {latest}: "
            "run `python -m worker db upgrade` (MODERATION_DATABASE_URL) first"
        )
