"""Validation shared by every retriever backend: tenant names, search arguments and filter values.

Backends build their native filters (a LanceDB expression, a Weaviate ``Filter``) from a ``ResolvedSearch`` only,
so a value that reaches a store has always passed the allow-lists below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, get_args

from domainroute.errors import InputError
from domainroute.retrievers.base import SearchFilters
from domainroute.schemas import validate_query

SearchMode = Literal["hybrid", "vector", "keyword"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
MAX_K = 50
"""Most passages one search returns, whatever the caller asks for."""
OPEN_END = date(9999, 12, 31)
"""How an open ``valid_to`` (the newest version) is stored: later than any date of loss."""

_TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VALUE = re.compile(r"[a-z0-9_-]{1,64}")


def validate_tenant(tenant: str) -> str:
    """Return ``tenant`` or raise InputError: letters, digits, '-' or '_', at most 64 characters."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise InputError(f"tenant must be 1-64 letters, digits, '-' or '_', got {tenant!r}")
    return tenant


def validate_value(field: str, value: str) -> str:
    """Return a line / doc_type value or raise InputError: lower-case letters, digits, '-' or '_'."""
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
        raise InputError(f"{field} values must be 1-64 of [a-z0-9_-], got {value!r}")
    return value


def _values(field: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(values, str):  # ("auto") instead of ("auto",) would otherwise filter on single letters
        raise InputError(f"{field} must be a tuple of values, got the string {values!r}")
    return tuple(validate_value(field.removesuffix("s"), v) for v in values)


@dataclass(frozen=True, slots=True)
class ResolvedSearch:
    """Search arguments after validation: what a backend turns into its own query."""

    query: str
    tenant: str
    k: int
    alpha: float
    mode: SearchMode
    lines: tuple[str, ...]
    doc_types: tuple[str, ...]
    as_of: date


def resolve_search(
    query: str,
    *,
    tenant: str,
    k: int,
    filters: SearchFilters,
    alpha: float,
    mode: str,
) -> ResolvedSearch:
    """Validate every search argument (InputError names the bad one); cap k at MAX_K; as_of defaults to today."""
    try:
        text = validate_query(query)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if mode not in SEARCH_MODES:
        raise InputError(f"unknown search mode {mode!r}; known: {', '.join(SEARCH_MODES)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 (keyword only) and 1 (vector only), got {alpha!r}")
    as_of = filters.as_of
    if as_of is not None and not isinstance(as_of, date):
        raise InputError(f"as_of must be a date, got {as_of!r}")
    if isinstance(as_of, datetime):
        as_of = as_of.date()
    return ResolvedSearch(
        query=text,
        tenant=validate_tenant(tenant),
        k=min(k, MAX_K),
        alpha=float(alpha),
        mode=mode,  # type: ignore[arg-type]  # checked against SEARCH_MODES above
        lines=_values("lines", filters.lines),
        doc_types=_values("doc_types", filters.doc_types),
        as_of=as_of or date.today(),
    )
