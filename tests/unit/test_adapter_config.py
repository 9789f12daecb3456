"""AdapterTrainConfig: defaults from the issue, help text on every field, validation that names the bad field."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from domainroute.adapters.train import AdapterTrainConfig

pytestmark = pytest.mark.unit


def test_defaults_are_the_issues_lora_settings():
    cfg = AdapterTrainConfig()
    assert (cfg.r, cfg.alpha, cfg.dropout, cfg.target_modules) == (16, 32, 0.05, ("q_proj", "v_proj"))
    assert cfg.threads == 1


def test_every_field_has_help_text():
    assert all(f.metadata.get("help") for f in fields(AdapterTrainConfig))
    assert set(AdapterTrainConfig.help()) == {f.name for f in fields(AdapterTrainConfig)}


@pytest.mark.parametrize("field_name, value", [
    ("r", 0), ("r", 2.5), ("alpha", -1), ("epochs", 0), ("batch_size", 0), ("max_seq_len", 32), ("threads", 0),
    ("dropout", 1.0), ("dropout", -0.1), ("learning_rate", 0.0), ("learning_rate", 2.0), ("warmup_ratio", 1.0),
    ("target_modules", ()), ("target_modules", ("q_proj", "")), ("eval_max_new_tokens", 0), ("epochs", True),
])
def test_bad_value_names_the_field(field_name, value):
    with pytest.raises(ValueError, match=rf"AdapterTrainConfig\.{field_name} "):
        AdapterTrainConfig(**{field_name: value})


def test_target_modules_list_becomes_tuple():
    assert AdapterTrainConfig(target_modules=["q_proj", "k_proj", "v_proj"]).target_modules == ("q_proj", "k_proj", "v_proj")


def test_command_reproduces_the_config():
    cfg = AdapterTrainConfig(epochs=2, learning_rate=1e-3, target_modules=("q_proj", "k_proj"))
    assert cfg.command("home") == ("domainroute adapters train home --lr 0.001 --epochs 2 --seed 1234 "
                                   "--target-modules q_proj,k_proj")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domainroute.cli", "adapters", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_rejects_a_bad_config_value_with_exit_2():
    result = _cli("train", "auto", "--dropout", "1.5")
    assert result.returncode == 2
    assert "AdapterTrainConfig.dropout" in result.stderr


def test_cli_rejects_an_unknown_domain_naming_the_known_ones():
    result = _cli("train", "autos")
    assert result.returncode == 2
    assert "unknown domain 'autos'; known: auto, home, health, billing" in result.stderr


def test_cli_help_names_the_actions():
    result = _cli("--help")
    assert result.returncode == 0
    for word in ("build-data", "train", "list", "eval", "--epochs", "--rank"):
        assert word in result.stdout
