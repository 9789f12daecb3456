"""``domainroute grounding eval``: how often answers state unsupported facts, with and without the grounding check.

One run over the pack's grounding questions (``<pack>/grounding/questions.jsonl``, see its DATASET_CARD.md) on
the real graph: the bundled (or configured) base model, the real retriever, and, when the pack has trained
adapters, the domain adapters. Generation is greedy, so the model's first draft in a turn is exactly what the
graph would show without the grounding node; the rows "without the check" are scored on those drafts and the
row "+ grounding check" on what the customer is shown.

Scores, per question: *hallucinated* when the shown text states any fact (amount, date, duration, phone,
address, form or coverage name) that no cited passage of the turn states; *correct* when the expected figure is
in the shown text and a cited passage of the turn states it; *escalated* when the check found nothing grounded to
show. Routing uses the dataset's route labels unless ``--router learned``, so that routing errors do not blur
the grounding figures; the escalation policy is off (only grounding escalates).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler

from domainroute.errors import InputError
from domainroute.schemas import Claim, EscalationDecision, RouteDecision

QUESTIONS_FILE = Path("grounding") / "questions.jsonl"
ROUTES = ("auto", "home", "health", "billing")
_FIELDS = {"question", "expected", "chunk_ids", "route", "split"}


@dataclass(frozen=True)
class Question:
    question: str
    expected: str  # the figure as written in the passage, e.g. "$1,500"
    chunk_ids: tuple[str, ...]  # passages that state it
    route: str
    split: Literal["dev", "test"]


def load_questions(path: Path, split: str | None = None) -> list[Question]:
    """The questions of ``path`` (all splits when ``split`` is None); a bad line is an InputError naming it."""
    if not path.exists():
        raise InputError(f"no grounding questions at {path}; the bundled pack has them in "
                         f"domainroute/packs/insurance/{QUESTIONS_FILE}")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or set(row) != _FIELDS:
            raise InputError(f"{path}:{number}: a line needs exactly the fields {sorted(_FIELDS)}")
        if row["route"] not in ROUTES or row["split"] not in ("dev", "test") or not row["chunk_ids"]:
            raise InputError(f"{path}:{number}: route must be one of {ROUTES}, split dev|test, chunk_ids non-empty")
        questions.append(Question(row["question"], row["expected"], tuple(row["chunk_ids"]), row["route"], row["split"]))
    return [q for q in questions if split is None or q.split == split]


def spread(items: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` items evenly spaced over ``items`` (all when limit is None), so a subset keeps every route."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise InputError("--limit must be at least 1")
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


class DatasetRouter:
    """A Router that returns each question's labelled route (the oracle), so grounding is measured alone."""

    def __init__(self, questions: Sequence[Question]):
        self._routes = {q.question: q.route for q in questions}

    def route(self, query: str, *, previous_route: str | None = None) -> RouteDecision:
        if query not in self._routes:
            raise InputError(f"the dataset router only knows the evaluation questions, not {query!r}")
        return RouteDecision(route=self._routes[query], confidence=1.0)


class NeverEscalate:
    """An EscalationPolicy that never escalates: in this evaluation only the grounding check escalates."""

    def decide(self, query: str, claim: Claim | None) -> EscalationDecision:
        return EscalationDecision(escalate=False, score=0.0, reasons=[])


class NodeTimer(BaseCallbackHandler):
    """Wall time of one graph node per run, from LangChain's chain callbacks."""

    def __init__(self, node: str):
        self.node, self.seconds, self._starts = node, [], {}

    def on_chain_start(self, serialized, inputs, *, run_id, metadata=None, **kwargs):
        if kwargs.get("name") == self.node and (metadata or {}).get("langgraph_node") == self.node:
            self._starts[run_id] = time.perf_counter()

    def on_chain_end(self, outputs, *, run_id, **kwargs):
        if run_id in self._starts:
            self.seconds.append(time.perf_counter() - self._starts.pop(run_id))


