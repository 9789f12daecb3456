"""Live tests against a real TGI server started with the pack's adapters (docker compose up -d tgi).

Run:  TGI_URL=http://127.0.0.1:8081 .venv/bin/pytest -m live tests/live/test_tgi_live.py -q
Skipped, with the reason, when TGI_URL is not set.
"""

from __future__ import annotations

import os

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from domainroute.errors import UnknownAdapterError

TGI_URL = os.environ.get("TGI_URL")

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not TGI_URL, reason="TGI_URL is not set; start TGI with `docker compose up -d tgi` and "
                                           "export TGI_URL=http://127.0.0.1:8081 to run the live TGI tests"),
]


@pytest.fixture(scope="module")
def tgi_model():
    from domainroute.adapters.registry import scan
    from domainroute.agents.tgi import TGIChatModel
    from domainroute.settings import Settings

    settings = Settings()
    return TGIChatModel(base_url=TGI_URL, adapters=sorted(scan(settings.adapters_dir)),
                        tokenizer_path=settings.base_model_path, max_new_tokens=80, timeout_s=60)


@pytest.fixture(scope="module")
def examples():
    """The first test-split example of each domain, with its passages, as the agent would prompt."""
    from domainroute.adapters.dataset import data_path, load_examples, passages_for
    from domainroute.graphs.prompts import SYSTEM_PROMPT, user_prompt
    from domainroute.retrievers.ingest import load_chunks
    from domainroute.settings import Settings

    settings = Settings()
    chunks = {c.chunk_id: c for c in load_chunks(settings.kb_dir)}
    out = {}
    for domain in ("auto", "home", "health", "billing"):
        example = load_examples(data_path(settings.adapters_dir / "data", domain), "test")[0]
        out[domain] = [SystemMessage(SYSTEM_PROMPT), HumanMessage(user_prompt(example["query"], passages_for(example, chunks)))]
    return out


def test_server_is_up(tgi_model):
    import httpx

    info = httpx.get(f"{TGI_URL.rstrip('/')}/info", timeout=10).json()
    assert info.get("model_id")


@pytest.mark.parametrize("domain", ["auto", "home", "health", "billing"])
def test_adapter_is_applied_per_request(tgi_model, examples, domain):
    """TGI answers silently with the base model for an adapter it did not load: the adapter's answer must differ."""
    base = tgi_model.invoke(examples[domain]).content
    adapted = tgi_model.bind(adapter_id=f"insurance-{domain}").invoke(examples[domain])
    assert adapted.content and adapted.response_metadata["adapter_id"] == f"insurance-{domain}"
    assert adapted.content != base


def test_unknown_adapter_is_refused_before_tgi_sees_it(tgi_model, examples):
    with pytest.raises(UnknownAdapterError):
        tgi_model.bind(adapter_id="insurance-pets").invoke(examples["auto"])
