"""Redact personal data (emails, phone numbers, card and policy numbers, names after a greeting) from text."""

from __future__ import annotations

import re

_PATTERNS = [
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "[email]"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[card]"),
    (re.compile(r"\b[A-Z]{2,4}-?\d{5,12}\b"), "[policy-number]"),
    (re.compile(r"(?<!\w)(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b"), "[phone]"),
    (re.compile(r"\b(?i:my name is|this is|i am|i'm)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)"), None),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        if replacement is None:
            text = pattern.sub(lambda m: m.group(0).replace(m.group(1), "[name]"), text)
        else:
            text = pattern.sub(replacement, text)
    return text
