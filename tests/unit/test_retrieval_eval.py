"""The retrieval evaluation: the bundled question set is valid against the knowledge base, the metrics and the
alpha choice compute what they claim, and the pack's tuned alpha becomes the settings default. No model, no store."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from domainroute.errors import ConfigError, InputError
from domainroute.retrievers.base import SearchFilters
from domainroute.retrievers.evaluation import (
    ALPHA_GRID,
    EVAL_NAME,
    EvalItem,
    assign_splits,
    check_against_chunks,
    choose_alpha,
    item_line,
    load_eval_set,
    recall_at,
    reciprocal_rank,
    rerank_ranker,
    run,
    score,
    search_ranker,
    write_default_alpha,
)
from domainroute.retrievers.ingest import load_chunks
from domainroute.schemas import Passage
from domainroute.settings import BUNDLED_PACK, Settings, pack_hybrid_alpha

pytestmark = pytest.mark.unit
EVAL_SET = BUNDLED_PACK / "retrieval" / EVAL_NAME


@pytest.fixture(scope="module")
def chunks():
    return load_chunks(BUNDLED_PACK / "kb")


def test_the_bundled_question_set_is_valid_against_the_knowledge_base(chunks) -> None:
    items = load_eval_set(EVAL_SET)
    check_against_chunks(items, chunks, today=date.today())  # ids exist, tenant, in force on as_of, split rule
    by_id = {c.chunk_id: c for c in chunks}
    lines = Counter(item_line(item, by_id) for item in items)
    assert len(items) >= 160
    assert set(lines) == {"auto", "home", "health", "billing", "general"} and min(lines.values()) >= 15
    splits = Counter(item.split for item in items)
    assert abs(splits["validation"] - splits["test"]) <= len(lines)  # half and half within each line
    dated = [item for item in items if item.as_of is not None]
    assert len(dated) >= 10
    # version-sensitive questions point at old versions for old dates and at new versions for recent ones
    versioned = {"auto-rental-reimbursement", "home-windstorm-hail", "health-prior-authorization",
                 "home-claims-procedure-manual"}
    versions = {by_id[c].version for item in dated for c in item.relevant if by_id[c].doc_id in versioned}
    assert versions == {1, 2}


def test_a_relabelled_split_or_a_stale_version_is_rejected(chunks) -> None:
    items = load_eval_set(EVAL_SET)
    flipped = [items[0].model_copy(update={"split": "test" if items[0].split == "validation" else "validation"})]
    with pytest.raises(InputError, match="hash rule"):
        check_against_chunks(flipped + items[1:], chunks, today=date.today())
    stale = EvalItem(question="what is the rental limit?", relevant=("auto-rental-reimbursement@v1#000",),
                     tenant="northwind", as_of=date(2026, 6, 1), split="test")
    with pytest.raises(InputError, match="not in force on 2026-06-01"):
        check_against_chunks([stale], chunks, today=date.today())
    foreign = stale.model_copy(update={"relevant": ("harbor-auto-policy-summary@v1#000",), "as_of": None})
    with pytest.raises(InputError, match="belongs to tenant 'harbor'"):
        check_against_chunks([foreign], chunks, today=date.today())
    missing = stale.model_copy(update={"relevant": ("auto-nothing@v1#000",)})
    with pytest.raises(InputError, match="not in the knowledge base"):
        check_against_chunks([missing], chunks, today=date.today())


def test_load_eval_set_names_the_bad_line(tmp_path: Path) -> None:
    good = {"question": "is hail covered?", "relevant": ["x@v1#000"], "tenant": "northwind", "as_of": None,
            "split": "test"}
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(InputError, match=r"eval.jsonl:2: not valid JSON"):
        load_eval_set(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"question": "a second one", "split": "train"}))
    with pytest.raises(InputError, match=r"eval.jsonl:2: field 'split'"):
        load_eval_set(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good))
    with pytest.raises(InputError, match="appears twice"):
        load_eval_set(path)
    with pytest.raises(InputError, match="not found"):
        load_eval_set(tmp_path / "missing.jsonl")


def test_splits_are_half_per_group_and_follow_the_hash() -> None:
    questions = [f"question {i}" for i in range(10)]
    groups = ["a"] * 6 + ["b"] * 4
    splits = assign_splits(questions, groups)
    assert splits == assign_splits(questions, groups)
    assert Counter(s for s, g in zip(splits, groups) if g == "a") == {"validation": 3, "test": 3}
    assert Counter(s for s, g in zip(splits, groups) if g == "b") == {"validation": 2, "test": 2}
    # reordering the file does not move a question to the other split
    assert dict(zip(questions, splits)) == dict(zip(questions[::-1], assign_splits(questions[::-1], groups[::-1])))


def test_metrics() -> None:
    ranked = ["a", "b", "c", "d", "e", "f"]
    assert recall_at(ranked, ["b", "z"], 5) == 0.5
    assert recall_at(ranked, ["f"], 5) == 0.0
    assert reciprocal_rank(ranked, ["c", "f"], 10) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, ["f"], 5) == 0.0
    items = [EvalItem(question=f"question {i}", relevant=rel, tenant="t", split="test") for i, rel in
             enumerate([("a",), ("c", "z"), ("y",)])]
    scores = score([ranked, ranked, ranked], items)
    assert (scores.n, scores.recall, scores.hit) == (3, pytest.approx(0.5), pytest.approx(2 / 3))
    assert scores.mrr == pytest.approx((1 + 1 / 3 + 0) / 3)


class AlphaRetriever:
    """'good' is ranked 1st for 0.2 <= alpha <= 0.4, 2nd for alpha 0.1, 6th otherwise; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, SearchFilters]] = []

    def search(self, query, *, tenant, k, filters=SearchFilters(), alpha=0.5, mode="hybrid"):
        self.calls.append((query, mode, alpha, filters))
        bad = [f"bad{i}" for i in range(5)]
        ids = ["good", *bad] if 0.2 <= alpha <= 0.4 else [bad[0], "good", *bad[1:]] if alpha == 0.1 else [*bad, "good"]
        return [Passage(chunk_id=i, doc_id=i, title=i, text=i, line="auto", doc_type="faq",
                        effective_date="2025-01-01", tenant=tenant) for i in ids][:k]


