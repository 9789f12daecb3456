"""Grounding: the checkable facts of an answer and whether a cited passage of the turn states each one.

Pure functions, no model calls. A *fact* is a span of the answer with a kind and a normalised key, so that
"$1,000", "1000 dollars" and "$1000.00" are all ``money:1000``; "30 days", "thirty days" and "30-day" are all
``duration:30:day``; "January 5, 2026", "Jan. 5th 2026", "5 January 2026", "2026-01-05" and "1/5/2026" are all
``date:2026-01-05``; "1-800-555-0142" and "(800) 555-0142" are both ``phone:8005550142``.

A fact is *supported* when a passage cited in its sentence states it (the same key is found in the passage), or,
when its sentence cites nothing, a passage cited anywhere in the answer states it (a passage states its
document title too, so "According to <title> [n]" is supported). A date without a year
("March 10") is supported by any passage date on that day of that month; a month and year ("January 2026") by
any date in that month. Unit rules: weeks count as 7 days and years as 12 months; "business days" and "working
days" are their own unit (not days); "calendar days" are days.

Kinds: money, percent, date, time (of day), duration, phone, address (P.O. box, street, city/state/ZIP, web or
email address), form (form and document codes such as "Form NW-A12" or "NW-H40"), coverage ("Coverage A",
"Collision coverage").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal

FactKind = Literal["money", "percent", "date", "time", "duration", "phone", "address", "form", "coverage"]

# ---- numbers ----------------------------------------------------------------------------------------------
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
_UNIT_W = "|".join(sorted(_UNITS, key=len, reverse=True))
_TENS_W = "|".join(_TENS)
_SMALL_W = rf"(?:(?:{_TENS_W})(?:[- ](?:{_UNIT_W}))?|{_UNIT_W})"
# "thirty", "forty-five", "two hundred fifty", "a thousand" (a bare "a" is not a number: "$50 a day")
_WORD_NUM = (rf"(?:{_SMALL_W}(?:[- ](?:hundred|thousand|million)(?:[- ](?:and[- ])?{_SMALL_W})?)?"
             rf"|a[- ](?:hundred|thousand|million)(?:[- ](?:and[- ])?{_SMALL_W})?)")
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_NUM = rf"(?:{_DIGITS}|{_WORD_NUM})"


def parse_number(text: str) -> Decimal:
    """'1,500' -> 1500; '2.5' -> 2.5; 'thirty' -> 30; 'forty-five' -> 45; 'two hundred fifty' -> 250."""
    raw = text.strip().lower()
    if raw and (raw[0].isdigit() or raw[0] == "."):
        try:
            return Decimal(raw.replace(",", ""))
        except InvalidOperation as exc:
            raise ValueError(f"not a number: {text!r}") from exc
    total, current = 0, 0
    for word in re.split(r"[\s-]+", raw):
        if word in ("and", ""):
            continue
        if word == "a":
            current += 1
        elif word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word in _SCALES:
            scale = _SCALES[word]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total += (current or 1) * scale
                current = 0
        else:
            raise ValueError(f"not a number: {text!r}")
    return Decimal(total + current)


def _fmt(value: Decimal) -> str:
    normal = value.normalize()
    return format(normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal, "f")


# ---- patterns (compiled once) -----------------------------------------------------------------------------
_F = re.IGNORECASE
_PHONE = re.compile(r"(?<![\w-])(?:\+?1[\s.-]?)?(?:\((\d{3})\)\s?|(\d{3})[\s.-])(\d{3})[\s.-](\d{4})(?![\w-])")
_MONTHS = {m: i for i, m in enumerate(
    "january february march april may june july august september october november december".split(), start=1)}
_MONTHS.update({m[:3]: i for m, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MON = r"(?:January|February|March|April|May|June|July|August|September|October|November|December|Sept|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_ORD = r"(?:st|nd|rd|th)?"
_DATE_MDY = re.compile(rf"\b({_MON})\.?\s+(\d{{1,2}}){_ORD}(?:,?\s+(\d{{4}}))?\b(?!:)")
_DATE_DMY = re.compile(rf"\b(\d{{1,2}}){_ORD}\s+(?:of\s+)?({_MON})\.?(?:,?\s+(\d{{4}}))?\b")
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DATE_NUM = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b")
_DATE_MY = re.compile(rf"\b({_MON})\.?,?\s+(\d{{4}})\b")
_TIME = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s?([ap])\.?\s?m\b\.?|\b(noon|midnight)\b", _F)
_MONEY = re.compile(
    rf"(?:\$|\bUSD\s?)\s?({_DIGITS})(?:\s?(million|thousand|billion|[mk])\b)?"
    rf"|\b({_NUM})(?:\s(million|thousand|billion))?\s(?:US\s)?dollars\b", _F)
_PERCENT = re.compile(rf"\b({_NUM})\s?(?:%|percent\b|per\scent\b)", _F)
_DURATION = re.compile(
    rf"\b({_NUM})(?:\s\(\d+\))?[\s-](?:(calendar|business|working)[\s-])?(day|week|month|year|hour|minute)s?\b", _F)
_PO_BOX = re.compile(r"\bP\.?\s?O\.?\s?Box\s+(\d+)\b", _F)
_STREET = re.compile(
    r"\b(\d{1,6})\s+((?:[A-Z][a-z]+\s){1,3})(Street|St|Avenue|Ave|Road|Rd|Drive|Dr|Boulevard|Blvd|Way|Lane|Ln|"
    r"Parkway|Pkwy|Plaza|Court|Ct|Place|Pl)\b\.?")
_CITY = re.compile(r"\b([A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2}),\s([A-Z]{2})\s(\d{5})(?:-\d{4})?\b")
_WEB = re.compile(r"\b(?:https?://)?(?:[\w.+-]+@)?(?:[a-z0-9-]+\.)+(?:example|com|org|gov|net|us)\b(?:/[\w/.-]*\w)?", _F)
_FORM = re.compile(r"\b(?:Form\s+)?([A-Z]{2,4}(?:-[A-Z0-9]{1,5}){1,2})\b")
_COVERAGE_NAMES = ("collision", "comprehensive", "liability", "uninsured motorist", "underinsured motorist",
                   "medical payments", "personal injury protection", "rental reimbursement", "roadside assistance",
                   "towing and labor", "additional living expense", "loss of use", "scheduled personal property",
                   "personal property", "other structures", "dwelling", "personal liability", "gap")
_COV_ALT = "|".join(n.replace(" ", r"\s") for n in _COVERAGE_NAMES)
_COVERAGE = re.compile(rf"\bCoverage\s([A-F])\b|\b({_COV_ALT})\s(?:coverage|insurance)\b", _F)
_COVERAGE_MENTION = re.compile(rf"\bCoverage\s([A-F])\b|\b({_COV_ALT})\b", _F)
_STREET_ABBR = {"st": "street", "ave": "avenue", "rd": "road", "dr": "drive", "blvd": "boulevard", "ln": "lane",
                "pkwy": "parkway", "ct": "court", "pl": "place"}
_SCALE_WORD = {"k": "thousand", "m": "million"}


@dataclass(frozen=True, slots=True)
class Fact:
    kind: FactKind
    text: str  # as written
    key: str  # normalised, e.g. "money:1500"
    start: int
    end: int


def _money(m: re.Match[str]) -> str:
    number, scale = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    value = parse_number(number)
    if scale:
        value *= _SCALES[_SCALE_WORD.get(scale.lower(), scale.lower())]
    return f"money:{_fmt(value)}"


def _duration(m: re.Match[str]) -> str:
    value, qualifier, unit = parse_number(m.group(1)), (m.group(2) or "").lower(), m.group(3).lower()
    if unit == "week":
        value, unit = value * 7, "day"
    elif unit == "year":
        value, unit = value * 12, "month"
    if unit == "day" and qualifier in ("business", "working"):
        unit = "business_day"
    return f"duration:{_fmt(value)}:{unit}"


def _date(year: str | None, month: int, day: int | None) -> str | None:
    if not 1 <= month <= 12 or (day is not None and not 1 <= day <= 31):
        return None
    if year is not None and len(year) == 2:
        year = f"20{year}"
    if day is None:
        return f"date:{year}-{month:02d}"
    return f"date:{year}-{month:02d}-{day:02d}" if year else f"date:--{month:02d}-{day:02d}"


def _month(name: str) -> int:
    return _MONTHS[name.lower().rstrip(".")[:4] if name.lower().startswith("sept") else name.lower()[:3]]


def _time(m: re.Match[str]) -> str:
    if m.group(4):
        return "time:12:00" if m.group(4).lower() == "noon" else "time:00:00"
    hour, minute = int(m.group(1)) % 12, int(m.group(2) or 0)
    if m.group(3).lower() == "p":
        hour += 12
    return f"time:{hour:02d}:{minute:02d}"


def _candidates(text: str) -> Iterable[tuple[FactKind, re.Match[str], str | None]]:
    """(kind, match, key) in priority order; a later match overlapping an earlier one is dropped."""
    for m in _PHONE.finditer(text):
        yield "phone", m, f"phone:{m.group(1) or m.group(2)}{m.group(3)}{m.group(4)}"
    for m in _WEB.finditer(text):
        yield "address", m, "address:" + re.sub(r"^(?:https?://)?(?:www\.)?", "", m.group(0).lower()).rstrip("/")
    for m in _DATE_ISO.finditer(text):
        yield "date", m, _date(m.group(1), int(m.group(2)), int(m.group(3)))
    for m in _DATE_NUM.finditer(text):
        yield "date", m, _date(m.group(3), int(m.group(1)), int(m.group(2)))
    for m in _DATE_MDY.finditer(text):
        yield "date", m, _date(m.group(3), _month(m.group(1)), int(m.group(2)))
    for m in _DATE_DMY.finditer(text):
        yield "date", m, _date(m.group(3), _month(m.group(2)), int(m.group(1)))
    for m in _DATE_MY.finditer(text):
        yield "date", m, _date(m.group(2), _month(m.group(1)), None)
    for m in _TIME.finditer(text):
        yield "time", m, _time(m)
    for m in _PO_BOX.finditer(text):
        yield "address", m, f"address:po box {m.group(1)}"
    for m in _STREET.finditer(text):
        suffix = m.group(3).lower()
        yield "address", m, f"address:{m.group(1)} {m.group(2).strip().lower()} {_STREET_ABBR.get(suffix, suffix)}"
    for m in _CITY.finditer(text):
        yield "address", m, f"address:{m.group(1).lower()} {m.group(2).lower()} {m.group(3)}"
    for m in _MONEY.finditer(text):
        yield "money", m, _money(m)
    for m in _PERCENT.finditer(text):
        yield "percent", m, f"percent:{_fmt(parse_number(m.group(1)))}"
    for m in _DURATION.finditer(text):
        yield "duration", m, _duration(m)
    for m in _FORM.finditer(text):
        if any(c.isdigit() for c in m.group(1)):
            yield "form", m, f"form:{m.group(1).upper()}"
    for m in _COVERAGE.finditer(text):
        name = f"{m.group(1).lower()}" if m.group(1) else re.sub(r"\s+", " ", m.group(2).lower())
        yield "coverage", m, f"coverage:{name}"


def extract_facts(text: str) -> list[Fact]:
    """The checkable facts of ``text``, in order of position."""
    taken: list[tuple[int, int]] = []
    facts: list[Fact] = []
    for kind, m, key in _candidates(text):
        start, end = m.span()
        if key is None or any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        facts.append(Fact(kind=kind, text=m.group(0).strip(), key=key, start=start, end=end))
    return sorted(facts, key=lambda f: f.start)


@lru_cache(maxsize=4096)
def stated_keys(text: str) -> frozenset[str]:
    """Every key a passage states, with the derived keys a partial date in an answer may match."""
    keys: set[str] = set()
    for fact in extract_facts(text):
        keys.add(fact.key)
        if fact.kind == "date" and not fact.key.startswith("date:--"):
            parts = fact.key[5:].split("-")
            if len(parts) == 3:
                keys.add(f"date:--{parts[1]}-{parts[2]}")
                keys.add(f"date:{parts[0]}-{parts[1]}")
    for m in _COVERAGE_MENTION.finditer(text):
        keys.add("coverage:" + (m.group(1).lower() if m.group(1) else re.sub(r"\s+", " ", m.group(2).lower())))
    return frozenset(keys)


def normalise(text: str) -> list[str]:
    """The keys of the facts in ``text`` (handy for comparing an expected figure with an answer)."""
    return [f.key for f in extract_facts(text)]


# ---- sentences and citations ------------------------------------------------------------------------------
_MARK = re.compile(r"\[(\d{1,2})\]")
_ABBREV = re.compile(r"(?:\b(?:P\.O|[ap]\.m|e\.g|i\.e|etc|No|St|Ave|Dr|Mr|Mrs|Ms|U\.S|vs|approx|Inc|Co)\.|\b[A-Z]\.)$", _F)
_END = re.compile(r"[.!?](?=[\"')\]]*(?:\s|$))|\n")
_TRAILING_MARKS = re.compile(r"(?:[\"')]*\s*\[\d{1,2}\])+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence; citation markers right after a sentence end belong to that sentence."""
    spans, start = [], 0
    for m in _END.finditer(text):
        if m.group(0) != "\n" and _ABBREV.search(text[max(0, m.start() - 6):m.end()]):
            continue
        end = m.end()
        trail = _TRAILING_MARKS.match(text, end)
        if trail:
            end = trail.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


