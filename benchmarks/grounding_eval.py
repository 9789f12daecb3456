"""Grounded answers, issue 10: base model vs domain adapters vs the grounding check, in one run.

Ingests the bundled knowledge base into a fresh temporary store, then runs ``domainroute grounding eval`` on the
test split and writes docs/benchmarks/grounding.md.

Run: .venv/bin/python benchmarks/grounding_eval.py [--limit N] [--split dev|test]
(the whole test split is ~150 questions, one to three generations each; use --limit on a busy machine)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from domainroute.commands.grounding import evaluate, render_markdown  # noqa: E402
from domainroute.retrievers import configured_retriever  # noqa: E402
from domainroute.retrievers.ingest import ingest  # noqa: E402
from domainroute.settings import Settings  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "grounding.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="N questions evenly spread over the split (default: all)")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--out", type=Path, default=OUT, help=f"Markdown report (default {OUT})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dr-grounding-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        ingest(settings.kb_dir, configured_retriever(settings), progress=False)
        report = evaluate(settings, split=args.split, limit=args.limit, progress=True)
    command = ".venv/bin/python benchmarks/grounding_eval.py" + (f" --split {args.split}" if args.split != "test" else "")
    command += f" --limit {args.limit}" if args.limit else ""
    text = render_markdown(report, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
