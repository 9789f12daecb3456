"""The house formats and the evaluation's scoring functions (no model needed)."""

from __future__ import annotations

import json

import pytest

from domainroute.adapters.dataset import data_path, load_examples, passages_for, reference_answer, split_of
from domainroute.adapters.templates import (
    DOMAINS,
    citation_faithful,
    facts,
    house_format,
    lcs_length,
    rouge_l,
    terminology,
)
from domainroute.schemas import Passage
from domainroute.settings import BUNDLED_PACK

pytestmark = pytest.mark.unit

AUTO = """Coverage: comprehensive
Next steps:
1. Glass breakage is paid under Comprehensive coverage. [2]
2. Take photos of the damage before any repair.
Documents needed: photos of the damage
Sources: [2]"""


def test_compliance_lists_missing_sections():
    fmt = house_format("auto")
    assert fmt.compliant(AUTO)
    assert fmt.missing(AUTO.replace("Documents needed: photos of the damage\n", "")) == ["Documents needed:"]
    assert "Coverage: <type>" in fmt.missing(AUTO.replace("comprehensive", "the good kind"))
    assert fmt.missing("Glass is covered [1]") == [s.name for s in fmt.sections]


def test_health_needs_a_key_term_and_billing_needs_amount_and_timeline():
    health = "Plan rule: MRI needs approval. [1]\nWhat this means for you: ask first.\nSources: [1]"
    assert house_format("health").missing(health) == ["EOB / prior authorization / in-network term"]
    assert house_format("health").compliant(health.replace("ask first", "get prior authorization first"))
    billing = "Amount: $20 [1]\nTimeline: charged on day 16. [1]\nSources: [1]"
    assert house_format("billing").compliant(billing)
    assert house_format("billing").missing(billing.replace("Timeline", "When")) == ["Due date: or Timeline:"]


def test_unknown_domain_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown domain 'autos'; known: auto, home, health, billing"):
        house_format("autos")


def test_facts_normalise_amounts_dates_and_durations():
    assert facts("a $1,000.00 fee, 20% off, due March 10, 2026, within 15 calendar days") == {
        "$1000", "20%", "march 10, 2026", "15 day"}
    assert "march 10" in facts("March 10, 2026", supported=True)


def test_citation_faithfulness():
    passages = ["The late fee is $20, charged 16 days after the due date.", "AutoPay is free."]
    assert citation_faithful("Amount: $20 [1]\nSources: [1]", passages)
    assert not citation_faithful("Amount: $25 [1]\nSources: [1]", passages)  # figure not in the cited passage
    assert not citation_faithful("Amount: $20 [2]\nSources: [2]", passages)  # cites the wrong passage
    assert not citation_faithful("Amount: $20 [3]", passages)  # no passage 3
    assert not citation_faithful("Amount: $20", passages)  # nothing cited: cannot be checked
    assert citation_faithful("AutoPay costs nothing [2]", passages)


def test_rouge_l_and_lcs():
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("", "the cat") == 0.0
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)


def test_terminology_scores_the_terms_the_reference_uses():
    reference = "Plan rule: get prior authorization for an in-network MRI. [1]"
    assert terminology("You need prior authorization. [1]", reference, "health") == 0.5
    assert terminology("in-network providers need prior authorizations", reference, "health") == 1.0
    assert terminology("anything", "no vocabulary here", "health") == 1.0


def test_split_is_fixed_by_query_hash():
    assert split_of("windshield") == split_of("  Windshield ")
    counts = {s: 0 for s in ("train", "validation", "test")}
    for i in range(2000):
        counts[split_of(f"query {i}")] += 1
    assert 0.66 < counts["train"] / 2000 < 0.74 and 0.12 < counts["test"] / 2000 < 0.18


def _passages(*texts: str) -> list[Passage]:
    return [Passage(chunk_id=f"d@v1#{i:03d}", doc_id="d", title="T", section="S", text=f"S\n{t}", line="billing",
                    doc_type="faq", effective_date="2026-01-01", tenant="northwind") for i, t in enumerate(texts)]


def test_reference_answers_copy_facts_from_the_cited_passage():
    passages = _passages("AutoPay is free and has no fee.",
                         "Northwind charges a late fee of $20. The late fee is charged on day 16 after the due date.")
    answer = reference_answer("billing", "how much is the late fee", passages)
    assert answer.startswith("Timeline: Northwind charges a late fee of $20. [2]\nAmount: $20 [2]\n")
    assert house_format("billing").compliant(answer)
    assert citation_faithful(answer, [p.text for p in passages])


