"""The committed router model on the real encoder: test-split targets, multi-turn, adding a route."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from domainroute.agents.router import EmbeddingRouter, load_router, load_split, train_router
from domainroute.errors import ConfigError
from domainroute.pack import load_pack
from domainroute.settings import BUNDLED_PACK

pytestmark = pytest.mark.integration

MODEL_DIR = BUNDLED_PACK / "router" / "model"


@pytest.fixture(scope="module")
def router() -> EmbeddingRouter:
    return load_router(MODEL_DIR, load_pack(BUNDLED_PACK))


@pytest.fixture(scope="module")
def test_metrics(router: EmbeddingRouter) -> dict:
    return router.evaluate(load_split(BUNDLED_PACK, "test"), timed=False)  # timings live in benchmarks/


def test_committed_manifest_matches_the_data_and_the_model(router: EmbeddingRouter, test_metrics: dict) -> None:
    from domainroute.agents.router import router_data_paths, sha256_files

    manifest = json.loads((MODEL_DIR / "manifest.json").read_text(encoding="utf-8"))
    paths = router_data_paths(BUNDLED_PACK)
    assert manifest["data"]["sha256"] == sha256_files([paths["train"], paths["validation"]]), \
        "router data changed since the model was trained: run `domainroute router train`"
    assert manifest["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["cascade"]["encoder"] == ("sentence-transformers/all-mpnet-base-v2 + "
                                              "sentence-transformers/all-MiniLM-L6-v2")
    assert router.second is not None and router.second.encoder_name == manifest["cascade"]["encoder"]
    second = json.loads((MODEL_DIR / manifest["cascade"]["dir"] / "manifest.json").read_text(encoding="utf-8"))
    assert second["routes"] == manifest["routes"] and second["encoder"] == manifest["cascade"]["encoder"]
    assert manifest["routes"] == load_pack(BUNDLED_PACK).route_names
    n = test_metrics["n"]
    assert abs(test_metrics["accuracy"] - manifest["test_metrics"]["accuracy"]) <= 1 / n + 1e-9
    assert abs(test_metrics["second_stage_share"] - manifest["test_metrics"]["second_stage_share"]) <= 1 / n + 1e-9


def test_second_stage_decides_the_unsure_minority(router: EmbeddingRouter, test_metrics: dict) -> None:
    """The large encoder runs for the queries the first stage is unsure of, and only for those."""
    assert 0.05 <= test_metrics["second_stage_share"] <= 0.4
    confident = "my windshield cracked on the highway, is that covered under comprehensive?"
    assert router._proba_fast([confident]).max() >= router.cascade_threshold
    assert router.route(confident).route == "auto"
    # validation queries the first stage alone refuses and the second stage routes right (mpnet really runs)
    for query, route in [("headlight cracked", "auto"),
                         ("mail carrier slipped on my icy steps and says she is going to sue me", "home")]:
        p = router._proba_fast([query])[0]
        assert p.max() < router.cascade_threshold
        assert router._decide(p, query, None).route == "out_of_scope"
        assert router.route(query).route == route, query


def test_no_regression_on_the_test_split(test_metrics: dict) -> None:
    """Floors a little under the measured values of the committed model (see docs/benchmarks/router.md)."""
    assert test_metrics["accuracy"] >= 0.88
    assert test_metrics["macro_f1"] >= 0.88
    assert test_metrics["out_of_scope_recall"] >= 0.91
    assert test_metrics["ece"] <= 0.1


@pytest.mark.xfail(strict=True, reason="target not reached: the committed model measures accuracy 0.90 and "
                   "out-of-scope recall 0.932 on the test split (MiniLM, then mpnet + MiniLM for unsure queries; "
                   "linear models); see docs/router.md. Remove this marker when a model reaches it.")
def test_brief_targets_on_the_test_split(test_metrics: dict) -> None:
    assert test_metrics["accuracy"] >= 0.95
    assert test_metrics["out_of_scope_recall"] >= 0.95


def test_routes_clear_questions(router: EmbeddingRouter) -> None:
    assert router.route("someone rear-ended me at a light").route == "auto"
    assert router.route("hail damaged my roof").route == "home"
    assert router.route("do I need prior authorization for an MRI").route == "health"
    assert router.route("why was I charged a late fee").route == "billing"
    assert router.route("give me a pasta recipe").route == "out_of_scope"


def test_follow_up_keeps_the_thread_route(router: EmbeddingRouter) -> None:
    first = router.route("someone rear-ended me at a light and my bumper is smashed")
    assert first.route == "auto"
    follow = router.route("and what about the deductible?", previous_route=first.route)
    assert follow.route == "auto"
    assert router.route("and what about the deductible?", previous_route="home").route == "home"


def test_follow_up_switches_when_confidently_elsewhere(router: EmbeddingRouter) -> None:
    assert router.route("when is my premium due", previous_route="auto").route == "billing"
    assert router.route("what's the weather tomorrow", previous_route="auto").route == "out_of_scope"
    assert router.route("is my doctor in network", previous_route="home").route == "health"


def test_bad_input_is_a_clear_value_error(router: EmbeddingRouter) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        router.route("   ")
    with pytest.raises(ValueError, match="the limit is"):
        router.route("a" * 5000)


TRAVEL = [
    "my flight was cancelled, does my travel insurance refund the ticket",
    "lost luggage on a connecting flight, how do I claim",
    "trip cancellation because my mother got sick before departure",
    "the airline lost my suitcase in Lisbon",
    "does travel cover cover a missed cruise departure",
    "medical evacuation abroad, is that part of my travel policy",
    "my passport was stolen on holiday, what does travel insurance pay",
    "hotel costs after a hurricane stranded me on vacation",
    "trip interruption claim form",
    "delayed baggage for three days, can I buy clothes and claim them",
    "is skiing covered by my travel insurance",
    "cancel for any reason coverage on my trip",
    "my tour operator went bankrupt before the trip",
    "travel insurance for a two week trip to Japan",
    "I got sick in Mexico and paid the clinic in cash, can travel insurance reimburse me",
    "flight delay compensation under my travel policy",
    "do I need travel insurance for a Schengen visa",
    "my rental villa abroad was double booked, is that a trip claim",
    "snowstorm closed the airport and I missed my connection",
    "does my travel policy cover a pre-existing condition",
    "travel claim for a missed wedding abroad due to a strike",
    "emergency dental work while travelling overseas",
    "my trip was cut short because of a family emergency at home",
    "is a volcanic ash flight cancellation covered",
    "how long do travel insurance claims take to pay",
    "stolen camera from my hotel room abroad, travel claim",
    "my cruise was cancelled by the cruise line",
    "do I get a refund on trip insurance if I don't travel",
    "can I add my kids to my annual travel insurance",
    "travel insurance and adventure sports like scuba diving",
    "the airline bumped me from an overbooked flight, travel insurance?",
    "I missed my flight because of a car accident on the way to the airport, trip delay claim",
]


def test_adding_a_route_is_config_examples_and_train(tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    (pack_dir / "router").mkdir(parents=True)
    shutil.copy(BUNDLED_PACK / "pack.toml", pack_dir / "pack.toml")
    for name in ("queries.jsonl", "train.jsonl", "validation.jsonl", "test.jsonl"):
        shutil.copy(BUNDLED_PACK / "router" / name, pack_dir / "router" / name)
    with (pack_dir / "pack.toml").open("a", encoding="utf-8") as fh:
        fh.write('\n[[routes]]\nname = "travel"\ndescription = "Travel insurance: trips, flights, luggage."\n'
                 'adapter_id = "insurance-travel"\nretrieval = { lines = ["travel", "general"], top_k = 4 }\n')
    with (pack_dir / "router" / "queries.jsonl").open("a", encoding="utf-8") as fh:
        for q in TRAVEL:
            fh.write(json.dumps({"query": q, "route": "travel"}) + "\n")
    pack = load_pack(pack_dir)

    with pytest.raises(ConfigError, match="domainroute router train"):
        load_router(MODEL_DIR, pack)
    old_test = set((pack_dir / "router" / "test.jsonl").read_text(encoding="utf-8").splitlines())

    manifest = train_router(pack_dir, tmp_path / "model")
    assert "travel" in manifest["routes"]
    assert manifest["test_metrics"]["per_route"]["travel"]["support"] >= 5
    assert old_test <= set((pack_dir / "router" / "test.jsonl").read_text(encoding="utf-8").splitlines())

    router = load_router(tmp_path / "model", pack)
    for q in ["my flight home was cancelled, can I claim the new ticket on my travel insurance",
              "the airline lost my bag on my holiday, what does my travel policy pay"]:
        assert router.route(q).route == "travel", q
    assert router.route("someone rear-ended me at a light").route == "auto"
