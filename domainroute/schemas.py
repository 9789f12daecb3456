"""Typed data shared by the graph, the CLI and the contracts (`route --jsonl`, `escalation --jsonl`, `ask --json`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_QUERY_CHARS = 4000
"""Longest query accepted at any boundary; longer input is refused, never truncated silently."""


class Claim(BaseModel):
    """The claim a conversation is about, as the claims system sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    line: Literal["auto", "home", "health"]
    amount: float = Field(ge=0, allow_inf_nan=False)
    policy_age_days: int = Field(ge=0)
    prior_claims_12m: int = Field(ge=0)
    contacts_on_claim: int = Field(ge=1)


class Query(BaseModel):
    """One user turn."""

    model_config = ConfigDict(extra="forbid")

    query: str
    claim: Claim | None = None

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: str) -> str:
        return validate_query(value)


def validate_query(value: str) -> str:
    """Return the stripped query or raise ValueError with a message a user can act on."""
    if not isinstance(value, str):
        raise ValueError("query must be a string")
    text = value.strip()
    if not text:
        raise ValueError("query is empty; type a question, e.g. \"is my windshield covered?\"")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"query is {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
    if "\x00" in text:
        raise ValueError("query contains a NUL character")
    return text


class Passage(BaseModel):
    """A retrieved chunk, as the retriever tool returns it and as answers cite it."""

    model_config = ConfigDict(frozen=True)

    chunk_id: str
    doc_id: str
    title: str
    section: str = ""
    text: str
    line: str
    doc_type: str
    effective_date: str
    version: int = 1
    tenant: str
    score: float = 0.0


class Citation(BaseModel):
    doc_id: str
    chunk_id: str
    title: str


class EscalationDecision(BaseModel):
    """What `escalation --jsonl` writes per line and what the graph records."""

    escalate: bool
    score: float = Field(ge=0.0, le=1.0)
    reasons: list[str] = Field(default_factory=list)


class RouteDecision(BaseModel):
    """What `route --jsonl` writes per line."""

    route: str
    confidence: float = Field(ge=0.0, le=1.0)


class GroundingSummary(BaseModel):
    """What the grounding check did this turn (``ask --json`` "grounding"; null for refused turns).

    checked / supported: facts (amounts, dates, durations, phone numbers, addresses, form and coverage names) in
    the model's first draft, and how many a cited passage of the turn states. removed: citation markers that
    pointed at no passage of the turn. action: none (draft shown as written), regenerated (a second draft passed),
    extractive (the passages' own sentences are quoted), escalated (nothing grounded to show; reason "ungrounded").
    """

    checked: int = Field(ge=0)
    supported: int = Field(ge=0)
    removed: int = Field(ge=0)
    action: Literal["none", "regenerated", "extractive", "escalated"]


class AskResult(BaseModel):
    """The object `ask --json` prints (and the claims API returns)."""

    thread_id: str
    status: Literal["answered", "awaiting_human", "refused"]
    route: str
    confidence: float
    adapter: str | None
    answer: str
    citations: list[Citation]
    escalation: EscalationDecision | None
    grounding: GroundingSummary | None = None
