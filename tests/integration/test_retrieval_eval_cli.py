"""``domainroute retrieval eval`` end to end on the ingested knowledge base (a small question set keeps it quick)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from domainroute.retrievers.evaluation import EVAL_NAME, assign_splits, item_line, load_eval_set
from domainroute.retrievers.ingest import load_chunks
from domainroute.settings import BUNDLED_PACK
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration


def small_pack(tmp_path: Path) -> Path:
    """A copy of the bundled pack whose question set is 3 questions per line, re-split by the hash rule."""
    pack = tmp_path / "pack"
    shutil.copytree(BUNDLED_PACK / "kb", pack / "kb")
    shutil.copy(BUNDLED_PACK / "pack.toml", pack / "pack.toml")
    if (BUNDLED_PACK / "retrieval" / "encoder").is_dir():  # the encoder the session's store was ingested with
        shutil.copytree(BUNDLED_PACK / "retrieval" / "encoder", pack / "retrieval" / "encoder")
    by_id = {c.chunk_id: c for c in load_chunks(pack / "kb")}
    items, seen = [], {}
    for item in load_eval_set(BUNDLED_PACK / "retrieval" / EVAL_NAME):
        line = item_line(item, by_id)
        if seen.get(line, 0) < 3:
            seen[line] = seen.get(line, 0) + 1
            items.append(item)
    splits = assign_splits([i.question for i in items], [item_line(i, by_id) for i in items])
    (pack / "retrieval").mkdir(exist_ok=True)
    with (pack / "retrieval" / EVAL_NAME).open("w") as out:
        for item, split in zip(items, splits, strict=True):
            out.write(item.model_copy(update={"split": split}).model_dump_json() + "\n")
    return pack


def test_eval_reports_every_mode_and_writes_the_chosen_alpha(data_dir: Path, tmp_path: Path) -> None:
    pack = small_pack(tmp_path)
    report = tmp_path / "retrieval.md"
    done = run_cli(["retrieval", "eval", "--pack", str(pack), "--store", "configured", "--write-default",
                    "--report", str(report), "--reranker", str(tmp_path / "no-such-model"), "--json"], data_dir)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout)
    assert result["questions"] == {"validation": 10, "test": 5}  # 3 per line: 2 validation, 1 test
    assert set(result["alpha_grid_validation"]) == {str(a / 10) for a in range(11)}
    rows = result["results"]
    assert {row["mode"] for row in rows.values()} == {"vector", "keyword", "hybrid", "rerank"}
    assert all(0.0 <= row["recall@5"] <= 1.0 for row in rows.values() if "recall@5" in row)
    assert rows["cross-encoder re-rank of hybrid top 20"]["available"] is False
    config = json.loads((pack / "retrieval" / "config.json").read_text())
    assert config["hybrid_alpha"] == result["chosen_alpha"] and config["chosen_on"] == "validation"
    text = report.read_text()
    assert "| vector |" in text and "Alpha grid on the validation split" in text and "not available" in text


def test_bad_question_set_exits_2_before_loading_anything(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"question": "is hail covered?"}\n')
    done = run_cli(["retrieval", "eval", "--eval-set", str(bad)], data_dir, timeout=60)
    assert done.returncode == 2
    assert "eval.jsonl:1: field 'relevant'" in done.stderr.decode()
    help_text = run_cli(["retrieval", "--help"], data_dir, timeout=60).stdout.decode()
    assert "validation split" in help_text and "--write-default" in help_text
