"""A vector store that is down becomes an escalation ("retrieval_unavailable"), never an answer without sources.

The real LanceDB retriever on a broken store, the real graph and service; fakes only for the chat model, the router
and the escalation policy (tests/fakes.py), so no model is loaded.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from domainroute.errors import RetrievalUnavailableError
from domainroute.graphs import prompts
from domainroute.graphs.nodes import RETRIEVAL_UNAVAILABLE, TAKEOVER_MESSAGE
from domainroute.retrievers.base import Chunk
from domainroute.retrievers.lancedb_store import TABLE_PREFIX, LanceDBRetriever
from domainroute.service import AgentService
from domainroute.settings import Settings
from domainroute.pack import load_pack
from domainroute.settings import BUNDLED_PACK
from tests.fakes import KeywordRouter, ScriptedChatModel, WordPolicy, served_adapters

pytestmark = pytest.mark.integration
QUESTION = "is windshield glass chip repair covered?"


class HashEmbedder:
    """A deterministic stand-in for the sentence encoder: same text, same unit vector (8 dimensions)."""

    dim = 8

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        rows = []
        for text in texts:
            rng = np.random.default_rng(sum(text.encode("utf-8")))
            vector = rng.standard_normal(self.dim).astype(np.float32)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows)

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


GLASS = Chunk(
    chunk_id="auto-glass@v1#000", doc_id="auto-glass", version=1, ordinal=0, title="Glass", section="Chip repair",
    text="Windshield glass chip repair is covered with no deductible.", line="auto", doc_type="policy_wording",
    effective_date=date(2024, 1, 1), tenant="northwind",
)  # fmt: skip


def service_on(retriever: LanceDBRetriever, tmp_path: Path) -> tuple[AgentService, ScriptedChatModel]:
    model = ScriptedChatModel(replies=["Chip repair is covered [1]."], calls=[])
    service = AgentService(
        Settings(data_dir=tmp_path / "data"),
        chat_model=model,
        retriever=retriever,
        router=KeywordRouter({"glass": "auto"}),
        escalation_policy=WordPolicy({"lawyer": "legal"}),
        adapters=served_adapters(load_pack(BUNDLED_PACK)),
    )
    return service, model


def assert_escalated_without_sources(service: AgentService, model: ScriptedChatModel) -> None:
    result = service.ask(QUESTION)
    assert result.status == "awaiting_human"
    assert result.escalation is not None and result.escalation.escalate
    assert RETRIEVAL_UNAVAILABLE in result.escalation.reasons
    assert result.citations == []
    assert result.answer == prompts.awaiting_human_message()
    assert model.calls == []  # no draft was written without retrieved passages
    [paused] = service.paused_threads()
    assert paused["thread_id"] == result.thread_id
    assert RETRIEVAL_UNAVAILABLE in paused["packet"]["reasons"]
    assert prompts.retrieval_failed_reason() in paused["packet"]["summary"]
    assert paused["packet"]["citations"] == [] and paused["packet"]["draft"] == ""
    final = service.resume(result.thread_id, {"action": "approve", "reviewer": "qa"})
    assert final.status == "answered" and final.answer == TAKEOVER_MESSAGE and final.citations == []


def test_a_store_path_that_is_a_file_escalates(tmp_path: Path) -> None:
    broken = tmp_path / "lancedb"
    broken.write_text("not a LanceDB folder")
    retriever = LanceDBRetriever(broken, embedder=HashEmbedder())
    with pytest.raises(RetrievalUnavailableError, match="could not retrieve policy documents"):
        retriever.search(QUESTION, tenant="northwind", k=4)
    assert_escalated_without_sources(*service_on(retriever, tmp_path))


def test_a_store_that_breaks_after_ingest_escalates(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    retriever = LanceDBRetriever(tmp_path / "lancedb", embedder=embedder)
    retriever.upsert_document([replace(GLASS, vector=embedder.encode_one(GLASS.text).tolist())], tenant="northwind")
    service, model = service_on(retriever, tmp_path)
    answered = service.ask(QUESTION)  # the same setup answers with a citation while the store is healthy
    assert answered.status == "answered" and [c.chunk_id for c in answered.citations] == ["auto-glass@v1#000"]
    assert len(model.calls) == 1

    shutil.rmtree(tmp_path / "lancedb" / f"{TABLE_PREFIX}northwind.lance" / "data")  # the data files are gone
    with pytest.raises(RetrievalUnavailableError, match="could not retrieve policy documents"):
        retriever.search(QUESTION, tenant="northwind", k=4)
    model.calls.clear()
    assert_escalated_without_sources(service, model)
