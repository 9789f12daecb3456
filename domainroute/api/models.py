"""Wire models of the claims API, shared by the server (``domainroute.api.app``) and the client.

Pure pydantic: importing this module loads neither FastAPI nor the model stack. A turn's result is
``domainroute.schemas.AskResult``, the object ``domainroute ask --json`` prints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domainroute.schemas import MAX_QUERY_CHARS, AskResult, Citation, Claim

THREAD_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""Thread ids the API accepts in paths (the same alphabet ``AgentService`` accepts)."""

QUERY_PATTERN = r"^[^\u0000]*\S[^\u0000]*$"
"""A query has a non-blank character and no NUL (JSON Schema / ECMA-262 syntax; documented, checked in code)."""

ThreadStatus = Literal["new", "answered", "awaiting_human", "refused"]


class MessageRequest(BaseModel):
    """One customer turn. ``query`` longer than ``MAX_QUERY_CHARS`` answers 413; empty answers 422."""

    model_config = ConfigDict(extra="forbid")

    # The limits are documented in the schema but checked by the API itself, so that an over-long query is a 413
    # and an empty one a 422 with the same message as the CLI's.
    query: str = Field(description="The customer's question (1 to 4000 characters after trimming).",
                       json_schema_extra={"maxLength": MAX_QUERY_CHARS, "pattern": QUERY_PATTERN})
    claim: Claim | None = Field(None, description="The claim the conversation is about, if any.")


class ResumeRequest(BaseModel):
    """A human decision for a paused thread; the same fields and rule as ``graphs.nodes.HumanDecision``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={  # "edit needs text", for schema readers
        "if": {"properties": {"action": {"const": "edit"}}, "required": ["action"]},
        "then": {"required": ["text"], "properties": {"text": {"type": "string", "pattern": r"\S"}}},
    })

    action: Literal["approve", "edit", "reject"] = Field(
        description="approve: send the draft; edit: send `text` instead; reject: a specialist takes the case over.")
    text: str | None = Field(None, description="The answer to send (required with edit; optional with reject).")
    reviewer: str | None = Field(None, description="Who decided (recorded with the decision).")

    @model_validator(mode="after")
    def _text_for_edit(self) -> ResumeRequest:
        if self.action == "edit" and not (self.text and self.text.strip()):
            raise ValueError("an 'edit' decision needs the edited answer text (text)")
        return self


class ReviewPacket(BaseModel):
    """What a reviewer sees for a paused thread (personal data redacted by the graph)."""

    model_config = ConfigDict(extra="allow")

    route: str | None = None
    claim: dict[str, Any] | None = None
    reasons: list[str] = Field(default_factory=list)
    score: float | None = None
    query: str = ""
    summary: str = ""
    citations: list[Citation] = Field(default_factory=list)
    draft: str = ""


class ThreadInfo(BaseModel):
    """A conversation: ``status`` is ``new`` until its first message."""

    thread_id: str
    created_at: str = Field(description="When the thread was created (UTC, ISO 8601).")
    status: ThreadStatus
    turns: int = Field(ge=0, description="Customer messages so far.")
    result: AskResult | None = Field(None, description="The latest turn's result, as `ask --json` prints it.")
    review: ReviewPacket | None = Field(None, description="Present while the thread waits for a human decision.")


class Escalation(BaseModel):
    thread_id: str
    created_at: str | None = None
    packet: ReviewPacket


class EscalationList(BaseModel):
    escalations: list[Escalation]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(description="component -> 'ok', 'loading' or 'error: ...'")


class Problem(BaseModel):
    """An RFC 9457 problem detail; every error the API returns has this shape (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URI naming the kind of problem, e.g. urn:domainroute:problem:not-found.")
    title: str
    status: int
    detail: str
    instance: str | None = None


class StreamEvent(BaseModel):
    """One server-sent event of ``POST /v1/threads/{id}/messages`` with ``Accept: text/event-stream``."""

    event: str
    data: dict[str, Any]
    id: str | None = None
