"""Does each adapter pay? Base vs base + own adapter vs base + a wrong domain's adapter, on a held-out split.

For every test example the model gets exactly the agent's prompt (SYSTEM_PROMPT + the example's retrieved
passages + question) and answers greedily. Each answer is scored (``adapters/templates.py``):

- template compliance: every required section of the domain's house format is present;
- terminology: share of the domain terms the reference uses that the answer also uses;
- ROUGE-L F1 against the reference answer;
- citation faithfulness: cited [n] are a non-empty subset of the given passages, and every amount and date the
  answer states appears in a cited passage;
- tokens/s of generation.

Conditions: ``base``, ``own`` (the domain's adapter, free decoding: what the adapter itself learned), ``own+copy``
(the same adapter with copy-constrained decoding, ``agents/copy_constraint.py``: figures only as the passages state
them, citations to a passage that states the line's facts; the graph's engine with DOMAINROUTE_COPY_NUMBERS=true),
``base+copy`` (the base model with the same constraint, so the adapter is compared like with like), ``own+quote``
and ``base+quote`` (the copy constraint plus the quote constraint: the house format's quoted line must be a sentence
the prompt shows, verbatim, cited to its passage; ``QuoteProcessor``) and ``wrong`` (another domain's adapter).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from domainroute.adapters.dataset import data_path, load_examples, passages_for, quotable
from domainroute.adapters.templates import DOMAINS, citation_faithful, facts, house_format, rouge_l, terminology
from domainroute.graphs.prompts import SYSTEM_PROMPT, user_prompt

# The "wrong adapter" each domain is compared with.
WRONG_ADAPTER = {"auto": "home", "home": "health", "health": "billing", "billing": "auto"}
METRICS = ("compliance", "terminology", "rouge_l", "faithfulness")
OWN_COPY = "own+copy"
"""The own adapter with copy-constrained decoding (agents/copy_constraint.py): the engine with copy_numbers on."""
BASE_COPY = "base+copy"
"""The base model with the same copy-constrained decoding."""
OWN_QUOTE = "own+quote"
"""The own adapter with copy-constrained decoding and quoted template lines (agents/copy_constraint.QuoteProcessor)."""
BASE_QUOTE = "base+quote"
"""The base model with the same two constraints (it rarely writes a quoted line's label, so it is rarely quoted)."""


@dataclass
class ConditionResult:
    domain: str
    condition: str  # base | own | own+copy | base+copy | own+quote | base+quote | wrong
    adapter_id: str | None
    n: int
    compliance: float
    terminology: float
    rouge_l: float
    faithfulness: float
    states_figures: float  # share of answers that state at least one amount or date (faithfulness is vacuous without)
    faithful_with_figures: float  # faithfulness among those answers (0.0 when there are none)
    tokens_per_s: float
    answers: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("answers")
        return out


def score(domain: str, answer: str, reference: str, passage_texts: Sequence[str]) -> dict[str, Any]:
    fmt = house_format(domain)
    return {
        "missing": fmt.missing(answer),
        "compliant": fmt.compliant(answer),
        "terminology": terminology(answer, reference, domain),
        "rouge_l": rouge_l(answer, reference),
        "faithful": citation_faithful(answer, passage_texts),
        "figures": bool(facts(answer)),
    }


def run_condition(
    engine,
    domain: str,
    examples: Sequence[dict[str, Any]],
    chunks_by_id: dict,
    *,
    adapter_id: str | None,
    condition: str,
    batch_size: int = 8,
    max_new_tokens: int = 120,
    progress: bool = False,
    copy_numbers: bool = False,
    quote_labels: Sequence[str] = (),
) -> ConditionResult:
    """Answer every example with ``engine`` (a LocalChatModel) and ``adapter_id``; score the answers."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from tqdm import tqdm

    prepared = []
    for example in examples:
        passages = passages_for(example, chunks_by_id)
        prompt = engine.prompt_text([SystemMessage(SYSTEM_PROMPT), HumanMessage(user_prompt(example["query"], passages))])
        prepared.append((example, passages, prompt))
    tokenizer = engine.load().tokenizer
    answers, seconds, generated = [], 0.0, 0
    bar = tqdm(total=len(prepared), desc=f"eval {domain}/{condition}", unit="answer", disable=not progress)
    for i in range(0, len(prepared), batch_size):
        chunk = prepared[i: i + batch_size]
        start = time.perf_counter()
        sources = [[p.text for p in passages] for _, passages, _ in chunk] if copy_numbers else None
        quotes = [quotable(example["query"], passages) for example, passages, _ in chunk] if quote_labels else None
        texts = engine.generate_texts([p for _, _, p in chunk], adapter_ids=[adapter_id] * len(chunk),
                                      max_new_tokens=max_new_tokens, copy_sources=sources, quotes=quotes,
                                      quote_labels=quote_labels)
        seconds += time.perf_counter() - start
        for (example, passages, _), text in zip(chunk, texts, strict=True):
            generated += len(tokenizer(text, add_special_tokens=False)["input_ids"])
            scored = score(domain, text, example["answer"], [p.text for p in passages])
            answers.append({"query": example["query"], "answer": text, "reference": example["answer"], **scored})
        bar.update(len(chunk))
    bar.close()
    n = len(answers)

    def mean(key: str) -> float:
        return round(sum(float(a[key]) for a in answers) / n, 4) if n else 0.0

    with_figures = [a for a in answers if a["figures"]]
    return ConditionResult(domain=domain, condition=condition, adapter_id=adapter_id, n=n,
                           compliance=mean("compliant"), terminology=mean("terminology"), rouge_l=mean("rouge_l"),
                           faithfulness=mean("faithful"), states_figures=mean("figures"),
                           faithful_with_figures=round(sum(a["faithful"] for a in with_figures) / len(with_figures), 4)
                           if with_figures else 0.0,
                           tokens_per_s=round(generated / seconds, 1) if seconds else 0.0, answers=answers)


def _chunks(kb_dir: Path) -> dict:
    from domainroute.retrievers.ingest import load_chunks

    return {c.chunk_id: c for c in load_chunks(kb_dir)}


def evaluate_split(
    domain: str,
    base_model_path: Path,
    data: Path,
    *,
    adapters: dict[str, Path],
    adapter_id: str | None,
    kb_dir: Path,
    split: str = "test",
    max_new_tokens: int = 120,
    threads: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """One condition's figures on one split (what a trained adapter's manifest records)."""
    from domainroute.agents.local_engine import LocalChatModel

    engine = LocalChatModel(model_path=base_model_path, adapters=adapters, torch_threads=threads)
    result = run_condition(engine, domain, load_examples(data, split), _chunks(kb_dir), adapter_id=adapter_id,
                           condition="own" if adapter_id else "base", max_new_tokens=max_new_tokens,
                           progress=progress)
    return {k: v for k, v in result.summary().items()
            if k in ("n", *METRICS, "states_figures", "faithful_with_figures", "tokens_per_s")}


def evaluate_all(
    base_model_path: Path,
    adapters: dict[str, Path],
    data_dir: Path,
    kb_dir: Path,
    *,
    domains: Sequence[str] = DOMAINS,
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int = 120,
    threads: int = 1,
    progress: bool = True,
) -> list[ConditionResult]:
    """Base, own adapter and wrong adapter for each domain, on one engine that holds every adapter."""
    from domainroute.agents.local_engine import LocalChatModel
    from domainroute.errors import ConfigError

    for domain in domains:
        house_format(domain)
        for needed in (f"insurance-{domain}", f"insurance-{WRONG_ADAPTER[domain]}"):
            if needed not in adapters:
                raise ConfigError(f"adapter {needed!r} is not in the registry (known: {', '.join(sorted(adapters))}); "
                                  f"train it with `domainroute adapters train {needed.removeprefix('insurance-')}`")
    engine = LocalChatModel(model_path=base_model_path, adapters=adapters, torch_threads=threads)
    chunks_by_id = _chunks(kb_dir)
    results = []
    for domain in domains:
        examples = load_examples(data_path(data_dir, domain), split)[:limit]
        own = f"insurance-{domain}"
        for condition, adapter_id in (("base", None), ("own", own), (BASE_COPY, None), (OWN_COPY, own),
                                      (BASE_QUOTE, None), (OWN_QUOTE, own),
                                      ("wrong", f"insurance-{WRONG_ADAPTER[domain]}")):
            quoting = condition in (OWN_QUOTE, BASE_QUOTE)
            results.append(run_condition(engine, domain, examples, chunks_by_id, adapter_id=adapter_id,
                                         condition=condition, max_new_tokens=max_new_tokens, progress=progress,
                                         copy_numbers=condition in (OWN_COPY, BASE_COPY) or quoting,
                                         quote_labels=house_format(domain).quote_labels if quoting else ()))
    return results


def beats_base(results: Sequence[ConditionResult], *, own: str = "own", base: str = "base",
               ceiling_ties: bool = False) -> dict[str, bool]:
    """Per domain: does the own adapter beat the base model on all four quality figures? (``own``/``base`` name
    the two conditions compared: ``own``/``base`` with free decoding, ``own+copy``/``base+copy`` or
    ``own+quote``/``base+quote`` constrained.) A tie is not a win, also at 1.00, unless ``ceiling_ties``: then a tie
    at 1.00 (nothing left to beat) counts, and every other figure must still be higher."""
    by = {(r.domain, r.condition): r for r in results}
    out = {}
    for domain in sorted({r.domain for r in results}):
        mine, theirs = by.get((domain, own)), by.get((domain, base))
        if mine and theirs:
            out[domain] = all(getattr(mine, m) > getattr(theirs, m)
                              or (ceiling_ties and getattr(mine, m) == getattr(theirs, m) == 1.0) for m in METRICS)
    return out


def verdicts(results: Sequence[ConditionResult]) -> dict[str, dict[str, bool]]:
    """Every "own beats base on all four" comparison the reports print, by name, then domain."""
    return {
        "own_beats_base": beats_base(results),
        "own_beats_base_copy_constrained": beats_base(results, own=OWN_COPY, base=BASE_COPY),
        "own_beats_base_quote_constrained": beats_base(results, own=OWN_QUOTE, base=BASE_QUOTE),
        "own_beats_base_quote_constrained_ceiling_ties": beats_base(results, own=OWN_QUOTE, base=BASE_QUOTE,
                                                                    ceiling_ties=True),
    }


def markdown_table(results: Sequence[ConditionResult]) -> str:
    lines = ["| domain | condition | adapter | n | compliance | terminology | ROUGE-L | faithfulness | "
             "states figures | faithful when stating figures | tokens/s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.domain} | {r.condition} | {r.adapter_id or 'base'} | {r.n} | {r.compliance:.2f} | "
                     f"{r.terminology:.2f} | {r.rouge_l:.2f} | {r.faithfulness:.2f} | {r.states_figures:.2f} | "
                     f"{r.faithful_with_figures:.2f} | {r.tokens_per_s:.0f} |")
    return "\n".join(lines)