@dataclass
class Outcome:
    """One question in one configuration: the first draft, what was shown, and the check's record."""

    question: Question
    draft: str
    draft_citations: list[dict[str, str]]
    answer: str
    citations: list[dict[str, str]]
    passages: list[dict[str, Any]]
    action: str
    check_seconds: float
    ground_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def score(text: str, citations: list[dict[str, str]], passages: list[dict[str, Any]], expected: str) -> tuple[bool, bool]:
    """(hallucinated, correct) for one shown text; see the module docstring."""
    from domainroute.graphs.grounding import check_answer, normalise

    check = check_answer(text, citations, passages)
    wanted = set(normalise(expected))
    supported = {f.key for f in check.facts} - {f.key for f in check.unsupported}
    return (not check.ok), bool(wanted) and wanted <= supported


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_config(service, pack, questions: Sequence[Question], router, *, label: str, progress: bool) -> list[Outcome]:
    """Every question through the real graph for ``pack`` (in-memory checkpoints); one Outcome each."""
    from langgraph.checkpoint.memory import InMemorySaver
    from tqdm import tqdm

    from domainroute.graphs.context import AgentContext
    from domainroute.graphs.graph import build_graph
    from domainroute.graphs.grounding import check_answer, stated_keys
    from domainroute.graphs.state import turn_input

    s = service.settings
    ctx = AgentContext(pack=pack, chat_model=service.chat_model, router=router, retriever=service.retriever,
                       escalation_policy=NeverEscalate(), adapters=frozenset(service.adapters), tenant=s.tenant,
                       hybrid_alpha=s.hybrid_alpha, max_new_tokens=s.max_new_tokens,
                       quote_fact_free=service.quote_fact_free_drafts)
    graph = build_graph(pack=pack).compile(checkpointer=InMemorySaver())
    outcomes = []
    for q in tqdm(questions, desc=label, unit="q", disable=not progress):
        timer = NodeTimer("ground")
        config = {"configurable": {"thread_id": uuid.uuid4().hex}, "callbacks": [timer]}
        graph.invoke(turn_input(q.question, None), config, context=ctx)
        v = graph.get_state(config).values
        record = v.get("grounding") or {}
        first = (record.get("withheld") or [{"text": v.get("answer", ""), "citations": v.get("citations", [])}])[0]
        stated_keys.cache_clear()  # time the check cold: no passage facts cached from earlier turns
        start = time.perf_counter()
        check_answer(first["text"], first["citations"], v.get("passages", []))
        outcomes.append(Outcome(q, first["text"], first["citations"], v.get("answer", ""), v.get("citations", []),
                                v.get("passages", []), record.get("action", "none"), time.perf_counter() - start,
                                sum(timer.seconds), {"checked": record.get("checked", 0)}))
    return outcomes


def _row(name: str, outcomes: Sequence[Outcome], *, shown: bool) -> dict[str, Any]:
    hallucinated = correct = escalated = 0
    for o in outcomes:
        text, cites = (o.answer, o.citations) if shown else (o.draft, o.draft_citations)
        h, c = score(text, cites, o.passages, o.question.expected)
        hallucinated += h
        correct += c
        escalated += shown and o.action == "escalated"
    n = len(outcomes)
    return {"name": name, "n": n, "hallucination_rate": hallucinated / n, "correct_rate": correct / n,
            "escalated_rate": escalated / n if shown else None}


def _adapter_pack(pack, adapters_dir: Path):
    """The pack with each domain route pointed at its trained adapter, or None when the pack has no adapters."""
    from domainroute.adapters.registry import scan

    by_domain = {entry.domain: entry.adapter_id for entry in scan(adapters_dir).values()}
    if not by_domain:
        return None, []
    routes = [r.model_copy(update={"adapter_id": by_domain.get(r.name)}) if r.kind == "domain" else r
              for r in pack.routes]  # a route whose adapter is not trained (yet) uses the base model
    return pack.model_copy(update={"routes": routes}), sorted(by_domain.values())


