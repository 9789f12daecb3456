"""Block Kit builders: pure functions from the agent's results to the messages and modal the bot sends.

Each message builder returns ``{"text": fallback, "blocks": [...]}``, ready for ``chat.postMessage`` /
``chat.update``. Text that came from a user or the model is escaped, so it cannot ping ``@channel`` or forge links.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domainroute.schemas import AskResult, Citation

APPROVE = "escalation_approve"
EDIT = "escalation_edit"
TAKE_OVER = "escalation_take_over"
DECISION_BLOCK = "escalation_decision"
EDIT_MODAL = "escalation_edit_modal"
EDIT_BLOCK = "edited_answer"
EDIT_INPUT = "text"

ACTIONS = {APPROVE: "approve", EDIT: "edit", TAKE_OVER: "reject"}
"""Button action id -> the graph's decision action."""
DECIDED_LABELS = {"approve": "Approved", "edit": "Edited", "reject": "Taken over"}

SECTION_LIMIT = 3000  # Slack's limit for a section's text
MODAL_TEXT_LIMIT = 3000

PAUSED_REPLY = ("Thanks, I've noted that. A claims specialist is reviewing this conversation right now, "
                "and their answer will be posted here in this thread.")

Message = dict[str, Any]


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives a meaning to."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _sections(text: str) -> list[dict[str, Any]]:
    """One section per 3000 characters: long answers are split, never cut."""
    text = text or "_(empty answer)_"
    return [{"type": "section", "text": _mrkdwn(text[i:i + SECTION_LIMIT])} for i in range(0, len(text), SECTION_LIMIT)]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def format_time(at: float) -> str:
    """A Slack date token (shown in the reader's time zone) with a UTC fallback."""
    fallback = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def sources_block(citations: list[Citation] | list[dict[str, Any]]) -> dict[str, Any] | None:
    """The numbered sources; number n is the answer's [n]."""
    items = [c if isinstance(c, Citation) else Citation(**c) for c in citations]
    if not items:
        return None
    lines = [f"{n}. {escape(c.title)} (`{escape(c.chunk_id)}`)" for n, c in enumerate(items, start=1)]
    return {"type": "section", "text": _mrkdwn(("*Sources*\n" + "\n".join(lines))[:SECTION_LIMIT])}


def route_line(result: AskResult) -> str:
    adapter = f"`{escape(result.adapter)}`" if result.adapter else "base model"
    return f"route: *{escape(result.route or 'unknown')}* ({result.confidence:.2f}) · adapter: {adapter}"


def answer_message(result: AskResult, *, note: str | None = None) -> Message:
    """The answer, a context line with route and adapter (and ``note``), then the sources."""
    context = route_line(result)
    if result.status == "awaiting_human":
        context += " · waiting for a specialist"
    if note:
        context += f" · {note}"
    blocks = [*_sections(escape(result.answer)), _context(context)]
    sources = None if result.status == "awaiting_human" else sources_block(result.citations)
    if sources:
        blocks.append(sources)
    return {"text": result.answer or "(empty answer)", "blocks": blocks}


def notice_message(text: str) -> Message:
    """A plain reply (the paused-thread note, an input problem)."""
    return {"text": text, "blocks": [{"type": "section", "text": _mrkdwn(escape(text))}]}


def decided_line(action: str, user: str, at: float) -> str:
    return f"*{DECIDED_LABELS.get(action, action)}* by <@{user}> at {format_time(at)}"


def _claim_text(claim: dict[str, Any] | None) -> str:
    if not claim:
        return "none"
    return (f"{escape(str(claim.get('line')))} · amount {float(claim.get('amount', 0)):,.2f} · policy "
            f"{claim.get('policy_age_days')} days · {claim.get('prior_claims_12m')} prior claims (12 months) · "
            f"{claim.get('contacts_on_claim')} contacts")