@dataclass(frozen=True)
class Check:
    """The result of checking one answer against the passages it cites."""

    facts: tuple[Fact, ...]
    unsupported: tuple[Fact, ...]

    @property
    def checked(self) -> int:
        return len(self.facts)

    @property
    def supported(self) -> int:
        return len(self.facts) - len(self.unsupported)

    @property
    def ok(self) -> bool:
        return not self.unsupported


def check_answer(answer: str, citations: Sequence[Mapping[str, Any]], passages: Sequence[Mapping[str, Any]]) -> Check:
    """Check each fact of ``answer`` (markers [n] numbered as ``citations``) against the passages it cites.

    ``citations`` and ``passages`` are the dicts the graph keeps in state (citations: doc_id/chunk_id/title;
    passages: Passage dumps). A citation whose chunk is not among ``passages`` supports nothing.
    """
    facts = extract_facts(answer)
    if not facts:
        return Check(facts=(), unsupported=())
    text_of = {p["chunk_id"]: f"{p.get('title', '')}\n{p['text']}" for p in passages}  # a passage states its title
    cited_texts = [text_of.get(c["chunk_id"], "") for c in citations]
    everything = frozenset().union(*(stated_keys(t) for t in cited_texts)) if cited_texts else frozenset()
    unsupported = []
    spans = sentence_spans(answer)
    for fact in facts:
        start, end = next(((s, e) for s, e in spans if s <= fact.start < e), (0, len(answer)))
        marks = {int(n) for n in _MARK.findall(answer, start, end)}
        own = [cited_texts[n - 1] for n in marks if 1 <= n <= len(cited_texts)]
        keys = frozenset().union(*(stated_keys(t) for t in own)) if own else everything
        if fact.key not in keys:
            unsupported.append(fact)
    return Check(facts=tuple(facts), unsupported=tuple(unsupported))


