"""The adapter registry: one folder per adapter (peft/TGI format) with a ``manifest.json``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainroute.errors import ConfigError
from domainroute.hashing import sha256_file

MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


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
        for needed in ADAPTER_FILES:
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


def base_weights_sha256(model_dir: Path) -> str:
    """The identity of a base model: sha256 of ``model.safetensors`` (or, for a sharded model, of its shards'
    hashes in name order). Adapters record it; loading them on other weights is refused (``check_base``)."""
    model_dir = Path(model_dir)
    single = model_dir / "model.safetensors"
    if single.exists():
        return sha256_file(single)
    shards = sorted(model_dir.glob("model-*-of-*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not shards:
        raise ConfigError(f"no model weights (model.safetensors or shards) in {model_dir}")
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(f"{shard.name}:{sha256_file(shard)}\n".encode())
    return digest.hexdigest()


def verified_adapters(adapters_dir: Path, base_model_path: Path) -> dict[str, AdapterEntry]:
    """``scan`` plus ``check_base`` against the weights in ``base_model_path``: what an engine may load."""
    entries = scan(adapters_dir)
    if entries:
        check_base(entries, base_weights_sha256(base_model_path))
    return entries
