"""Domain packs: routes as data, loaded from ``pack.toml``."""

from __future__ import annotations

import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domainroute.errors import ConfigError

OUT_OF_SCOPE = "out_of_scope"


class RetrievalScope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lines: list[str] = Field(default_factory=list, description="Lines of business this route may retrieve from.")
    doc_types: list[str] = Field(default_factory=list, description="Document types; empty = all.")
    top_k: int = Field(4, ge=1, le=20)


class RouteThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_confidence: float = Field(0.45, ge=0.0, le=1.0)


class RouteConfig(BaseModel):
    """One domain: a name, a description, examples, an adapter id, a retrieval scope and thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["domain", "refusal"] = "domain"
    description: str
    examples: list[str] = Field(default_factory=list)
    adapter_id: str | None = None
    retrieval: RetrievalScope = Field(default_factory=RetrievalScope)
    thresholds: RouteThresholds = Field(default_factory=RouteThresholds)


class EscalationLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    large_loss: dict[str, float] = Field(default_factory=lambda: {"auto": 25000, "home": 50000, "health": 100000})
    new_policy_days: int = 30
    frequent_claims_12m: int = 3
    repeat_contact: int = 4


class EscalationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: EscalationLimits = Field(default_factory=EscalationLimits)


class Pack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    name: str
    refusal: str
    routes: list[RouteConfig]
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    root: Path = Path(".")

    @model_validator(mode="after")
    def _check_routes(self) -> "Pack":
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names must be unique, got {names}")
        if OUT_OF_SCOPE not in names:
            raise ValueError(f"a pack needs an {OUT_OF_SCOPE!r} route (kind = \"refusal\")")
        return self

    @property
    def route_names(self) -> list[str]:
        return [r.name for r in self.routes]

    @property
    def domain_routes(self) -> list[RouteConfig]:
        return [r for r in self.routes if r.kind == "domain"]

    def route(self, name: str) -> RouteConfig:
        for r in self.routes:
            if r.name == name:
                return r
        raise ConfigError(f"unknown route {name!r}; known: {', '.join(self.route_names)}")


def load_pack(pack_dir: Path) -> Pack:
    path = Path(pack_dir) / "pack.toml"
    if not path.exists():
        raise ConfigError(f"no pack.toml in {pack_dir}; point --pack / DOMAINROUTE_PACK_DIR at a pack folder")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return Pack(**raw, root=Path(pack_dir))
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