def evaluate(settings, *, split: str = "test", limit: int | None = None, router: str = "dataset",
             progress: bool = True, components: dict[str, Any] | None = None,
             learned_router: Any | None = None) -> dict[str, Any]:
    """Run the evaluation and return the report (rows, actions, latency, retrieval hit rate).

    ``components``: AgentService components to inject (tests pass a scripted chat model and an in-memory
    retriever); by default everything is built from ``settings``. ``learned_router``: the router that
    ``router="learned"`` uses (default: the pack's trained model).
    """
    from domainroute.service import AgentService

    pool = load_questions(settings.pack_dir / QUESTIONS_FILE, split)
    questions = spread(pool, limit)
    if not questions:
        raise InputError(f"no questions in split {split!r}")
    from domainroute.pack import load_pack

    pack = load_pack(settings.pack_dir)
    base_pack = pack.model_copy(update={"routes": [r.model_copy(update={"adapter_id": None}) for r in pack.routes]})
    adapter_pack, adapter_ids = _adapter_pack(pack, settings.adapters_dir)
    # The service gets the base pack, so a pack.toml that names adapters not trained yet is no error here.
    service = AgentService(settings, **{"pack": base_pack, "router": DatasetRouter(questions),
                                        "escalation_policy": NeverEscalate(), **(components or {})})
    if router == "dataset":
        chosen_router = service.router
    else:
        chosen_router = learned_router if learned_router is not None else _learned_router(settings, service)
    started = time.perf_counter()
    base = run_config(service, base_pack, questions, chosen_router, label="base", progress=progress)
    rows = [_row("base model", base, shown=False)]
    checked, checked_name = base, "base + grounding check"
    if adapter_pack is None:
        rows.append({"name": "base + domain adapter", "n": 0, "not_available":
                     f"no trained adapters in {settings.adapters_dir} (train them with `domainroute adapters train`)"})
    else:
        tuned = run_config(service, adapter_pack, questions, chosen_router, label="adapter", progress=progress)
        rows.append(_row("base + domain adapter", tuned, shown=False))
        rows.append(_row("base + grounding check", base, shown=True))
        checked, checked_name = tuned, "adapter + grounding check"
    rows.append(_row(checked_name, checked, shown=True))
    none_times = [o.ground_seconds for o in checked if o.action == "none"]
    return {
        "split": split, "questions": len(questions), "split_size": len(pool), "router": router,
        "adapters": adapter_ids,
        "base_model": str(settings.base_model_path), "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "actions": dict(Counter(o.action for o in checked)),
        "retrieval_hit_rate": sum(bool(set(o.question.chunk_ids) & {p["chunk_id"] for p in o.passages})
                                  for o in checked) / len(checked),
        "latency_ms": {
            "check_p50": _ms(_pct([o.check_seconds for o in checked], 0.5)),
            "check_p95": _ms(_pct([o.check_seconds for o in checked], 0.95)),
            "ground_node_p50_no_regeneration": _ms(_pct(none_times, 0.5)),
            "ground_node_p50_all": _ms(_pct([o.ground_seconds for o in checked], 0.5)),
        },
        "facts_per_first_draft": statistics.fmean(o.extra["checked"] for o in checked),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _learned_router(settings, service):
    from domainroute.agents.router import load_router

    return load_router(settings.router_dir, service.pack)


def render_markdown(report: dict[str, Any], command: str) -> str:
    """The report as the Markdown page docs/benchmarks/grounding.md."""

    def rate(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.1f} %"

    def ms(value: float | None) -> str:
        return "n/a (no such question)" if value is None else f"{value} ms"

    subset = "" if report["questions"] == report["split_size"] else \
        f" (an evenly spread subset of the split's {report['split_size']})"
    adapters = ", ".join(f"`{a}`" for a in report["adapters"]) or "none"
    lines = [
        "# Grounded answers: evaluation", "",
        f"Command: `{command}`  ",
        f"Split: `{report['split']}`, {report['questions']} questions{subset}; routing: {report['router']} "
        f"labels; base model: `{report['base_model']}`; domain adapters found: {adapters} (routes without one use "
        f"the base model); run time {report['seconds']} s.", "",
        "| configuration | hallucination rate (any unsupported fact shown) | correct (expected figure present and "
        "cited) | escalated |",
        "|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "not_available" in row:
            lines.append(f"| {row['name']} | not available: {row['not_available']} | | |")
        else:
            lines.append(f"| {row['name']} | {rate(row['hallucination_rate'])} | {rate(row['correct_rate'])} | "
                         f"{rate(row['escalated_rate'])} |")
    lat = report["latency_ms"]
    lines += [
        "", f"Grounding actions: {json.dumps(report['actions'])}. A listed supporting chunk was among the retrieved "
        f"passages for {rate(report['retrieval_hit_rate'])} of the questions (the knowledge base restates many "
        f"figures, so 'correct' can exceed this). Facts per first draft: {report['facts_per_first_draft']:.2f}.", "",
        f"Added latency of the check (pure function on the first draft, no cached passage facts): p50 "
        f"{ms(lat['check_p50'])}, p95 {ms(lat['check_p95'])}. Whole `ground` node when no regeneration was needed: "
        f"p50 {ms(lat['ground_node_p50_no_regeneration'])}; over all questions (including regenerations, i.e. one "
        f"more generation): p50 {ms(lat['ground_node_p50_all'])}.", "",
        "Rows without the check are scored on the model's first draft of the same turn (generation is greedy, so it "
        "is what the graph without the `ground` node shows). Definitions: `domainroute/commands/grounding.py`; data: "
        "`domainroute/packs/insurance/grounding/` (see its DATASET_CARD.md).",
    ]
    return "\n".join(lines) + "\n"


def cmd_grounding(args: argparse.Namespace) -> int:
    from domainroute.cli import _settings

    report = evaluate(_settings(args), split=args.split, limit=args.limit, router=args.router,
                      progress=not args.quiet)
    command = "domainroute grounding eval" + (f" --split {args.split}" if args.split != "test" else "") + \
        (f" --limit {args.limit}" if args.limit else "") + (" --router learned" if args.router == "learned" else "")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(render_markdown(report, command), encoding="utf-8")
    print(json.dumps(report, indent=2) if args.json else render_markdown(report, command))
    return 0


def register(add) -> None:
    p = add("grounding", cmd_grounding,
            "Evaluate grounded answers: hallucination, correct and escalated rates of the base model, the domain "
            "adapters (when trained) and the grounding check, on the pack's figure-and-date questions. Needs the "
            "knowledge base in the data dir (`domainroute ingest` first) and the base model; each question takes "
            "one to three generations, so use --limit on a busy machine.",
            "domainroute grounding eval --limit 40\n  domainroute grounding eval --out docs/benchmarks/grounding.md")
    p.add_argument("action", choices=["eval"], help="eval: run the evaluation")
    p.add_argument("--split", default="test", choices=["dev", "test"], help="question split (default test)")
    p.add_argument("--limit", type=int, help="evaluate N questions evenly spread over the split (default: all)")
    p.add_argument("--router", default="dataset", choices=["dataset", "learned"],
                   help="dataset: route by the question's label (default); learned: the pack's trained router")
    p.add_argument("--out", help="also write the Markdown report to this file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
