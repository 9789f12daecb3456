"""Server-sent events for a turn: ``route``, ``retrieval``, ``token``..., ``citation``..., ``escalation``, ``done``.

The events are produced *after* the turn has run: ``token`` events are the final answer split into word chunks
(their texts joined give the answer exactly), not tokens as the model generated them. This keeps every error an
exact HTTP status (the turn has succeeded or failed before the first byte is sent) and gives clients the event
interface a token-by-token stream will use. ``done`` carries the same object as the JSON answer.

Encoding (server) and parsing (client) live here; nothing in this module imports FastAPI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from domainroute.api.models import StreamEvent
from domainroute.schemas import AskResult

EVENT_STREAM = "text/event-stream"
EVENTS = ("route", "retrieval", "token", "citation", "escalation", "done")
_CHUNK = re.compile(r"\s*\S+\s*|\s+")
PASSAGE_FIELDS = ("chunk_id", "doc_id", "title", "section", "line", "doc_type", "effective_date", "tenant", "score")


def word_chunks(text: str) -> list[str]:
    """Split ``text`` into word chunks (each keeps its trailing whitespace); ``"".join(word_chunks(t)) == t``."""
    return _CHUNK.findall(text)


def turn_events(result: AskResult, passages: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events of one finished turn, in order."""
    yield "route", {"route": result.route, "confidence": result.confidence, "adapter": result.adapter}
    yield "retrieval", {"passages": [{k: p.get(k) for k in PASSAGE_FIELDS} for p in passages]}
    for chunk in word_chunks(result.answer):
        yield "token", {"text": chunk}
    for n, citation in enumerate(result.citations, start=1):
        yield "citation", {"n": n, **citation.model_dump()}
    if result.escalation is not None:
        yield "escalation", result.escalation.model_dump()
    yield "done", result.model_dump()


def encode(event: str, data: dict[str, Any], event_id: int) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n".encode()


class EventDecoder:
    """Incremental ``text/event-stream`` parser: feed it lines (without line endings), get events with JSON data."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._event, self._data, self._id = "message", [], None

    def feed(self, line: str) -> StreamEvent | None:
        if not line:
            return self.flush()
        if line.startswith(":"):  # a comment (keep-alive)
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    def flush(self) -> StreamEvent | None:
        """The pending event, if any (end of an event or of the stream)."""
        event = None
        if self._data:
            event = StreamEvent(event=self._event, data=json.loads("\n".join(self._data)), id=self._id)
        self._reset()
        return event


def parse(lines: Iterable[str]) -> Iterator[StreamEvent]:
    """Parse a whole stream given as lines."""
    decoder = EventDecoder()
    for line in lines:
        if (event := decoder.feed(line)) is not None:
            yield event
    if (event := decoder.flush()) is not None:
        yield event