def test_choose_alpha_uses_recall_then_mrr_then_nearest_half() -> None:
    items = [EvalItem(question="a question", relevant=("good",), tenant="t", as_of=date(2025, 3, 1),
                      split="validation")]
    retriever = AlphaRetriever()
    choice = choose_alpha(retriever, items)
    assert set(choice.grid) == set(ALPHA_GRID)
    assert choice.grid[0.1].recall == 1.0 and choice.grid[0.1].mrr == 0.5 and choice.grid[0.5].recall == 0.0
    assert choice.alpha == 0.4  # 0.1-0.4 tie on recall, 0.2-0.4 on MRR; 0.4 is nearest 0.5
    assert {c[3].as_of for c in retriever.calls} == {date(2025, 3, 1)}  # each question searched on its as_of
    scores, rankings = run(search_ranker(retriever, mode="keyword"), items)
    assert rankings[0][-1] == "good" and scores.mrr == pytest.approx(1 / 6) and scores.recall == 0.0


def test_rerank_reorders_the_hybrid_candidates() -> None:
    class Judge:
        def predict(self, pairs):
            return [1.0 if text == "good" else 0.0 for _, text in pairs]

    items = [EvalItem(question="a question", relevant=("good",), tenant="t", split="test")]
    scores, rankings = run(rerank_ranker(AlphaRetriever(), Judge(), alpha=0.9, pool=20), items)
    assert rankings[0][0] == "good" and len(rankings[0]) == 6 and scores.mrr == 1.0


def test_the_pack_alpha_is_the_settings_default(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    assert pack_hybrid_alpha(pack) == 0.5 and Settings(pack_dir=pack).hybrid_alpha == 0.5
    items = [EvalItem(question="a question", relevant=("good",), tenant="t", split="validation")]
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("{}\n")
    written = write_default_alpha(pack, choose_alpha(AlphaRetriever(), items), eval_path=eval_path)
    assert json.loads(written.read_text())["hybrid_alpha"] == 0.4
    assert Settings(pack_dir=pack).hybrid_alpha == 0.4
    assert Settings(pack_dir=pack, hybrid_alpha=0.9).hybrid_alpha == 0.9  # an explicit value still wins
    written.write_text('{"alpha": 0.3}')
    with pytest.raises(ConfigError, match="hybrid_alpha"):
        Settings(pack_dir=pack)


def test_the_bundled_pack_config_was_chosen_on_this_question_set() -> None:
    path = BUNDLED_PACK / "retrieval" / "config.json"
    if not path.exists():
        pytest.skip("no tuned alpha in the bundled pack yet: run `domainroute retrieval eval --write-default`")
    import hashlib

    config = json.loads(path.read_text())
    assert config["chosen_on"] == "validation" and 0.0 <= config["hybrid_alpha"] <= 1.0
    assert config["eval_set_sha256"] == hashlib.sha256(EVAL_SET.read_bytes()).hexdigest(), (
        "eval.jsonl changed since the alpha was chosen: rerun `domainroute retrieval eval --write-default`"
    )
