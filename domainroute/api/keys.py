"""Per-tenant API keys, stored hashed in SQLite (``<data_dir>/keys.sqlite``).

A key reads ``drk_<key id>_<secret>``. Only the key id, a random per-key salt and ``sha256(salt + secret)`` are
stored; the secret is shown once, by ``domainroute keys create TENANT``, and cannot be recovered. The secret is
256 random bits, so a salted SHA-256 is enough (a slow hash protects low-entropy passwords, not random keys).

Roles: ``full`` (everything), ``ask`` (create threads, send messages, read threads), ``review`` (read threads,
list escalations, resume paused threads). A key whose role does not allow an endpoint gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from domainroute.errors import InputError

Role = Literal["full", "ask", "review"]
Scope = Literal["read", "ask", "review"]
ROLES: tuple[str, ...] = get_args(Role)
SCOPES: dict[str, frozenset[str]] = {"full": frozenset({"read", "ask", "review"}), "ask": frozenset({"read", "ask"}),
                                     "review": frozenset({"read", "review"})}
PREFIX = "drk"
KEYS_FILE = "keys.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    role       TEXT NOT NULL,
    name       TEXT,
    salt       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


def check_tenant(value: str) -> str:
    """The same rule as ``Settings.tenant``: letters, digits, '-' or '_' (ASCII, at most 64 characters)."""
    if not value or len(value) > 64 or not value.isascii() or not value.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"tenant must be 1-64 ASCII letters, digits, '-' or '_', got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    tenant: str
    role: Role
    name: str | None
    created_at: str
    revoked_at: str | None = None

    def allows(self, scope: Scope) -> bool:
        return scope in SCOPES[self.role]


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class KeyStore:
    """Create, verify, list and revoke keys. Safe to share between threads and processes (one connection per call)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)
        self.path.chmod(0o600)

    @classmethod
    def in_dir(cls, data_dir: Path) -> KeyStore:
        return cls(Path(data_dir) / KEYS_FILE)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            yield db

    def create(self, tenant: str, *, role: Role = "full", name: str | None = None) -> tuple[str, ApiKey]:
        """Return (the key to hand out, its record). The key itself is not stored."""
        check_tenant(tenant)
        if role not in SCOPES:
            raise InputError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
        if name is not None and len(name) > 200:
            raise InputError("key name is longer than 200 characters")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        record = ApiKey(key_id=key_id, tenant=tenant, role=role, name=name,
                        created_at=datetime.now(UTC).isoformat(timespec="seconds"))
        with self._connect() as db:
            db.execute("INSERT INTO api_keys (key_id, tenant, role, name, salt, hash, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key_id, tenant, role, name, salt, _digest(salt, secret), record.created_at))
        return f"{PREFIX}_{key_id}_{secret}", record

    def verify(self, token: str) -> ApiKey | None:
        """The key's record if ``token`` is a live key, else None (malformed, unknown, wrong secret or revoked)."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
            return None
        with self._connect() as db:
            row = db.execute("SELECT key_id, tenant, role, name, created_at, revoked_at, salt, hash FROM api_keys "
                             "WHERE key_id = ?", (parts[1],)).fetchone()
        if row is None:
            return None
        *fields, salt, stored = row
        if not hmac.compare_digest(_digest(salt, parts[2]), stored):
            return None
        record = ApiKey(*fields)
        return None if record.revoked_at else record

    def list(self) -> list[ApiKey]:
        with self._connect() as db:
            rows = db.execute("SELECT key_id, tenant, role, name, created_at, revoked_at FROM api_keys "
                              "ORDER BY created_at, key_id").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as db:
            changed = db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                                 (now, key_id)).rowcount
        found = {k.key_id: k for k in self.list()}.get(key_id)
        if found is None:
            raise InputError(f"no key with id {key_id!r}; see: domainroute keys list")
        if not changed:
            raise InputError(f"key {key_id!r} was already revoked at {found.revoked_at}")
        return found
