"""Training data for the domain adapters: (query, retrieved passages, reference answer in the house format).

``build_datasets`` is the documented generator behind ``domainroute/packs/insurance/adapters/data/*.jsonl``
(``domainroute adapters build-data``):

1. Queries: the router's labelled queries for the domain, the hand-written ``extra_queries.jsonl``, and
   questions made from the knowledge base's section headings (see ``section_queries``).
2. Passages: the real retriever (LanceDB, hybrid search) over the knowledge base, top 3 within the route's
   lines (the domain plus ``general``), tenant ``northwind`` -- what the agent itself would show the model.
3. Reference answers: ``reference_answer`` fills the domain's template (``adapters/templates.py``) with a
   sentence copied verbatim from the passage that overlaps the question most (as the prompt shows it), cites
   it as [n], and adds the template's fixed parts, chosen from hand-written phrasings per coverage or topic.
   Every figure in an answer is therefore copied from the passage it cites.

Splits are fixed by a hash of the query text: 70% train, 15% validation, 15% test.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from domainroute.adapters.templates import (
    DOMAINS,
    house_format,
    has_time_expression,
    money_in,
)
from domainroute.errors import InputError
from domainroute.graphs.prompts import content_words, sentences, snippet
from domainroute.retrievers.base import Chunk, SearchFilters
from domainroute.schemas import Passage

TOP_K = 3
TENANT = "northwind"
MAX_SENTENCE_WORDS = 30
SPLITS = ("train", "validation", "test")


# ---- splits and files -----------------------------------------------------------------------------------
def split_of(query: str) -> str:
    """The fixed split of a query: by sha256 of its normalised text, 70/15/15."""
    bucket = int(hashlib.sha256(query.strip().lower().encode()).hexdigest(), 16) % 100
    return "train" if bucket < 70 else "validation" if bucket < 85 else "test"


def data_path(data_dir: Path, domain: str) -> Path:
    return Path(data_dir) / f"{domain}.jsonl"


def load_examples(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """Examples from one domain file, optionally one split; a malformed line is an InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no adapter training data at {path}; build it with `domainroute adapters build-data`")
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        missing = {"query", "passages", "answer"} - set(example)
        if missing:
            raise InputError(f"{path}:{number}: missing field(s) {', '.join(sorted(missing))}")
        example.setdefault("split", split_of(example["query"]))
        if split is None or example["split"] == split:
            examples.append(example)
    return examples


def passage_from_chunk(chunk: Chunk) -> Passage:
    return Passage(chunk_id=chunk.chunk_id, doc_id=chunk.doc_id, title=chunk.title, section=chunk.section,
                   text=chunk.text, line=chunk.line, doc_type=chunk.doc_type,
                   effective_date=chunk.effective_date.isoformat(), version=chunk.version, tenant=chunk.tenant)


def passages_for(example: dict[str, Any], chunks_by_id: dict[str, Chunk]) -> list[Passage]:
    unknown = [c for c in example["passages"] if c not in chunks_by_id]
    if unknown:
        raise InputError(f"example {example['query']!r} cites chunk(s) not in the knowledge base: {unknown}; "
                         "rebuild the data with `domainroute adapters build-data`")
    return [passage_from_chunk(chunks_by_id[c]) for c in example["passages"]]


# ---- reference answers ----------------------------------------------------------------------------------
def _rng(query: str) -> random.Random:
    return random.Random(int(hashlib.sha256(query.encode()).hexdigest()[:12], 16))


def _shown_sentences(passage: Passage, query: str) -> list[str]:
    """The sentences of the passage exactly as the prompt shows them (the query-dependent snippet)."""
    return sentences(snippet(passage.text, query))


def _clip(sentence: str) -> str:
    words = sentence.split()
    if len(words) <= MAX_SENTENCE_WORDS:
        return sentence
    head = " ".join(words[:MAX_SENTENCE_WORDS])
    cut = max(head.rfind(", "), head.rfind("; "))
    head = head[:cut] if cut > len(head) // 2 else head
    return head.rstrip(",;:") + "."


def quotable(query: str, passages: Sequence[Passage]) -> list[tuple[int, str]]:
    """(passage number, sentence) for every sentence a quoted template line may use: each sentence the prompt
    shows, clipped as ``best_sentence`` clips the reference answers' quotes."""
    return [(n, _clip(full)) for n, passage in enumerate(passages, start=1)
            for full in _shown_sentences(passage, query)]


