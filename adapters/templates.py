"""Each domain's house format for answers: required sections, vocabulary, and the checks the evaluation runs.

The formats are written down for people in ``docs/adapters.md``; this module is the executable version of that
page. The reference-answer generator (``adapters/dataset.py``) writes answers in these formats, and the
evaluation (``adapters/evaluate.py``) scores model answers against them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DOMAINS = ("auto", "home", "health", "billing")

AUTO_COVERAGES = ("collision", "comprehensive", "liability", "uninsured motorist", "rental reimbursement",
                  "roadside assistance", "medical payments")
HOME_COVERAGES = ("dwelling", "other structures", "personal property", "loss of use", "personal liability",
                  "water damage")
HEALTH_KEY_TERMS = ("EOB", "prior authorization", "in-network", "out-of-network")


@dataclass(frozen=True)
class Section:
    """One required part of an answer: a name for reports and a regex that must match (multi-line mode)."""

    name: str
    pattern: str

    def present(self, answer: str) -> bool:
        return re.search(self.pattern, answer, flags=re.M) is not None


@dataclass(frozen=True)
class HouseFormat:
    domain: str
    sections: tuple[Section, ...]
    terms: tuple[str, ...]  # the domain's vocabulary; an answer is scored on the ones its reference uses
    # lines that quote one sentence of a passage and cite it (``Due date: <sentence> [n]``), named by how they
    # start; the quote constraint (agents/copy_constraint.QuoteProcessor) makes such a line a verbatim quote, so a
    # line starting with a label can only go on as a quote (``1.`` cannot start ``1.5 %``)
    quote_labels: tuple[str, ...] = ()

    def missing(self, answer: str) -> list[str]:
        """Names of the required sections the answer lacks (empty = compliant)."""
        return [s.name for s in self.sections if not s.present(answer)]

    def compliant(self, answer: str) -> bool:
        return not self.missing(answer)


_SOURCES = Section("Sources: [n]", r"^Sources: \[\d+\]")

HOUSE_FORMATS: dict[str, HouseFormat] = {
    "auto": HouseFormat(
        "auto",
        (
            Section("Coverage: <type>", r"^Coverage: (?:" + "|".join(AUTO_COVERAGES) + r")\b"),
            Section("Next steps: + numbered action", r"^Next steps:\s*\n1\. \S"),
            Section("Documents needed:", r"^Documents needed: \S"),
            _SOURCES,
        ),
        ("collision", "comprehensive", "liability", "uninsured motorist", "rental", "roadside", "towing",
         "deductible", "claim", "police report", "photos", "repair estimate", "repair shop", "adjuster",
         "total loss", "proof of loss", "declarations page", "covered auto", "glass", "theft"),
        quote_labels=("1.",),
    ),
    "home": HouseFormat(
        "home",
        (
            Section("Coverage: <type>", r"^Coverage: (?:" + "|".join(HOME_COVERAGES) + r")\b"),
            Section("What to do now: + numbered action", r"^What to do now:\s*\n1\. \S"),
            _SOURCES,
        ),
        ("dwelling", "other structures", "personal property", "loss of use", "additional living expense",
         "personal liability", "water damage", "deductible", "claim", "mitigation", "contractor", "inventory",
         "proof of loss", "adjuster", "receipts", "photos", "temporary housing", "estimate"),
        quote_labels=("1.",),
    ),
    "health": HouseFormat(
        "health",
        (
            Section("Plan rule:", r"^Plan rule: \S"),
            Section("What this means for you:", r"^What this means for you: \S"),
            Section("EOB / prior authorization / in-network term",
                    r"\b(?:EOB|[Pp]rior authorization|[Ii]n-network|[Oo]ut-of-network)\b"),
            _SOURCES,
        ),
        ("EOB", "prior authorization", "in-network", "out-of-network", "deductible", "copay", "coinsurance",
         "out-of-pocket maximum", "allowed amount", "appeal", "provider", "claim", "formulary",
         "preventive", "denial", "cost share"),
        quote_labels=("Plan rule:",),
    ),
    "billing": HouseFormat(
        "billing",
        (
            Section("Amount:", r"^Amount: \S"),
            Section("Due date: or Timeline:", r"^(?:Due date|Timeline): \S"),
            _SOURCES,
        ),
        ("premium", "grace period", "late fee", "installment", "autopay", "refund", "bill",
         "billing account", "payment plan", "returned payment", "cancellation", "reinstatement", "discount",
         "invoice", "statement", "amount due", "business days", "calendar days"),
        quote_labels=("Due date:", "Timeline:"),
    ),
}


def adapter_house_format(adapter_id: str | None) -> HouseFormat | None:
    """The house format an adapter was trained on: the bundled pack's ``insurance-<domain>`` adapters; None for
    the base model and for adapters of other packs (whose formats this module does not know)."""
    if not adapter_id or not adapter_id.startswith("insurance-"):
        return None
    return HOUSE_FORMATS.get(adapter_id.removeprefix("insurance-"))


def house_format(domain: str) -> HouseFormat:
    if domain not in HOUSE_FORMATS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return HOUSE_FORMATS[domain]


# ---- facts: amounts and dates ---------------------------------------------------------------------------
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_MONEY = re.compile(r"\$\s?\d[\d,]*(?:\.\d+)?")
_PERCENT = re.compile(r"\b\d+(?:\.\d+)?\s?%")
_DATE = re.compile(rf"\b(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?(?:, \d{{4}})?\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b")
_DURATION = re.compile(r"\b(\d+)[- ](?:calendar |business |working )?(day|week|month|year|hour)s?\b", re.I)


def _money(text: str) -> str:
    value = text.replace("$", "").replace(",", "").replace(" ", "")
    if value.endswith(".00"):
        value = value[:-3]
    return "$" + value


def fact_spans(text: str) -> list[tuple[str, int, int]]:
    """Every amount ($, %), date and duration in ``text``: (normalised form, start, end), in the order of the
    patterns (money, percent, date, duration). ``facts`` is the set of the normalised forms."""
    spans = [(_money(m.group()), m.start(), m.end()) for m in _MONEY.finditer(text)]
    spans += [(m.group().replace(" ", ""), m.start(), m.end()) for m in _PERCENT.finditer(text)]
    spans += [(re.sub(r"(\d)(?:st|nd|rd|th)", r"\1", m.group().lower().replace(".", "")), m.start(), m.end())
              for m in _DATE.finditer(text)]
    spans += [(f"{m.group(1)} {m.group(2).lower()}", m.start(), m.end()) for m in _DURATION.finditer(text)]
    return spans


def facts(text: str, *, supported: bool = False) -> set[str]:
    """Normalised amounts ($, %), dates and durations ("15 day") stated in ``text``.

    With ``supported=True`` (for passages) a full date also supports the same date stated without its year.
    """
    found = {fact for fact, _, _ in fact_spans(text)}
    if supported:
        found |= {fact.split(",")[0] for fact in found if "," in fact}  # only full dates have a comma
    return found


def money_in(text: str) -> list[str]:
    """Dollar amounts exactly as written in ``text``, in order."""
    return [m.strip() for m in _MONEY.findall(text)]


def has_time_expression(text: str) -> bool:
    return bool(_DATE.search(text) or _DURATION.search(text) or re.search(r"\bday \d+\b|\bdue\b", text, re.I))


# ---- citations ------------------------------------------------------------------------------------------
_MARK = re.compile(r"\[(\d{1,2})\]")


def cited_numbers(answer: str) -> list[int]:
    """Every [n] in the answer, in order of first use."""
    seen: list[int] = []
    for n in (int(m) for m in _MARK.findall(answer)):
        if n not in seen:
            seen.append(n)
    return seen


def citation_faithful(answer: str, passage_texts: Sequence[str]) -> bool:
    """Cited ids are a non-empty subset of the given passages, and the cited passages contain every stated
    amount and date. An answer with no citation cannot be checked, so it does not count as faithful."""
    cited = cited_numbers(answer)
    if not cited or any(not 1 <= n <= len(passage_texts) for n in cited):
        return False
    supported: set[str] = set()
    for n in cited:
        supported |= facts(passage_texts[n - 1], supported=True)
    return facts(answer) <= supported


# ---- text similarity ------------------------------------------------------------------------------------
_TOKEN = re.compile(r"[\w$%]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (longest common subsequence)."""
    c, r = tokens(candidate), tokens(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def terms_used(text: str, terms: Iterable[str]) -> set[str]:
    lowered = text.lower()
    return {t for t in terms if re.search(rf"(?<![\w-]){re.escape(t.lower())}s?(?![\w-])", lowered)}


def terminology(answer: str, reference: str, domain: str) -> float:
    """Share of the domain terms the reference uses that the answer also uses (1.0 if the reference uses none)."""
    vocab = house_format(domain).terms
    expected = terms_used(reference, vocab)
    if not expected:
        return 1.0
    return len(terms_used(answer, vocab) & expected) / len(expected)