# ---- the extractive answer --------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the and or of to in on for is are was were be been do does did i my me we our you your it its this that "
    "what how when why who which can could will would should if at by with from as about any there their they "
    "not no yes have has had get got so than then just much many long does need under per after before into "
    "northwind policy insurance".split())
_CUES: tuple[tuple[re.Pattern[str], tuple[FactKind, ...]], ...] = (
    (re.compile(r"\bhow (?:much|big)\b|\bcost|\bfee\b|\bcharge|\bprice|\bdeductible|\blimit|\bmaximum|\bminimum|"
                r"\bpa(?:y|ys|id)\b|\bamount|\bdollar|\bcap\b|\bcopay|\breimburse|\breward|\bpremium|\bworth\b|"
                r"\brefund|\bmost\b|\blargest|\bsmallest|\bbiggest|\bauthority", _F), ("money",)),
    (re.compile(r"\bhow (?:much|big)\b|\bpercent|\bcoinsurance|\bdiscount|\bshare\b|\brate\b|\bdepreciat|\breduc|"
                r"\bsurcharge", _F), ("percent",)),
    (re.compile(r"\bhow (?:long|soon|fast|quickly|often|old)\b|\bhow far (?:ahead|back|in advance)|\bhow many "
                r"(?:days|hours|months|years|weeks|business|calendar)|\bwithin\b|\bdeadline|\bwindow\b|\bperiod\b|"
                r"\bage\b", _F), ("duration",)),
    (re.compile(r"\bwhen\b|\bdate\b|\bstart|\bbegin|\bfinish|\bend\b|\beffective|\bwhat time|\bhours\b|\bopen\b|"
                r"\bdue\b", _F), ("date", "time")),
    (re.compile(r"\bphone|\bnumber|\bcall\b|\bring\b|\bline\b|\bfax\b|\bhotline", _F), ("phone",)),
    (re.compile(r"\bform\b|\bendorsement\b|\bdocument\b", _F), ("form",)),
    (re.compile(r"\baddress|\bmail\b|\bwhere\b|\bsend\b|\bwebsite|\bonline|\bemail|\bp\.?o\.? box", _F),
     ("address",)),
)
MIN_OVERLAP = 2  # content words a sentence must share with the question to count as answering it
MAX_QUOTED = 2  # sentences an extractive answer quotes


