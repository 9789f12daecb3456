"""The pack's retrieval adapter end to end: it loads and changes the vectors, training writes a loadable adapter,
and a store refuses queries embedded by another encoder than the one that wrote it (real LanceDB)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import lancedb
import numpy as np
import pytest

from domainroute.embeddings import ENCODER_NAME, default_embedder
from domainroute.errors import BackendUnavailableError, ConfigError, InputError
from domainroute.hashing import sha256_file
from domainroute.retrievers.encoder import (
    ENCODER_DIR,
    TRAIN_FILE,
    EncoderTrainConfig,
    TunedEmbedder,
    retrieval_embedder,
    train_encoder,
)
from domainroute.retrievers.lancedb_store import ENCODER_KEY, TABLE_PREFIX, LanceDBRetriever
from domainroute.settings import BUNDLED_PACK
from tests.integration.test_retrieval_failure import GLASS, QUESTION, HashEmbedder

pytestmark = pytest.mark.integration


def test_the_committed_adapter_is_current_and_changes_the_vectors() -> None:
    manifest = json.loads((BUNDLED_PACK / ENCODER_DIR / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["data"]["sha256"] == sha256_file(BUNDLED_PACK / TRAIN_FILE), \
        "retrieval/train_questions.jsonl changed since the adapter was trained: run `domainroute retrieval " \
        "train-encoder`"
    tuned = retrieval_embedder(BUNDLED_PACK)
    assert isinstance(tuned, TunedEmbedder) and tuned.name != ENCODER_NAME
    texts = ["my buddy borrowed my truck and hit a pole", "home: Water damage from a sudden and accidental leak."]
    a, b = tuned.encode(texts), default_embedder().encode(texts)
    assert a.shape == b.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) < 0.99  # another encoder, not a copy of the shared one


def test_training_writes_an_adapter_that_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOMAINROUTE_CACHE_DIR", str(tmp_path / "cache"))  # the merged model lands here
    pack = tmp_path / "pack"
    shutil.copytree(BUNDLED_PACK / "kb", pack / "kb")
    (pack / "retrieval").mkdir()
    lines = (BUNDLED_PACK / TRAIN_FILE).read_text(encoding="utf-8").splitlines()[:12]
    (pack / TRAIN_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = EncoderTrainConfig(epochs=1, batch_size=6, chunk_max_tokens=32, query_max_tokens=16, hard_pool=2)
    manifest = train_encoder(pack, config=config, progress=False)
    assert manifest["version"] == 1 and manifest["data"]["questions"] == 12 and len(manifest["epoch_losses"]) == 1
    assert manifest["config"]["epochs"] == 1 and manifest["base_encoder"] == ENCODER_NAME
    folder = pack / ENCODER_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                         "manifest.json"]
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["base_model_name_or_path"] == ENCODER_NAME  # peft's format
    assert retrieval_embedder(pack).encode_one(QUESTION).shape == (384,)
    assert [p.name for p in (tmp_path / "cache" / "encoders").glob("minilm-retrieval-*") if p.is_dir()]
    assert train_encoder(pack, config=config, progress=False)["version"] == 2


class NamedHashEmbedder(HashEmbedder):
    def __init__(self, name: str) -> None:
        self.name = name


def test_a_store_refuses_vectors_of_another_encoder(tmp_path: Path) -> None:
    LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder("encoder-a")).upsert_document([GLASS],
                                                                                               tenant="northwind")
    table = lancedb.connect(tmp_path / "s").open_table(TABLE_PREFIX + "northwind")
    assert table.schema.metadata[ENCODER_KEY] == b"encoder-a"
    other = LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder("encoder-b"))
    for call in (lambda: other.search(QUESTION, tenant="northwind", k=2),
                 lambda: other.upsert_document([GLASS], tenant="northwind")):
        with pytest.raises(ConfigError, match="holds vectors of encoder 'encoder-a'.*'encoder-b'.*domainroute ingest"):
            call()
    keyword = other.search(QUESTION, tenant="northwind", k=2, mode="keyword")  # no vectors compared: allowed
    assert [p.chunk_id for p in keyword] == [GLASS.chunk_id]
    same = LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder("encoder-a"))
    assert [p.chunk_id for p in same.search(QUESTION, tenant="northwind", k=2)] == [GLASS.chunk_id]


def test_a_table_written_before_encoders_were_recorded_holds_the_shared_encoder(tmp_path: Path) -> None:
    from domainroute.retrievers.lancedb_store import table_schema

    writer = LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder(ENCODER_NAME))
    db = lancedb.connect(tmp_path / "s")
    db.create_table(TABLE_PREFIX + "northwind", schema=table_schema(HashEmbedder.dim))  # no metadata, as before
    writer.upsert_document([GLASS], tenant="northwind")
    assert [p.chunk_id for p in writer.search(QUESTION, tenant="northwind", k=1)] == [GLASS.chunk_id]
    with pytest.raises(ConfigError, match="holds vectors of encoder 'sentence-transformers/all-MiniLM-L6-v2'"):
        LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder("tuned")).search(QUESTION, tenant="northwind",
                                                                                   k=1)


@pytest.mark.live
def test_weaviate_refuses_vectors_of_another_encoder() -> None:
    from domainroute.retrievers.weaviate_store import WeaviateRetriever
    from tests.integration.test_retriever_contract import _weaviate_store

    stores = _weaviate_store(NamedHashEmbedder("encoder-a"))  # skipped with the reason unless WEAVIATE_URL is set
    store = next(stores)
    try:
        store.upsert_document([GLASS], tenant="northwind")
        other = WeaviateRetriever(store.url, embedder=NamedHashEmbedder("encoder-b"),
                                  collection=store._collection_name, grpc_port=store._grpc_port)
        with other:
            for call in (lambda: other.search(QUESTION, tenant="northwind", k=2),
                         lambda: other.upsert_document([GLASS], tenant="northwind")):
                with pytest.raises(ConfigError, match="holds vectors of encoder 'encoder-a'.*'encoder-b'.*"
                                                      "DOMAINROUTE_WEAVIATE_COLLECTION"):
                    call()
        assert [p.chunk_id for p in store.search(QUESTION, tenant="northwind", k=2)] == [GLASS.chunk_id]
    finally:
        stores.close()


def test_ingest_re_embeds_a_tenant_another_encoder_wrote(tmp_path: Path) -> None:
    from domainroute.retrievers.ingest import embedding_text, ingest, load_chunks

    old = LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder("encoder-a"))
    old.upsert_document([GLASS], tenant="northwind")
    old.upsert_document([replace(GLASS, tenant="acme")], tenant="acme")  # a tenant the ingest below does not touch
    b = NamedHashEmbedder("encoder-b")
    retriever = LanceDBRetriever(tmp_path / "s", embedder=b)
    assert retriever.stored_encoder("northwind") == "encoder-a" and retriever.stored_encoder("nobody") is None
    folder = BUNDLED_PACK / "kb" / "auto"
    ingest(folder, retriever, progress=False)  # the retriever's own encoder: b
    assert retriever.stored_encoder("northwind") == "encoder-b"
    new = [c for c in load_chunks(folder) if c.tenant == "northwind"]
    assert retriever.count(tenant="northwind") == len(new) + 1  # the chunk written before is kept
    rows = lancedb.connect(tmp_path / "s").open_table(TABLE_PREFIX + "northwind").to_arrow().to_pylist()
    kept = next(r for r in rows if r["chunk_id"] == GLASS.chunk_id)
    np.testing.assert_allclose(kept["vector"], b.encode_one(embedding_text(GLASS)), atol=1e-6)
    assert [p.chunk_id for p in retriever.search(QUESTION, tenant="northwind", k=50)]  # searchable again
    assert retriever.stored_encoder("acme") == "encoder-b"  # every tenant, not only the ingested ones
    assert [p.chunk_id for p in retriever.search(QUESTION, tenant="acme", k=1)] == [GLASS.chunk_id]
    with pytest.raises(InputError, match="ingest embeds with 'encoder-c' but the retriever records 'encoder-b'"):
        ingest(folder, retriever, embedder=NamedHashEmbedder("encoder-c"), progress=False)


def test_a_re_embedding_that_another_write_overtakes_replaces_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder("encoder-a")).upsert_document([GLASS],
                                                                                               tenant="northwind")
    writer = LanceDBRetriever(tmp_path / "s", embedder=NamedHashEmbedder("encoder-a"))
    b = NamedHashEmbedder("encoder-b")
    encode = b.encode

    def encode_while_another_process_writes(texts: list[str], **kw: object):
        writer.upsert_document([replace(GLASS, chunk_id="auto-glass@v1#001", ordinal=1)] + [GLASS],
                               tenant="northwind")
        return encode(texts, **kw)

    monkeypatch.setattr(b, "encode", encode_while_another_process_writes)
    with pytest.raises(BackendUnavailableError, match="changed while it was being re-embedded"):
        LanceDBRetriever(tmp_path / "s", embedder=b).reembed("northwind")
    assert writer.stored_encoder("northwind") == "encoder-a" and writer.count(tenant="northwind") == 2


def test_the_weaviate_collection_is_a_setting(tmp_path: Path) -> None:
    pytest.importorskip("weaviate", reason="pip install 'domainroute[weaviate]'")
    from domainroute.retrievers import configured_retriever
    from domainroute.settings import Settings

    settings = Settings(data_dir=tmp_path, retriever_backend="weaviate", weaviate_url="http://127.0.0.1:9",
                        weaviate_collection="DomainrouteChunkTuned")
    assert configured_retriever(settings)._collection_name == "DomainrouteChunkTuned"  # nothing connects yet
    with pytest.raises(ValueError, match="weaviate_collection"):
        Settings(data_dir=tmp_path, weaviate_collection="lower-case")


def test_the_adapter_keeps_its_measured_quality_on_the_test_split(data_dir: Path) -> None:
    """A no-regression floor (measured: hybrid recall@5 0.893 against 0.835 with the shared encoder, MRR@10
    0.873; docs/benchmarks/retrieval.md). The store is the session's, ingested with the pack's encoder."""
    from domainroute.retrievers import configured_retriever
    from domainroute.retrievers.evaluation import EVAL_NAME, load_eval_set, run, search_ranker
    from domainroute.settings import Settings

    settings = Settings(data_dir=data_dir)
    test = [i for i in load_eval_set(BUNDLED_PACK / "retrieval" / EVAL_NAME) if i.split == "test"]
    scores, _ = run(search_ranker(configured_retriever(settings), mode="hybrid", alpha=settings.hybrid_alpha), test)
    assert settings.hybrid_alpha == 0.8  # chosen on validation by `domainroute retrieval eval --write-default`
    assert scores.recall >= 0.88 and scores.mrr >= 0.85, scores.as_dict()
