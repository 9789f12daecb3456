"""The base model's pretraining data: number perturbation (copy-forcing) and its validation."""

from __future__ import annotations

import random
import re

import pytest

from domainroute.agents.base_model import BaseModelConfig, build_examples, corpus_hash, perturb_numbers
from domainroute.retrievers.base import Chunk
from domainroute.schemas import Passage

pytestmark = pytest.mark.unit


def _passage(text: str, chunk_id: str = "doc@v1#000") -> Passage:
    return Passage(chunk_id=chunk_id, doc_id="doc", title="T", text=text, line="billing", doc_type="faq",
                   effective_date="2026-01-01", tenant="northwind")


def test_numbers_are_replaced_consistently_and_years_kept():
    shown = [_passage("A late fee of $20 applies after 15 days; $20 again on 2026-03-01 and in 1999."),
             _passage("Refunds within 15 business days.", "other@v1#001")]
    out = perturb_numbers(shown, random.Random(3))
    first, second = out[0].text, out[1].text
    assert first != shown[0].text
    fee = re.search(r"\$(\d+)", first).group(1)
    assert len(fee) == 2 and first.count(f"${fee}") == 2          # the same number, the same replacement
    days = re.search(r"after (\d+) days", first).group(1)
    assert f"within {days} business days" in second                # ... across the passages of one example
    assert "2026-" in first and "in 1999" in first                  # years stay years
    assert [p.chunk_id for p in out] == [p.chunk_id for p in shown]


def _chunks() -> list[Chunk]:
    from datetime import date

    # 3-digit non-year numbers: a random replacement equals the original only 1 time in 900
    texts = ["Late fees\nA late fee of $125 applies after the 115-day grace period.",
             "Refunds\nWe refund unearned premium within 310 business days of cancellation.",
             "Towing\nTowing is covered up to 150 miles per disablement."]
    return [Chunk(chunk_id=f"d{i}@v1#000", doc_id=f"d{i}", version=1, ordinal=0, title=f"Doc {i}",
                  section=t.split("\n")[0], text=t,
                  line=("billing", "billing", "auto")[i], doc_type="faq", effective_date=date(2026, 1, 1),
                  tenant="northwind") for i, t in enumerate(texts)]


# The plain corpus of the fixture, frozen: a change to the default corpus (e.g. the perturbation drawing from the
# generator when it is off) changes this. Regenerate only for an intended change of the pretraining data.
PLAIN_FIXTURE_SHA256 = "08915e268372d5eeb9a7c4058234e75fb5ef2f388c04f6e1affe14267726b485"


def test_perturbation_off_by_default_leaves_the_corpus_unchanged():
    assert corpus_hash(build_examples(_chunks(), BaseModelConfig(qa_per_chunk=6))) == PLAIN_FIXTURE_SHA256
    assert corpus_hash(build_examples(_chunks(), BaseModelConfig(qa_per_chunk=6, perturb_numbers=0.0))) \
        == PLAIN_FIXTURE_SHA256


def _qa_with_passages(examples):
    return [e for e in examples if e["kind"] == "qa" and e["k"] >= 1]


def test_full_share_perturbs_every_qa_example_and_no_document():
    originals = {c.text for c in _chunks()}
    examples = build_examples(_chunks(), BaseModelConfig(qa_per_chunk=6, perturb_numbers=1.0))
    qa = _qa_with_passages(examples)
    assert qa
    for e in qa:  # every fixture chunk states a number, so no prompt may show an original passage body
        assert not any(c.text.split("\n", 1)[1] in e["prompt"] for c in _chunks())
        # the answer quotes the perturbed passage, so every number it states is in the prompt
        assert all(n in e["prompt"] for n in re.findall(r"\d+", e["answer"].split("[")[0]))
    assert {e["text"].split("\n", 1)[1] for e in examples if e["kind"] == "lm"} <= originals  # documents untouched


def test_partial_share_perturbs_some_qa_examples():
    qa = _qa_with_passages(build_examples(_chunks(), BaseModelConfig(qa_per_chunk=30, perturb_numbers=0.5)))
    perturbed = sum(not any(c.text.split("\n", 1)[1] in e["prompt"] for c in _chunks()) for e in qa)
    assert 0.3 * len(qa) < perturbed < 0.7 * len(qa)


def test_bad_share_names_the_field():
    with pytest.raises(ValueError, match="perturb_numbers"):
        BaseModelConfig(perturb_numbers=1.5)


def _probe_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "base_copy_probe.py"
    spec = importlib.util.spec_from_file_location("base_copy_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_perturbs_prompt_and_answer_alike_and_keeps_markers_and_years():
    probe = _probe_module()
    example = {"kind": "qa", "k": 2,
               "prompt": "Passages:\n[1] Fees\nA fee of $125 applies after 115 days since 2026.\n[2] Other\nUp to 150 miles."
                         "\nQuestion: what is the fee?",
               "answer": "A fee of $125 applies after 115 days since 2026. [1]\nSources: [1]"}
    out = probe.perturbed_copy(example, random.Random(5))
    fee, days = re.search(r"\$(\d+) applies after (\d+) days", out["answer"]).groups()
    assert (fee, days) != ("125", "115") and len(fee) == len(days) == 3
    assert f"${fee} applies after {days} days since 2026." in out["prompt"]   # the same mapping in prompt and answer
    assert "[1] Fees" in out["prompt"] and "[2] Other" in out["prompt"]       # citation markers kept
    assert out["answer"].endswith("[1]\nSources: [1]")
    assert "150 miles" not in out["prompt"]
