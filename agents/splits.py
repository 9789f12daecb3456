"""Deterministic, stratified train/validation/test splits of a labelled ``.jsonl`` file.

Per label, rows are ordered by ``sha256(seed + normalised query)`` and cut 60/20/20. The order depends only on
the row itself, never on file position, so the split is reproducible anywhere. When split files already exist
next to the source, every row they hold keeps its split; only rows new to the source are placed, each in the
split furthest below its target share for that label. Adding rows later therefore never moves an old row, and
the test split in particular stays fixed.

    python -m domainroute.agents.splits domainroute/packs/insurance/router/queries.jsonl --label route
    python -m domainroute.agents.splits domainroute/packs/insurance/escalation/decisions.jsonl --label primary_trigger
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.6, 0.2, 0.2)
DEFAULT_SEED = "domainroute-splits-v1"

TEXT_TRIGGERS = ("legal", "injury", "misstatement", "dispute", "asks_person", "vulnerability")
STRUCTURED_TRIGGERS = ("large_loss", "new_policy", "frequent_claims", "repeat_contact")

Row = dict[str, Any]
LabelFn = Callable[[Row], str]


def read_jsonl(path: Path) -> list[Row]:
    """Rows of a jsonl file; a malformed line is an error naming the file and line."""
    rows: list[Row] = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("query"), str):
                raise ValueError(f"{path}:{n}: each line must be an object with a string 'query'")
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: Iterable[Row]) -> None:
    tmp = Path(path).with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def normalise(query: str) -> str:
    return " ".join(query.lower().split())


def row_key(row: Row) -> str:
    """Identity of a row: the normalised query, plus the claim when the row has one (escalation data)."""
    key = normalise(row["query"])
    if row.get("claim") is not None:
        # numbers compare by value: a claim logged as {"amount": 13300.0} is the same claim as {"amount": 13300}
        claim = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                 for k, v in row["claim"].items()}
        key += "\x1f" + json.dumps(claim, sort_keys=True)
    return key


def _rank(row: Row, seed: str) -> tuple[str, str]:
    # the query decides the order; the full key breaks ties between rows that share a query
    query_hash = hashlib.sha256((seed + normalise(row["query"])).encode("utf-8")).hexdigest()
    return query_hash, row_key(row)


def route_label(row: Row) -> str:
    """Stratify the router data by route."""
    return str(row["route"])


def primary_trigger(row: Row) -> str:
    """Stratify the escalation data by its primary label: first text trigger, else first structured one, else none."""
    triggers = list(row.get("triggers") or [])
    for t in triggers:
        if t in TEXT_TRIGGERS:
            return t
    for t in triggers:
        if t in STRUCTURED_TRIGGERS:
            return t
    return "none"


LABELS: dict[str, LabelFn] = {"route": route_label, "primary_trigger": primary_trigger}


@dataclass
class SplitReport:
    source: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> split -> rows
    duplicates_dropped: int = 0
    kept_from_existing: int = 0
    newly_assigned: int = 0

    def totals(self) -> dict[str, int]:
        return {s: sum(c.get(s, 0) for c in self.counts.values()) for s in SPLITS}

    def markdown(self) -> str:
        """A table per label, ready for a dataset card."""
        lines = ["| label | train | validation | test | total |", "|---|---:|---:|---:|---:|"]
        for label in sorted(self.counts):
            c = self.counts[label]
            cells = " | ".join(str(c.get(s, 0)) for s in SPLITS)
            lines.append(f"| {label} | {cells} | {sum(c.values())} |")
        t = self.totals()
        lines.append(f"| **all** | {t['train']} | {t['validation']} | {t['test']} | {sum(t.values())} |")
        return "\n".join(lines)


def split_paths(source: Path) -> dict[str, Path]:
    source = Path(source)
    return {s: source.with_name(f"{s}.jsonl") for s in SPLITS}


def assign_splits(
    rows: list[Row],
    label_fn: LabelFn,
    *,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    seed: str = DEFAULT_SEED,
    existing: dict[str, str] | None = None,
) -> dict[str, list[Row]]:
    """Place each row in a split. ``existing`` maps row keys to the split they already live in."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"ratios must be three non-negative shares summing to 1, got {ratios}")
    existing = existing or {}
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_label[label_fn(row)].append(row)

    out: dict[str, list[Row]] = {s: [] for s in SPLITS}
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda r: _rank(r, seed))
        placed = {s: [r for r in group if existing.get(row_key(r)) == s] for s in SPLITS}
        new = [r for r in group if row_key(r) not in existing]
        if not any(placed.values()):
            # a fresh label: exact cuts in hash order
            n = len(group)
            cut1 = round(n * ratios[0])
            cut2 = round(n * (ratios[0] + ratios[1]))
            placed = {"train": group[:cut1], "validation": group[cut1:cut2], "test": group[cut2:]}
        else:
            for r in new:  # each new row goes where its label is furthest below target
                total = sum(len(v) for v in placed.values()) + 1
                deficit = {s: ratios[i] * total - len(placed[s]) for i, s in enumerate(SPLITS)}
                placed[max(SPLITS, key=lambda s: (deficit[s], -SPLITS.index(s)))].append(r)
        for s in SPLITS:
            out[s].extend(placed[s])
    for s in SPLITS:
        out[s].sort(key=lambda r: (label_fn(r), _rank(r, seed)))
    return out