def _buttons(thread_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": DECISION_BLOCK,
        "elements": [
            {"type": "button", "action_id": APPROVE, "text": _plain("Approve"), "style": "primary", "value": thread_id},
            {"type": "button", "action_id": EDIT, "text": _plain("Edit"), "value": thread_id},
            {"type": "button", "action_id": TAKE_OVER, "text": _plain("Take over"), "style": "danger",
             "value": thread_id,
             "confirm": {"title": _plain("Take over this case?"),
                         "text": _mrkdwn("The customer is told a specialist will contact them directly; "
                                         "the agent stops answering in this conversation."),
                         "confirm": _plain("Take over"), "deny": _plain("Cancel")}},
        ],
    }


def packet_message(packet: dict[str, Any], *, thread_id: str, origin_channel: str,
                   decision: tuple[str, str, float] | None = None, closed: str | None = None) -> Message:
    """The redacted escalation packet: buttons while open; ``(action, user, at)`` once decided, or a ``closed``
    note when it was resolved outside Slack."""
    reasons = ", ".join(escape(str(r)) for r in packet.get("reasons") or []) or "none given"
    score = packet.get("score")
    fields = [
        _mrkdwn(f"*Route*\n{escape(str(packet.get('route') or 'unknown'))}"),
        _mrkdwn(f"*Score*\n{float(score):.2f}" if score is not None else "*Score*\nn/a"),
        _mrkdwn(f"*Reasons*\n{reasons}"),
        _mrkdwn(f"*From*\n<#{origin_channel}>"),
        _mrkdwn(f"*Claim*\n{_claim_text(packet.get('claim'))}"),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain("Escalation: a conversation needs a decision")},
        {"type": "section", "fields": fields},
        {"type": "section", "text": _mrkdwn(f"*Customer asked*\n>{escape(packet.get('query', ''))}"[:SECTION_LIMIT])},
    ]
    if packet.get("summary"):
        blocks.append({"type": "section",
                       "text": _mrkdwn(f"*Conversation*\n{escape(packet['summary'])}"[:SECTION_LIMIT])})
    draft = packet.get("draft") or ""
    blocks.append({"type": "section",
                   "text": _mrkdwn(f"*Draft answer*\n{escape(draft) if draft else '_no draft_'}"[:SECTION_LIMIT])})
    sources = sources_block(packet.get("citations") or [])
    if sources:
        blocks.append(sources)
    blocks.append(_context(f"conversation `{escape(thread_id)}` · personal data redacted"))
    if closed is not None:
        blocks.append(_context(escape(closed)))
        text = f"Escalation ({packet.get('route')}): {closed}"
    elif decision is None:
        blocks.append(_buttons(thread_id))
        text = f"Escalation ({packet.get('route')}): {reasons}. Needs a decision."
    else:
        action, user, at = decision
        blocks.append(_context(decided_line(action, user, at)))
        text = f"Escalation ({packet.get('route')}): {DECIDED_LABELS.get(action, action).lower()} by <@{user}>."
    return {"text": text, "blocks": blocks}


def already_decided_text(action: str | None, user: str | None, at: float | None) -> str:
    if action is None or user is None or at is None:
        return "This escalation has already been decided."
    return (f"Thanks, but this escalation was already decided: {DECIDED_LABELS.get(action, action).lower()} by "
            f"<@{user}> at {format_time(at)}. Nothing was changed.")


def edit_modal(draft: str, private_metadata: str) -> dict[str, Any]:
    """The Edit modal, pre-filled with the (redacted) draft."""
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": EDIT_INPUT, "multiline": True,
                               "max_length": MODAL_TEXT_LIMIT}
    if draft.strip():
        element["initial_value"] = draft[:MODAL_TEXT_LIMIT]
    return {
        "type": "modal",
        "callback_id": EDIT_MODAL,
        "private_metadata": private_metadata,
        "title": _plain("Edit the answer"),
        "submit": _plain("Send to customer"),
        "close": _plain("Cancel"),
        "blocks": [
            {"type": "input", "block_id": EDIT_BLOCK, "label": _plain("The answer the customer will see"),
             "element": element},
        ],
    }
