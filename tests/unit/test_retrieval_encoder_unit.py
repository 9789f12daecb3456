"""The retrieval encoder's configuration, training data and adapter checks (no model is loaded here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from domainroute.embeddings import ENCODER_NAME, default_embedder
from domainroute.errors import ConfigError, InputError
from domainroute.retrievers.encoder import (
    ADAPTER_FILES,
    ENCODER_DIR,
    TRAIN_FILE,
    EncoderTrainConfig,
    TunedEmbedder,
    load_training_questions,
    retrieval_embedder,
)
from domainroute.retrievers.evaluation import EVAL_NAME, load_eval_set
from domainroute.retrievers.ingest import load_chunks
from domainroute.settings import BUNDLED_PACK

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kwargs, field", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 1}, "batch_size"), ({"learning_rate": 0.0}, "learning_rate"),
    ({"lora_dropout": 1.0}, "lora_dropout"), ({"hard_negatives": 6}, "hard_negatives"), ({"scale": -1.0}, "scale"),
    ({"chunk_max_tokens": 600}, "chunk_max_tokens"), ({"target_modules": ()}, "target_modules"),
])
def test_a_bad_setting_is_named(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EncoderTrainConfig(**kwargs)


def test_training_questions_are_checked_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    ids = {"a#000", "b#000"}
    cases = [('{"question": "x"}', "relevant"), ('{"question": "", "relevant": ["a#000"]}', "question"),
             ('{"question": "x", "relevant": ["zz#000"]}', "zz#000"), ("not json", "not JSON")]
    for line, message in cases:
        path.write_text('{"question": "fine", "relevant": ["a#000"]}\n' + line + "\n", encoding="utf-8")
        with pytest.raises(InputError, match=rf"q.jsonl:2: .*{message}"):
            load_training_questions(path, ids, [])
    path.write_text('{"question": "How long do I have to report a car accident?", "relevant": ["a#000", "a#000"]}\n'
                    '{"question": "who pays for the rental car", "relevant": ["b#000"]}\n', encoding="utf-8")
    rows, dropped = load_training_questions(path, ids, ["how long do I have to report a car accident"])
    assert dropped == 1 and rows == [{"question": "who pays for the rental car", "relevant": ["b#000"]}]
    with pytest.raises(ConfigError, match="missing"):
        load_training_questions(tmp_path / "none.jsonl", ids, [])


def test_the_pack_training_questions_are_valid_and_apart_from_the_evaluation_set() -> None:
    chunks = {c.chunk_id for c in load_chunks(BUNDLED_PACK / "kb")}
    held = [i.question for i in load_eval_set(BUNDLED_PACK / "retrieval" / EVAL_NAME)]
    rows, dropped = load_training_questions(BUNDLED_PACK / TRAIN_FILE, chunks, held)
    assert len(rows) >= 1200 and len({r["question"].lower() for r in rows}) == len(rows)
    assert not {r["question"].lower() for r in rows} & {q.lower() for q in held}
    assert len({r["relevant"][0] for r in rows}) == len(chunks)  # every chunk is some question's source
    manifest = json.loads((BUNDLED_PACK / ENCODER_DIR / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["data"]["questions"] == len(rows) and manifest["data"]["dropped_near_eval_questions"] == dropped


def test_a_pack_without_an_adapter_retrieves_with_the_shared_encoder(tmp_path: Path) -> None:
    assert retrieval_embedder(tmp_path) is default_embedder()


def fake_adapter(folder: Path, **changes: object) -> Path:
    folder.mkdir(parents=True)
    for name in ADAPTER_FILES:
        (folder / name).write_bytes(name.encode())
    manifest = {"kind": "domainroute.retrieval_encoder", "format": 1, "base_encoder": ENCODER_NAME,
                "files": {n: hashlib.sha256(n.encode()).hexdigest() for n in ADAPTER_FILES}, **changes}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def test_the_adapter_is_named_by_its_files_and_checked_against_its_manifest(tmp_path: Path) -> None:
    embedder = TunedEmbedder(fake_adapter(tmp_path / "ok"))
    assert embedder.name.startswith(ENCODER_NAME + " + retrieval adapter ") and embedder.dim == 384
    assert TunedEmbedder(fake_adapter(tmp_path / "same")).name == embedder.name  # the name is the files' hash
    changed = fake_adapter(tmp_path / "changed")
    (changed / "adapter_model.safetensors").write_bytes(b"other weights")
    with pytest.raises(ConfigError, match="adapter_model.safetensors missing or not what"):
        TunedEmbedder(changed)
    with pytest.raises(ConfigError, match="adapts 'another/encoder'"):
        TunedEmbedder(fake_adapter(tmp_path / "other", base_encoder="another/encoder"))
    with pytest.raises(ConfigError, match="not a format-1 retrieval encoder manifest"):
        TunedEmbedder(fake_adapter(tmp_path / "kind", kind="domainroute.router"))
