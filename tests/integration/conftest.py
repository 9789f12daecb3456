"""Integration fixtures: the real knowledge base in a real LanceDB store, real SQLite checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from domainroute.settings import Settings

CLI = [sys.executable, "-m", "domainroute.cli"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data dir with the bundled knowledge base ingested once per test session."""
    from domainroute.retrievers import configured_retriever
    from domainroute.retrievers.ingest import ingest

    path = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir=path)
    report = ingest(settings.kb_dir, configured_retriever(settings), progress=False)  # the pack's retrieval encoder
    assert report.chunks >= 300
    return path


@pytest.fixture(scope="session")
def service(data_dir):
    from domainroute.service import AgentService

    return AgentService(Settings(data_dir=data_dir))


def run_cli(args: list[str], data_dir: Path, stdin: bytes | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOMAINROUTE_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(CLI + args, input=stdin, capture_output=True, env=env, timeout=timeout)
