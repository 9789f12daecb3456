"""Citations: map the model's [n] markers to the passages retrieved in this turn, drop the rest."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_MARK = re.compile(r"\[(\d{1,2})\]")
_SOURCES = re.compile(r"^\s*sources?\s*:.*$", re.I | re.M)


@dataclass(frozen=True)
class Cited:
    text: str
    citations: list[dict[str, str]]
    dropped: int  # markers that pointed at no passage of this turn


def attach_citations(draft: str, passages: list[dict[str, Any]]) -> Cited:
    """Renumber markers in order of first use; every citation is a passage retrieved in this turn."""
    body = _SOURCES.sub("", draft).strip()
    order: list[int] = []
    dropped = 0
    for match in _MARK.finditer(body):
        n = int(match.group(1))
        if 1 <= n <= len(passages):
            if n not in order:
                order.append(n)
        else:
            dropped += 1
    if not order and passages:
        # No marker in the body: the "Sources:" line may still name passages.
        for match in _SOURCES.finditer(draft):
            for n in (int(m) for m in _MARK.findall(match.group(0))):
                if 1 <= n <= len(passages) and n not in order:
                    order.append(n)
    new_number = {n: i + 1 for i, n in enumerate(order)}

    def renumber(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f"[{new_number[n]}]" if n in new_number else ""

    text = re.sub(r"\s+([.,;:])", r"\1", _MARK.sub(renumber, body)).strip()
    citations = [
        {"doc_id": passages[n - 1]["doc_id"], "chunk_id": passages[n - 1]["chunk_id"], "title": passages[n - 1]["title"]}
        for n in order
    ]
    return Cited(text=text, citations=citations, dropped=dropped)