def split_jsonl(
    source: Path,
    label: str | LabelFn,
    *,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    seed: str = DEFAULT_SEED,
    keep_existing: bool = True,
    write: bool = True,
) -> SplitReport:
    """Split ``source`` into ``train.jsonl``/``validation.jsonl``/``test.jsonl`` beside it.

    ``label``: ``"route"``, ``"primary_trigger"`` or a function of a row. Exact duplicate rows (same
    normalised query and claim) are kept once. Rows that left the source leave the splits too.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist; write the labelled data first")
    if isinstance(label, str):
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; known: {', '.join(LABELS)}")
        label_fn = LABELS[label]
    else:
        label_fn = label

    rows: list[Row] = []
    seen: set[str] = set()
    dropped = 0
    for row in read_jsonl(source):
        key = row_key(row)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        rows.append(row)

    existing: dict[str, str] = {}
    paths = split_paths(source)
    if keep_existing and all(p.exists() for p in paths.values()):
        for s, p in paths.items():
            for row in read_jsonl(p):
                existing.setdefault(row_key(row), s)

    splits = assign_splits(rows, label_fn, ratios=ratios, seed=seed, existing=existing)
    report = SplitReport(source=source, duplicates_dropped=dropped)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for s, split_rows in splits.items():
        for row in split_rows:
            counts[label_fn(row)][s] += 1
    report.counts = {k: dict(v) for k, v in counts.items()}
    report.kept_from_existing = sum(1 for r in rows if row_key(r) in existing)
    report.newly_assigned = len(rows) - report.kept_from_existing
    if write:
        for s, p in paths.items():
            write_jsonl(p, splits[s])
    return report


def splits_current(source: Path) -> bool:
    """True when the split files exist and hold exactly the (deduplicated) rows of the source."""
    paths = split_paths(source)
    if not Path(source).exists() or not all(p.exists() for p in paths.values()):
        return False
    in_source = {row_key(r) for r in read_jsonl(source)}
    in_splits = [row_key(r) for p in paths.values() for r in read_jsonl(p)]
    return len(in_splits) == len(set(in_splits)) and set(in_splits) == in_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write train/validation/test splits (60/20/20 per label) beside a jsonl file.")
    parser.add_argument("source", type=Path, help="labelled jsonl file, e.g. router/queries.jsonl")
    parser.add_argument("--label", required=True, choices=sorted(LABELS), help="what to stratify by")
    parser.add_argument("--reshuffle", action="store_true", help="ignore existing split files (moves old rows!)")
    args = parser.parse_args(argv)
    report = split_jsonl(args.source, args.label, keep_existing=not args.reshuffle)
    print(report.markdown())
    print(f"\n{report.kept_from_existing} rows kept their split, {report.newly_assigned} placed, "
          f"{report.duplicates_dropped} duplicates dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