def best_sentence(passages: Sequence[Passage], query: str, *, want: str = "") -> tuple[int, str]:
    """(passage number, sentence) with the most query words; ``want`` ('money', 'time', 'money_or_time') keeps
    only sentences that state such a figure ((0, "") when there is none)."""
    wanted = content_words(query)
    candidates = []
    for n, passage in enumerate(passages, start=1):
        for i, full in enumerate(_shown_sentences(passage, query)):
            sent = _clip(full)
            if want == "money" and not money_in(sent):
                continue
            if want == "time" and not has_time_expression(sent):
                continue
            if want == "money_or_time" and not (money_in(sent) or has_time_expression(sent)):
                continue
            overlap = len(content_words(sent) & wanted)
            candidates.append(("|" in full, -overlap, len(full.split()) > MAX_SENTENCE_WORDS, n, i, sent))
    if not candidates:
        return 0, ""
    *_, n, _, sent = min(candidates)
    return n, sent


def _has(text: str, *words: str) -> bool:
    lowered = text.lower()
    return any(re.search(rf"\b{re.escape(w)}", lowered) for w in words)


def auto_coverage(query: str, passages: Sequence[Passage]) -> str:
    rules = [
        ("uninsured motorist", ("uninsured", "underinsured", "no insurance", "hit and run", "hit-and-run",
                                "left the scene", "fled")),
        ("rental reimbursement", ("rental", "rent a car", "loaner")),
        ("roadside assistance", ("tow", "roadside", "flat", "battery", "jump", "lockout", "locked out", "storage")),
        ("medical payments", ("medical payments", "med pay", "med-pay", "pip", "hospital", "injur")),
        ("liability", ("liability", "sue", "sued", "lawsuit", "my fault", "his car", "her car", "other driver's car",
                       "wants me to pay", "caused the accident", "property damage")),
        ("comprehensive", ("glass", "windshield", "windsheild", "stolen", "theft", "steal", "vandal", "keyed",
                           "slashed", "hail", "flood", "fire", "deer", "animal", "tree", "broken into",
                           "catalytic", "rock")),
        ("collision", ("collision", "rear-end", "rear end", "crash", "hit ", "backed", "fender", "accident",
                       "guardrail", "pole", "scraped", "total")),
    ]
    for text in (query, " ".join(f"{p.title} {p.section}" for p in passages[:1])):
        for coverage, words in rules:
            if _has(text, *words):
                return coverage
    return "collision"


def home_coverage(query: str, passages: Sequence[Passage]) -> str:
    rules = [
        ("loss of use", ("hotel", "stay", "living expense", "ale", "temporary housing", "meals", "move out",
                         "loss of use", "displaced", "rent while")),
        ("personal liability", ("sue", "sued", "lawsuit", "slipped", "bit", "bite", "injured", "liability",
                                "guest", "neighbour's kid", "neighbor's kid")),
        ("other structures", ("fence", "shed", "detached", "other structures", "driveway")),
        ("water damage", ("water", "pipe", "leak", "flood", "sewer", "mold", "mould", "backup", "ice dam")),
        ("personal property", ("stolen", "theft", "laptop", "jewel", "furniture", "contents", "belongings",
                               "clothes", "inventory", "receipts", "electronics", "tools", "food", "owned")),
        ("dwelling", ("roof", "fire", "smoke", "wall", "siding", "house", "home", "window", "garage", "ceiling",
                      "storm", "wind", "lightning", "contractor", "repair")),
    ]
    for text in (query, " ".join(f"{p.title} {p.section}" for p in passages[:1])):
        for coverage, words in rules:
            if _has(text, *words):
                return coverage
    return "dwelling"


_AUTO_ACTIONS = {
    "collision": ["Report the claim and keep your claim number.", "Take photos of the damage before repairs start.",
                  "Get a repair estimate from the shop you choose."],
    "comprehensive": ["Report the claim and keep your claim number.", "Take photos of the damage before any repair.",
                      "File a police report for a theft or vandalism."],
    "liability": ["Do not admit fault; send us any letter or lawsuit you receive.",
                  "Report the claim and give the other party your claim number."],
    "uninsured motorist": ["Report the accident to the police right away.",
                           "Report the claim and tell the adjuster the other driver had no insurance."],
    "rental reimbursement": ["Keep the rental agreement and receipts.", "Ask the adjuster to set up the rental."],
    "roadside assistance": ["Call roadside assistance before you pay for a tow.", "Keep the towing receipt."],
    "medical payments": ["Send us the medical bills and records.", "Report the claim and keep your claim number."],
}
_AUTO_DOCUMENTS = {
    "collision": ["police report, photos, repair estimate", "photos of the damage, repair estimate"],
    "comprehensive": ["photos of the damage, police report for theft or vandalism", "photos, police report"],
    "liability": ["police report, photos, the other party's details", "police report, photos"],
    "uninsured motorist": ["police report, photos, the other driver's details"],
    "rental reimbursement": ["rental agreement, receipts"],
    "roadside assistance": ["towing receipt", "towing receipt, photos"],
    "medical payments": ["medical bills, police report"],
}
_FORM = re.compile(r"\bForm [A-Z]{2,3}-[A-Z]?\d+(?: [A-Z][a-z]+(?: of| [A-Z][a-z]+)*)?")

