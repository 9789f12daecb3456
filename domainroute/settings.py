"""All run-time settings in one place.

Precedence (highest first): explicit argument > environment (``DOMAINROUTE_*``) > config file > default.
The config file is TOML: ``$DOMAINROUTE_CONFIG`` if set, else ``./domainroute.toml`` if it exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from domainroute.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_PACK = PACKAGE_DIR / "packs" / "insurance"
BUNDLED_BASE_MODEL = PACKAGE_DIR / "models" / "base"


def pack_hybrid_alpha(pack_dir: Path) -> float:
    """The pack's tuned hybrid alpha from ``retrieval/config.json`` (``domainroute retrieval eval --write-default``),
    else 0.5."""
    path = Path(pack_dir) / "retrieval" / "config.json"
    if not path.is_file():
        return 0.5
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["hybrid_alpha"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: needs a number 'hybrid_alpha' ({type(exc).__name__}: {exc}); "
                          "rewrite it with `domainroute retrieval eval --write-default`") from exc


def config_file() -> Path | None:
    explicit = os.environ.get("DOMAINROUTE_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("domainroute.toml")
    return local if local.exists() else None


class Settings(BaseSettings):
    """Every knob a run is configured with. Read once at the boundary (CLI, server), then passed down."""

    model_config = SettingsConfigDict(env_prefix="DOMAINROUTE_", extra="forbid", validate_default=True)

    data_dir: Path = Field(Path.home() / ".domainroute", description="Where the vector store and checkpoints live.")
    pack_dir: Path = Field(BUNDLED_PACK, description="Domain pack: pack.toml, knowledge base, router, adapters.")
    tenant: str = Field("northwind", description="Tenant whose documents retrieval may return.")

    llm_backend: Literal["local", "tgi"] = Field("local", description="local = embedded transformers+peft engine.")
    base_model_path: Path = Field(BUNDLED_BASE_MODEL, description="Any Hugging Face causal LM folder.")
    tgi_url: str | None = Field(None, description="Base URL of a TGI server, for llm_backend=tgi.")
    max_new_tokens: int = Field(96, ge=1, le=2048)
    torch_threads: int = Field(2, ge=1, le=256)
    copy_numbers: bool = Field(False, description="Embedded engine only: copy-constrained decoding (numbers, amounts, "
                               "dates and durations only as the turn's passages state them; the adapter's quoted "
                               "template line only as a passage sentence, verbatim). Raises the model's own "
                               "faithfulness but lets more wrong-but-supported drafts past the grounding check; see "
                               "docs/adapters.md.")
    fact_free_drafts: Literal["auto", "show", "quote"] = Field(
        "auto", description="A model draft that states no amount, date or other checkable fact: show it as written, "
        "or quote the passages instead. auto = quote with the embedded engine (the bundled 3.7M model's prose is not "
        "trustworthy when there is nothing to check), show with TGI.")

    retriever_backend: Literal["lancedb", "weaviate"] = "lancedb"
    weaviate_url: str | None = None
    weaviate_collection: str = Field("DomainrouteChunk", pattern=r"^[A-Z][A-Za-z0-9_]*$", description=(
        "Weaviate collection holding the chunks (a new name starts a new collection, e.g. for another encoder)."))
    top_k: int = Field(4, ge=1, le=20, description="Passages retrieved per turn (cap; the model cannot raise it).")
    hybrid_alpha: float = Field(default_factory=lambda data: pack_hybrid_alpha(data.get("pack_dir", BUNDLED_PACK)),
                                ge=0.0, le=1.0, description="Hybrid fusion weight: 1 = vector only, 0 = keyword only; "
                                "default: the pack's retrieval/config.json, else 0.5.")

    @field_validator("tenant")
    @classmethod
    def _tenant_name(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"tenant must be letters, digits, '-' or '_', got {value!r}")
        return value

    @property
    def store_path(self) -> Path:
        return self.data_dir / "lancedb"

    @property
    def checkpoint_path(self) -> Path:
        return self.data_dir / "checkpoints.sqlite"

    @property
    def kb_dir(self) -> Path:
        return self.pack_dir / "kb"

    @property
    def adapters_dir(self) -> Path:
        return self.pack_dir / "adapters"

    @property
    def router_dir(self) -> Path:
        return self.pack_dir / "router" / "model"

    @property
    def escalation_dir(self) -> Path:
        return self.pack_dir / "escalation" / "model"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
