"""sha256 of files, read in blocks (model weights run to hundreds of MB)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_not_matching(folder: Path, pinned: dict[str, str]) -> list[str]:
    """Names in ``pinned`` (file name -> sha256) whose file in ``folder`` is missing or has another sha256."""
    return sorted(name for name, digest in pinned.items()
                  if not (Path(folder) / name).is_file() or sha256_file(Path(folder) / name) != digest)
