"""Input validation at the boundaries, settings precedence, citations, chunking, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainroute.cli import main
from domainroute.graphs.citations import attach_citations
from domainroute.graphs.redaction import redact
from domainroute.retrievers.ingest import chunk_document, parse_document
from domainroute.settings import Settings

pytestmark = pytest.mark.unit
CLAIM = {"line": "auto", "amount": 1200, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 1}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", ""], "query is empty"),
        (["ask", "x" * 20000], "limit is 4000"),
        (["ask", "hi", "--claim", "{bad"], "not valid JSON"),
        (["ask", "hi", "--claim", json.dumps({**CLAIM, "amount": -1})], "claim.amount"),
        (["ask", "hi", "--claim", json.dumps({**CLAIM, "line": "boat"})], "claim.line"),
        (["ask", "hi", "--claim", json.dumps({**CLAIM, "contacts_on_claim": 0})], "claim.contacts_on_claim"),
        (["ask", "hi", "--claim", json.dumps({**CLAIM, "extra": 1})], "claim.extra"),
        (["ask", "hi", "--claim", "[1, 2]"], "must be a JSON object"),
        (["resume", "no-such-thread", "--decision", "approve"], "no conversation with thread id"),
        (["resume", "t", "--decision", "edit"], "needs the edited answer text"),
        (["ask", "hi", "--thread", "bad id!"], "invalid thread id"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    code = main([*argv, "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_settings_precedence(tmp_path, monkeypatch):
    config = tmp_path / "domainroute.toml"
    config.write_text('tenant = "from-file"\ntop_k = 7\nhybrid_alpha = 0.3\n')
    monkeypatch.setenv("DOMAINROUTE_CONFIG", str(config))
    monkeypatch.setenv("DOMAINROUTE_TOP_K", "5")
    settings = Settings(hybrid_alpha=0.9)
    assert settings.tenant == "from-file"  # file > default
    assert settings.top_k == 5  # environment > file
    assert settings.hybrid_alpha == 0.9  # argument > everything
    monkeypatch.setenv("DOMAINROUTE_TENANT", "bad tenant!")
    with pytest.raises(ValueError, match="tenant"):
        Settings()


def test_citations_are_renumbered_and_limited_to_retrieved_passages():
    passages = [{"doc_id": f"d{i}", "chunk_id": f"d{i}@v1#000", "title": f"T{i}"} for i in range(3)]
    cited = attach_citations("Pay $40 [3]. Also [1] and [9].\nSources: [3], [1]", passages)
    assert cited.text == "Pay $40 [1]. Also [2] and."
    assert [c["chunk_id"] for c in cited.citations] == ["d2@v1#000", "d0@v1#000"]
    assert cited.dropped == 1
    only_sources = attach_citations("Pay $40.\nSources: [2]", passages)
    assert [c["doc_id"] for c in only_sources.citations] == ["d1"]


def test_chunking_is_stable_and_validates_front_matter(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("---\ndoc_id: auto-glass\ntitle: Glass\nline: auto\ndoc_type: faq\neffective_date: 2025-01-01\n"
                   "version: 2\ntenant: northwind\n---\n# Glass\nIntro.\n## Chips\nChip repair is free.\n## Cracks\nA crack costs $100.\n")
    chunks = chunk_document(parse_document(doc))
    assert [c.chunk_id for c in chunks] == ["auto-glass@v2#000", "auto-glass@v2#001"]
    assert chunks[0].text.startswith("Chips\nIntro.") and chunks[1].section == "Cracks"
    bad = tmp_path / "b.md"
    bad.write_text(doc.read_text().replace("line: auto", "line: boats"))
    with pytest.raises(ValueError, match="'line'"):
        parse_document(bad)


def test_redaction_removes_personal_data():
    text = redact("My name is Dana Whitfield, email dana.w@example.com, call 555-201-3344, card 4111 1111 1111 1111, policy NW-20931177")
    for secret in ("Dana", "Whitfield", "dana.w@", "201-3344", "4111", "20931177"):
        assert secret not in text