STEM_CHARS = 5  # a crude prefix stemmer: "reinstate"/"reinstatement", "cover"/"covered"/"coverage" match


def _stem(word: str) -> str:
    return word[:STEM_CHARS]


def content_stems(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1)


def wanted_kinds(question: str) -> frozenset[FactKind]:
    """The kinds of fact a question asks for, from its wording ("how much" -> money, "how long" -> duration)."""
    return frozenset(kind for pattern, kinds in _CUES if pattern.search(question) for kind in kinds)


_FIGURE_QUESTION = re.compile(
    r"\bhow (?:much|big|long|many|soon|far|often|quickly|fast|old)\b|\bwhen\b|\bwhere\b|\bwhat time\b|"
    r"\b(?:which|what) (?:\w+ )?(?:form|number|endorsement|p\.?o\.? box)\b|\bis there a (?:fee|discount|cap|charge|limit)\b|"
    r"\b(?:by|until|up to|within|at|above|below|under|over|past|than) (?:what|how|which)\b|"
    r"\bwhat (?:do|does|will|would)\b[^?]*\b(?:pay|get|owe|drop to)\b|\bdo i pay anything\b|"
    r"\bwhat(?:'s| is| are| was)?\s+(?:(?:the|my|a|an|your|our)\s+)?(?:[\w'/-]+\s+){0,4}?"
    r"(?:number|phone|fee|cost|limit|deductible|copay|percentage|rate|date|deadline|address|form|amount|maximum|"
    r"minimum|cap|discount|premium|charge|reward|surcharge|refund|payment|authority|reduction|share|age|most|largest|"
    r"smallest|biggest)s?\b", _F)