@pytest.mark.parametrize("domain", DOMAINS)
def test_bundled_training_data_is_well_formed(domain):
    """Every bundled example: >= 300 per domain, fixed split, passages in the KB, compliant and faithful reference."""
    from domainroute.retrievers.ingest import load_chunks

    path = data_path(BUNDLED_PACK / "adapters" / "data", domain)
    rows = load_examples(path)
    assert len(rows) >= 300
    assert len({r["query"].lower() for r in rows}) == len(rows)
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    chunks = {c.chunk_id: c for c in load_chunks(BUNDLED_PACK / "kb")}
    fmt = house_format(domain)
    for row in rows:
        assert row["split"] == split_of(row["query"])
        passages = passages_for(row, chunks)
        assert 1 <= len(passages) <= 3 and all(p.line in (domain, "general") for p in passages)
        assert fmt.compliant(row["answer"]), (row["query"], fmt.missing(row["answer"]))
        assert citation_faithful(row["answer"], [p.text for p in passages]), row
        assert row["answer"] == reference_answer(domain, row["query"], passages), "generator and data disagree"
    assert json.loads(path.read_text().splitlines()[0])["passages"]


def test_beats_base_compares_the_named_conditions_and_a_tie_is_not_a_win():
    from domainroute.adapters.evaluate import BASE_COPY, OWN_COPY, ConditionResult, beats_base

    def result(condition: str, faithfulness: float, terminology: float = 0.5) -> ConditionResult:
        return ConditionResult(domain="billing", condition=condition, adapter_id=None, n=10, compliance=0.9,
                               terminology=terminology, rouge_l=0.3, faithfulness=faithfulness, states_figures=0.5,
                               faithful_with_figures=0.5, tokens_per_s=100.0)

    rows = [result("base", 0.8, 0.1), result("own", 0.9), result(BASE_COPY, 1.0, 0.1), result(OWN_COPY, 1.0)]
    rows[0].compliance = rows[2].compliance = 0.0
    rows[0].rouge_l = rows[2].rouge_l = 0.1
    assert beats_base(rows) == {"billing": True}
    assert beats_base(rows, own=OWN_COPY, base=BASE_COPY) == {"billing": False}  # 1.0 vs 1.0 faithfulness
    assert beats_base(rows, own=OWN_COPY, base=BASE_COPY, ceiling_ties=True) == {"billing": True}
    rows[3].faithfulness = rows[2].faithfulness = 0.9  # a tie below 1.00 is still no win
    assert beats_base(rows, own=OWN_COPY, base=BASE_COPY, ceiling_ties=True) == {"billing": False}
    rows[3].faithfulness = rows[2].faithfulness = 1.0
    rows[3].terminology = 0.05  # a tie at 1.00 does not excuse a lower figure elsewhere
    assert beats_base(rows, own=OWN_COPY, base=BASE_COPY, ceiling_ties=True) == {"billing": False}


def test_verdicts_compare_each_constrained_adapter_with_the_base_under_the_same_constraint():
    from domainroute.adapters.evaluate import BASE_COPY, BASE_QUOTE, OWN_COPY, OWN_QUOTE, ConditionResult, verdicts

    def result(condition: str, figure: float) -> ConditionResult:
        return ConditionResult(domain="home", condition=condition, adapter_id=None, n=4, compliance=figure,
                               terminology=figure, rouge_l=figure, faithfulness=1.0 if "quote" in condition else figure,
                               states_figures=0.5, faithful_with_figures=1.0, tokens_per_s=1.0)

    rows = [result("base", 0.5), result("own", 0.4), result(BASE_COPY, 0.2), result(OWN_COPY, 0.3),
            result(BASE_QUOTE, 0.6), result(OWN_QUOTE, 0.7)]
    assert verdicts(rows) == {"own_beats_base": {"home": False}, "own_beats_base_copy_constrained": {"home": True},
                              "own_beats_base_quote_constrained": {"home": False},  # faithfulness 1.0 vs 1.0
                              "own_beats_base_quote_constrained_ceiling_ties": {"home": True}}


def test_house_formats_belong_to_the_adapters_trained_on_them():
    from domainroute.adapters.templates import adapter_house_format, house_format

    assert adapter_house_format("insurance-billing") == house_format("billing")
    assert adapter_house_format(None) is None and adapter_house_format("billing") is None
    assert adapter_house_format("insurance-marine") is None and adapter_house_format("acme-auto") is None
