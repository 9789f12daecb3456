"""Prompt text. The base model is pretrained on exactly this format, so training and inference share it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from domainroute.schemas import Passage

SYSTEM_PROMPT = "You are a careful insurance assistant. Answer from the numbered passages only and cite them as [n]."
SNIPPET_WORDS = 55
_WORD = re.compile(r"[a-z0-9$%.,]+")
_STOP = frozenset(
    "a an the and or of to in on for is are was were be been do does did i my me we our you your it its this that "
    "what how when why who which can could will would should if at by with from as about any there their they "
    "not no yes have has had get got so than then just".split()
)


def sentences(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in re.split(r"(?<=[.!?;:])\s+(?=[A-Z0-9(\"$])", flat) if s.strip()]


def content_words(text: str) -> set[str]:
    return {w.strip(".,") for w in _WORD.findall(text.lower())} - _STOP - {""}


def snippet(text: str, query: str, *, max_words: int = SNIPPET_WORDS) -> str:
    """The sentences of a passage that overlap the query most, in their original order, within ``max_words``."""
    parts = sentences(text.split("\n", 1)[1] if "\n" in text else text)
    if not parts:
        return ""
    wanted = content_words(query)
    ranked = sorted(range(len(parts)), key=lambda i: (-len(content_words(parts[i]) & wanted), i))
    keep, words = [], 0
    for i in ranked:
        n = len(parts[i].split())
        if keep and words + n > max_words:
            continue
        keep.append(i)
        words += n
        if words >= max_words:
            break
    return " ".join(parts[i] for i in sorted(keep))


def render_passages(passages: Sequence[Passage], query: str) -> str:
    blocks = []
    for n, p in enumerate(passages, start=1):
        blocks.append(f"[{n}] {p.title} - {p.section}\n{snippet(p.text, query)}")
    return "\n".join(blocks)


def user_prompt(query: str, passages: Sequence[Passage]) -> str:
    if not passages:
        return f"Passages: none\nQuestion: {query}"
    return f"Passages:\n{render_passages(passages, query)}\nQuestion: {query}"


def regeneration_prompt(query: str, passages: Sequence[Passage], unsupported: Sequence[str],
                        missing: Sequence[str] = ()) -> str:
    """The user prompt for the one retry after a grounding check: the same passages, the problems named.

    ``unsupported``: facts of the draft no cited passage states; ``missing``: what the question asks for and the
    draft did not state (e.g. "amount", "time limit").
    """
    problems = []
    if unsupported:
        named = ", ".join(f'"{text}"' for text in unsupported)
        problems.append(f"the previous answer stated {named}, which the passages do not say")
    if missing:
        problems.append(f"the previous answer did not give the {' or '.join(missing)} the question asks for")
    note = (f"Note: {'; '.join(problems)}. Use only amounts, dates, numbers and names that appear in a passage, "
            "and cite that passage as [n].")
    if not passages:
        return f"Passages: none\n{note}\nQuestion: {query}"
    return f"Passages:\n{render_passages(passages, query)}\n{note}\nQuestion: {query}"


EXTRACTIVE_LINE = 'According to {title} [{n}]: "{sentence}"'
"""The extractive answer's format: one line per quoted sentence, verbatim from the cited passage."""


def extractive_line(title: str, n: int, sentence: str) -> str:
    return EXTRACTIVE_LINE.format(title=title, n=n, sentence=sentence)


def ungrounded_reason() -> str:
    return "the draft stated facts that no cited passage of this turn supports; it was withheld from the customer"


def refusal(pack_refusal: str) -> str:
    return pack_refusal


def awaiting_human_message() -> str:
    return "A claims specialist will review this conversation and reply to you shortly."


def retrieval_failed_reason() -> str:
    return "could not retrieve policy documents"