_HOME_ACTIONS = {
    "dwelling": ["Protect the home from further damage and keep the receipts.",
                 "Take photos before any repair and report the claim."],
    "other structures": ["Take photos of the damage and report the claim.",
                         "Protect the property from further damage and keep the receipts."],
    "personal property": ["Make a list of the damaged or stolen items with photos and receipts.",
                          "Report the claim and file a police report for a theft."],
    "loss of use": ["Keep the receipts for your hotel, meals and other extra living costs.",
                    "Tell the adjuster where you are staying."],
    "personal liability": ["Do not admit fault; send us any claim letter or lawsuit.",
                           "Report the claim and write down what happened and who saw it."],
    "water damage": ["Stop the water and start drying out right away; keep the receipts.",
                     "Take photos of the water damage and report the claim."],
}

_HEALTH_MEANING = {
    "prior authorization": [
        "Ask your provider to get prior authorization before the service.",
        "Without prior authorization the claim can be denied, so check the approval first.",
    ],
    "in-network": [
        "Use an in-network provider to pay the lower in-network cost share.",
        "In-network care costs you less; out-of-network care can cost more.",
    ],
    "appeal": [
        "You can appeal; keep the EOB that shows the denial.",
        "Check the denial reason on your EOB before you appeal.",
    ],
    "EOB": [
        "Your EOB will show what the plan paid and what you owe.",
        "Check your EOB for the amount you may owe.",
    ],
}


def _health_topic(query: str, text: str) -> str:
    both = f"{query} {text}"
    if _has(both, "prior authorization", "authorization", "approval", "care review", "precertif"):
        return "prior authorization"
    if _has(query, "appeal", "denied", "denial", "external review") or _has(text, "appeal"):
        return "appeal"
    if _has(both, "network", "referral", "specialist", "provider"):
        return "in-network"
    return "EOB"


def _auto(query: str, passages: Sequence[Passage], rng: random.Random) -> str:
    coverage = auto_coverage(query, passages)
    n, sent = best_sentence(passages, query)
    forms = sorted({m for p in passages for s in _shown_sentences(p, query) for m in _FORM.findall(s)})
    documents = ", ".join(forms[:1] + [rng.choice(_AUTO_DOCUMENTS[coverage])])
    return (f"Coverage: {coverage}\nNext steps:\n1. {sent} [{n}]\n2. {rng.choice(_AUTO_ACTIONS[coverage])}\n"
            f"Documents needed: {documents}\nSources: [{n}]")


def _home(query: str, passages: Sequence[Passage], rng: random.Random) -> str:
    coverage = home_coverage(query, passages)
    n, sent = best_sentence(passages, query)
    return (f"Coverage: {coverage}\nWhat to do now:\n1. {sent} [{n}]\n2. {rng.choice(_HOME_ACTIONS[coverage])}\n"
            f"Sources: [{n}]")


def _health(query: str, passages: Sequence[Passage], rng: random.Random) -> str:
    n, sent = best_sentence(passages, query)
    topic = _health_topic(query, sent)
    return f"Plan rule: {sent} [{n}]\nWhat this means for you: {rng.choice(_HEALTH_MEANING[topic])}\nSources: [{n}]"


def _billing(query: str, passages: Sequence[Passage], rng: random.Random) -> str:
    # The date/period sentence comes first and the Amount line repeats the amount *from that line*: a small model
    # copies from its own previous line far more reliably than it finds a figure elsewhere in the prompt.
    n, sent = best_sentence(passages, query, want="money_or_time")
    if not sent:
        n, sent = best_sentence(passages, query)
    label = "Due date" if re.search(r"\bdue\b", sent, re.I) else "Timeline"
    money = money_in(sent)
    amount = f"{money[0]} [{n}]" if money else rng.choice(["none is stated in this passage.",
                                                          "this passage states no amount."])
    return f"{label}: {sent} [{n}]\nAmount: {amount}\nSources: [{n}]"


_BUILDERS = {"auto": _auto, "home": _home, "health": _health, "billing": _billing}


def reference_answer(domain: str, query: str, passages: Sequence[Passage]) -> str:
    """The reference answer for ``query`` in ``domain``'s house format, from the passages the prompt shows."""
    house_format(domain)  # raises on an unknown domain
    if not passages:
        raise InputError(f"no passages for {query!r}: a reference answer must cite retrieved passages")
    return _BUILDERS[domain](query, passages, _rng(query))


# ---- queries --------------------------------------------------------------------------------------------
_HEADING_FORMS = ["What does my policy say about {s}?", "{s}?", "how does {s} work", "Can you explain {s}?",
                  "question about {s}", "what are the rules for {s}", "{s} - what applies to me?",
                  "need info on {s}"]