KIND_NAMES: dict[str, str] = {"money": "amount", "percent": "percentage", "duration": "time limit", "date": "date",
                              "time": "time of day", "phone": "phone number", "address": "address",
                              "form": "form number", "coverage": "coverage name"}


def asked_kinds(question: str) -> frozenset[FactKind]:
    """The kinds of fact a question clearly asks for ("how much...?", "what's the number...?"); empty otherwise."""
    return wanted_kinds(question) if _FIGURE_QUESTION.search(question) else frozenset()


def answers(question: str, check: Check) -> bool:
    """Whether a checked draft states a supported fact of a kind the question asks for (True if it asks none)."""
    kinds = asked_kinds(question)
    unsupported = set(check.unsupported)
    return not kinds or any(f.kind in kinds and f not in unsupported for f in check.facts)


def passage_sentences(text: str) -> list[str]:
    """A passage's sentences (its first line is the section heading and is skipped); bullets are sentences."""
    body = text.split("\n", 1)[1] if "\n" in text else text
    out = []
    for start, end in sentence_spans(body):
        sentence = re.sub(r"\s+", " ", body[start:end]).strip().lstrip("-*• ").strip()
        if len(sentence.split()) >= 4:
            out.append(sentence)
    return out


@dataclass(frozen=True)
class Quote:
    passage: int  # index into the passages
    sentence: str
    score: float


