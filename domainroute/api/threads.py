"""Which tenant owns which thread: the API's thread ids are scoped to the tenant whose key created them.

Stored in SQLite (``<data_dir>/api.sqlite``) beside the checkpoints, so ownership survives restarts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

OWNERS_FILE = "api.sqlite"


class ThreadOwners:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS thread_owners (thread_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
                       "created_at TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS thread_owners_tenant ON thread_owners (tenant)")

    @classmethod
    def in_dir(cls, data_dir: Path) -> ThreadOwners:
        return cls(Path(data_dir) / OWNERS_FILE)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            yield db

    def add(self, thread_id: str, tenant: str) -> str:
        """Record a new thread; return its creation time (UTC, ISO 8601). A taken id raises sqlite3.IntegrityError."""
        created_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._connect() as db:
            db.execute("INSERT INTO thread_owners (thread_id, tenant, created_at) VALUES (?, ?, ?)",
                       (thread_id, tenant, created_at))
        return created_at

    def created_at(self, thread_id: str, tenant: str) -> str | None:
        """When ``tenant`` created ``thread_id``; None if the thread is unknown or another tenant's."""
        with self._connect() as db:
            row = db.execute("SELECT created_at FROM thread_owners WHERE thread_id = ? AND tenant = ?",
                             (thread_id, tenant)).fetchone()
        return row[0] if row else None

    def threads_of(self, tenant: str) -> set[str]:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT thread_id FROM thread_owners WHERE tenant = ?", (tenant,))}