def section_queries(chunks: Iterable[Chunk], domain: str, seed: int = 7) -> list[str]:
    """Questions made from the section headings of the domain's documents (question headings kept as asked)."""
    rng = random.Random(seed)
    out = []
    for chunk in chunks:
        if chunk.line != domain or chunk.tenant != TENANT or not chunk.section:
            continue
        heading = chunk.section.strip()
        if heading.endswith("?"):
            out.append(heading if rng.random() < 0.5 else heading.lower().rstrip("?"))
        else:
            out.append(rng.choice(_HEADING_FORMS).format(s=heading.lower()))
    return out


def _keyword_queries(chunks: Iterable[Chunk], domain: str, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    out = []
    for chunk in chunks:
        if chunk.line != domain or chunk.tenant != TENANT:
            continue
        body = chunk.text.split("\n", 1)[-1]
        sents = [s for s in sentences(body) if 6 <= len(s.split()) <= 40]
        if not sents:
            continue
        words = sorted(w for w in content_words(rng.choice(sents)) if len(w) > 3 and w.isalpha())
        rng.shuffle(words)
        keys = " ".join(words[: rng.randint(2, 4)])
        out.append(rng.choice(["{k}?", "what about {k}", "question on {k}", "is there anything on {k}"]).format(k=keys))
    return out


def domain_queries(domain: str, router_queries: Path, extra_queries: Path, chunks: Sequence[Chunk],
                   target: int) -> list[tuple[str, str]]:
    """(query, source) for a domain, de-duplicated (case-insensitive), topped up to ``target`` from the KB."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []

    def take(queries: Iterable[str], source: str, limit: int | None = None) -> None:
        for q in queries:
            key = " ".join(q.lower().split())
            if limit is not None and len(out) >= limit:
                return
            if key and key not in seen:
                seen.add(key)
                out.append((q.strip(), source))

    rows = [json.loads(line) for line in Path(router_queries).read_text().splitlines() if line.strip()]
    take((r["query"] for r in rows if r["route"] == domain), "router")
    rows = [json.loads(line) for line in Path(extra_queries).read_text().splitlines() if line.strip()]
    take((r["query"] for r in rows if r["domain"] == domain), "hand-written")
    take(section_queries(chunks, domain), "kb-heading", limit=target)
    take(_keyword_queries(chunks, domain), "kb-keywords", limit=target)
    return out


# ---- the generator --------------------------------------------------------------------------------------
def build_datasets(
    kb_dir: Path,
    router_queries: Path,
    out_dir: Path,
    *,
    domains: Sequence[str] = DOMAINS,
    per_domain: int = 330,
    store_path: Path | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``out_dir/<domain>.jsonl`` for each domain; return the number of examples per domain."""
    from tqdm import tqdm

    from domainroute.retrievers import make_retriever
    from domainroute.retrievers.ingest import ingest, load_chunks

    for domain in domains:
        house_format(domain)
    extra = Path(out_dir) / "extra_queries.jsonl"
    chunks = load_chunks(kb_dir)
    with tempfile.TemporaryDirectory() as tmp:
        retriever = make_retriever("lancedb", store_path=Path(store_path or tmp))
        ingest(kb_dir, retriever, progress=progress)
        counts = {}
        for domain in domains:
            queries = domain_queries(domain, router_queries, extra, chunks, per_domain)
            filters = SearchFilters(lines=(domain, "general"))
            rows = []
            for query, source in tqdm(queries, desc=f"data {domain}", unit="query", disable=not progress):
                passages = retriever.search(query, tenant=TENANT, k=TOP_K, filters=filters, alpha=0.5)
                if not passages:
                    continue
                answer = reference_answer(domain, query, passages)
                rows.append({"query": query, "passages": [p.chunk_id for p in passages], "answer": answer,
                             "split": split_of(query), "source": source, "tenant": TENANT})
            with open(data_path(out_dir, domain), "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[domain] = len(rows)
    return counts


def refresh_answers(kb_dir: Path, out_dir: Path, *, domains: Sequence[str] = DOMAINS) -> dict[str, int]:
    """Rewrite the reference answers of existing data files from their stored passages (no retrieval), e.g.
    after a template phrasing changed; queries, passages and splits stay as they are."""
    from domainroute.retrievers.ingest import load_chunks

    chunks_by_id = {c.chunk_id: c for c in load_chunks(kb_dir)}
    counts = {}
    for domain in domains:
        path = data_path(out_dir, domain)
        rows = load_examples(path)
        for row in rows:
            row["answer"] = reference_answer(domain, row["query"], passages_for(row, chunks_by_id))
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[domain] = len(rows)
    return counts


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
