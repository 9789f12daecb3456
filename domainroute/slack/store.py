"""What the Slack bot remembers, in SQLite beside the checkpoints (``<data_dir>/slack.sqlite``).

- conversations: Slack thread (channel + thread_ts) -> LangGraph thread id;
- handled: event ids and message keys already taken, so Slack's retries and the app_mention/message pair for
  one message are handled once (at most once: a crash after the ack loses that event rather than answering twice);
- packets: escalation packet message (channel + ts) -> LangGraph thread, the Slack thread it came from, and who
  decided it and when. Deciding is a compare-and-set, so two clicks cannot both resume the graph.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HANDLED_KEEP_SECONDS = 2 * 24 * 3600
"""Slack retries an event for about an hour; handled keys older than this are pruned when the store opens."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    channel TEXT NOT NULL, thread_ts TEXT NOT NULL, thread_id TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (channel, thread_ts));
CREATE TABLE IF NOT EXISTS handled (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS packets (
    channel TEXT NOT NULL, ts TEXT NOT NULL, thread_id TEXT NOT NULL,
    origin_channel TEXT NOT NULL, origin_thread_ts TEXT NOT NULL, packet TEXT NOT NULL, posted_at REAL NOT NULL,
    decided_by TEXT, decided_action TEXT, decided_at REAL,
    PRIMARY KEY (channel, ts));
"""


@dataclass(frozen=True)
class PacketRecord:
    """An escalation packet message and its decision, if any."""

    channel: str
    ts: str
    thread_id: str
    origin_channel: str
    origin_thread_ts: str
    packet: dict[str, Any]
    decided_by: str | None = None
    decided_action: str | None = None
    decided_at: float | None = None

    @property
    def decided(self) -> bool:
        return self.decided_by is not None


class SlackStore:
    """Thread-safe: every call opens its own short connection (SQLite serialises the writes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute("DELETE FROM handled WHERE at < ?", (time.time() - HANDLED_KEEP_SECONDS,))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(str(self.path), timeout=10, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: no corruption; a power cut may lose the last writes
        try:
            yield db
        finally:
            db.close()

    # ---- de-duplication ---------------------------------------------------------------------------------
    def claim(self, key: str) -> bool:
        """True the first time ``key`` is claimed, False ever after (until pruned)."""
        with self._connect() as db:
            cur = db.execute("INSERT OR IGNORE INTO handled (key, at) VALUES (?, ?)", (key, time.time()))
            return cur.rowcount == 1

    # ---- conversations ----------------------------------------------------------------------------------
    def conversation(self, channel: str, thread_ts: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT thread_id FROM conversations WHERE channel = ? AND thread_ts = ?",
                             (channel, thread_ts)).fetchone()
        return row[0] if row else None

    def save_conversation(self, channel: str, thread_ts: str, thread_id: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO conversations (channel, thread_ts, thread_id, created_at) "
                       "VALUES (?, ?, ?, ?)", (channel, thread_ts, thread_id, time.time()))

    def forget_conversation(self, channel: str, thread_ts: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM conversations WHERE channel = ? AND thread_ts = ?", (channel, thread_ts))

    # ---- escalation packets -----------------------------------------------------------------------------
    def save_packet(self, *, channel: str, ts: str, thread_id: str, origin_channel: str, origin_thread_ts: str,
                    packet: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO packets (channel, ts, thread_id, origin_channel, origin_thread_ts, packet, posted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (channel, ts, thread_id, origin_channel, origin_thread_ts, json.dumps(packet, default=str),
                 time.time()),
            )

    def packet(self, channel: str, ts: str) -> PacketRecord | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT channel, ts, thread_id, origin_channel, origin_thread_ts, packet, decided_by, decided_action, "
                "decided_at FROM packets WHERE channel = ? AND ts = ?", (channel, ts)).fetchone()
        if row is None:
            return None
        return PacketRecord(*row[:5], packet=json.loads(row[5]), decided_by=row[6], decided_action=row[7],
                            decided_at=row[8])

    def claim_decision(self, channel: str, ts: str, *, user: str, action: str,
                       at: float | None = None) -> tuple[bool, PacketRecord | None]:
        """Record ``user``'s decision unless someone decided first. (won, the packet as stored now)."""
        with self._connect() as db:
            cur = db.execute(
                "UPDATE packets SET decided_by = ?, decided_action = ?, decided_at = ? "
                "WHERE channel = ? AND ts = ? AND decided_by IS NULL",
                (user, action, time.time() if at is None else at, channel, ts),
            )
            won = cur.rowcount == 1
        return won, self.packet(channel, ts)

    def release_decision(self, channel: str, ts: str) -> None:
        """Undo a decision whose resume failed, so a reviewer can try again."""
        with self._connect() as db:
            db.execute("UPDATE packets SET decided_by = NULL, decided_action = NULL, decided_at = NULL "
                       "WHERE channel = ? AND ts = ?", (channel, ts))