def best_sentences(question: str, passages: Sequence[Mapping[str, Any]], *, limit: int = MAX_QUOTED) -> list[Quote]:
    """The passage sentences that answer ``question`` best, best first; [] when none shares enough words with it.

    A sentence must share ``MIN_OVERLAP`` content words (5-letter prefixes) with the question. When the question
    asks for a kind of fact ("how much" -> money, "how long" -> duration, see ``wanted_kinds``), only sentences
    stating a fact of that kind qualify, if any do. Score: shared words, +0.5 when the sentence states any fact,
    + a small bonus for the retriever's rank of its passage.
    """
    wanted, kinds = content_stems(question), wanted_kinds(question)
    need = min(MIN_OVERLAP, max(1, len(wanted)))
    quotes: list[tuple[Quote, bool]] = []
    for i, p in enumerate(passages):
        for sentence in passage_sentences(p["text"]):
            overlap = len(wanted & content_stems(sentence))
            if overlap < need:
                continue
            found = {f.kind for f in extract_facts(sentence)}
            score = overlap + (0.5 if found else 0.0) + 0.3 / (1 + i)
            quotes.append((Quote(passage=i, sentence=sentence, score=score), bool(found & kinds)))
    if any(fits for _, fits in quotes):
        quotes = [(q, fits) for q, fits in quotes if fits]
    ranked = sorted((q for q, _ in quotes), key=lambda q: -q.score)
    return ranked[:limit]


def extractive_answer(question: str, passages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, str]]] | None:
    """Quote the sentences that answer ``question``, each with its citation; None when no passage answers it.

    Format (``prompts.extractive_line``), one line per quote: ``According to <title> [n]: "<sentence>"``.
    Every quote is verbatim from a passage and is re-checked, so an extractive answer states only supported facts.
    """
    from domainroute.graphs.prompts import extractive_line

    lines: list[str] = []
    used: list[int] = []
    for quote in best_sentences(question, passages):
        n = used.index(quote.passage) + 1 if quote.passage in used else len(used) + 1
        p = passages[quote.passage]
        line = extractive_line(p["title"], n, quote.sentence)
        citations = [_citation(passages[i]) for i in used] + ([] if quote.passage in used else [_citation(p)])
        if not check_answer(line, citations, passages).ok:
            continue
        if quote.passage not in used:
            used.append(quote.passage)
        lines.append(line)
    if not lines:
        return None
    return "\n".join(lines), [_citation(passages[i]) for i in used]


def _citation(p: Mapping[str, Any]) -> dict[str, str]:
    return {"doc_id": p["doc_id"], "chunk_id": p["chunk_id"], "title": p["title"]}
