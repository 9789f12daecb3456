"""The adapter registry: one folder per adapter (peft/TGI format) with a ``manifest.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainroute.errors import ConfigError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class AdapterEntry:
    adapter_id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def domain(self) -> str:
        return str(self.manifest.get("domain", ""))

    @property
    def base_sha256(self) -> str:
        return str(self.manifest.get("base_model", {}).get("sha256", ""))


def scan(adapters_dir: Path) -> dict[str, AdapterEntry]:
    """Every adapter folder under ``adapters_dir`` that has a manifest, by adapter id."""
    entries: dict[str, AdapterEntry] = {}
    if not Path(adapters_dir).is_dir():
        return entries
    for manifest_path in sorted(Path(adapters_dir).glob(f"*/{MANIFEST}")):
        folder = manifest_path.parent
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{manifest_path}: not valid JSON ({exc})") from exc
        adapter_id = manifest.get("adapter_id")
        if not adapter_id:
            raise ConfigError(f"{manifest_path}: no adapter_id")
        for needed in ("adapter_config.json", "adapter_model.safetensors"):
            if not (folder / needed).exists():
                raise ConfigError(f"adapter {adapter_id!r}: {needed} missing in {folder}")
        if adapter_id in entries:
            raise ConfigError(f"adapter id {adapter_id!r} appears twice: {entries[adapter_id].path} and {folder}")
        entries[adapter_id] = AdapterEntry(adapter_id, folder, manifest)
    return entries


def check_base(entries: dict[str, AdapterEntry], base_sha256: str) -> None:
    """An adapter trained on another base model is an error, not a silent mismatch."""
    for entry in entries.values():
        if entry.base_sha256 and base_sha256 and entry.base_sha256 != base_sha256:
            raise ConfigError(
                f"adapter {entry.adapter_id!r} was trained on base model sha256 {entry.base_sha256[:12]}..., "
                f"but the loaded base is {base_sha256[:12]}...; retrain it with `domainroute adapters train {entry.domain}`"
            )
