"""The domain adapters on the real bundled base model: registry, base-hash check, unknown ids, mixed-adapter
batches, and a short real training run (with resume) into tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from domainroute.adapters.dataset import data_path, load_examples, passages_for, quotable
from domainroute.adapters.registry import base_weights_sha256, check_base, scan, verified_adapters
from domainroute.adapters.templates import DOMAINS, house_format
from domainroute.adapters.train import AdapterTrainConfig, train_adapter
from domainroute.agents.local_engine import LocalChatModel
from domainroute.errors import ConfigError, UnknownAdapterError
from domainroute.graphs.prompts import SYSTEM_PROMPT, user_prompt
from domainroute.settings import Settings

from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration
IDS = [f"insurance-{d}" for d in DOMAINS]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def chunks(settings):
    from domainroute.retrievers.ingest import load_chunks

    return {c.chunk_id: c for c in load_chunks(settings.kb_dir)}


@pytest.fixture(scope="module")
def engine(settings) -> LocalChatModel:
    adapters = {a: e.path for a, e in verified_adapters(settings.adapters_dir, settings.base_model_path).items()}
    return LocalChatModel(model_path=settings.base_model_path, adapters=adapters, torch_threads=1)


def _messages(example, chunks):
    return [SystemMessage(SYSTEM_PROMPT), HumanMessage(user_prompt(example["query"], passages_for(example, chunks)))]


def _test_example(settings, domain: str, index: int = 0):
    return load_examples(data_path(settings.adapters_dir / "data", domain), "test")[index]


def test_registry_holds_the_four_trained_adapters_of_this_base(settings):
    entries = scan(settings.adapters_dir)
    assert sorted(entries) == sorted(IDS)
    base_sha = base_weights_sha256(settings.base_model_path)
    for adapter_id, entry in entries.items():
        manifest = entry.manifest
        assert manifest["domain"] == adapter_id.removeprefix("insurance-")
        assert manifest["base_model"]["sha256"] == base_sha
        assert manifest["peft_config"]["r"] == 16 and {"q_proj", "v_proj"} <= set(manifest["peft_config"]["target_modules"])
        data = data_path(settings.adapters_dir / "data", entry.domain)
        assert manifest["training_data"]["sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
        assert set(manifest["metrics"]) >= {"compliance", "terminology", "rouge_l", "faithfulness", "tokens_per_s"}
        assert manifest["command"].startswith(f"domainroute adapters train {entry.domain}")
        config = json.loads((entry.path / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 16
        assert sorted(config["target_modules"]) == sorted(manifest["peft_config"]["target_modules"])


def test_routes_name_their_adapters(settings):
    from domainroute.pack import load_pack

    pack = load_pack(settings.pack_dir)
    assert {r.name: r.adapter_id for r in pack.domain_routes} == {d: f"insurance-{d}" for d in DOMAINS}


def test_adapter_on_another_base_is_a_config_error(settings, tmp_path):
    """A copy of the pack whose auto adapter claims another base: the service refuses to build the engine."""
    from domainroute.service import AgentService

    pack = tmp_path / "pack"
    pack.mkdir()
    shutil.copy(settings.pack_dir / "pack.toml", pack / "pack.toml")
    for adapter_id in IDS:
        shutil.copytree(settings.adapters_dir / adapter_id, pack / "adapters" / adapter_id)
    manifest_path = pack / "adapters" / "insurance-auto" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["base_model"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(ConfigError, match=r"adapter 'insurance-auto' was trained on base model sha256 000000000000.*"
                                          r"domainroute adapters train auto"):
        AgentService(Settings(pack_dir=pack, data_dir=tmp_path / "data")).chat_model
    with pytest.raises(ConfigError, match="insurance-auto"):
        verified_adapters(pack / "adapters", settings.base_model_path)
    check_base({k: v for k, v in scan(pack / "adapters").items() if k != "insurance-auto"},
               base_weights_sha256(settings.base_model_path))  # the others are fine


def test_unknown_adapter_id_names_the_known_ones(engine, settings, chunks):
    messages = _messages(_test_example(settings, "auto"), chunks)
    with pytest.raises(UnknownAdapterError) as info:
        engine.bind(adapter_id="insurance-pets").invoke(messages)
    assert "insurance-auto, insurance-billing, insurance-health, insurance-home" in str(info.value)
    with pytest.raises(UnknownAdapterError):
        engine.generate_texts(["x"], adapter_ids=["insurance-autos"])


def test_each_adapter_changes_the_answer_and_reports_its_id(engine, settings, chunks):
    for domain in DOMAINS:
        messages = _messages(_test_example(settings, domain), chunks)
        base = engine.invoke(messages, max_new_tokens=40)
        own = engine.bind(adapter_id=f"insurance-{domain}").invoke(messages, max_new_tokens=40)
        assert own.response_metadata["adapter_id"] == f"insurance-{domain}"
        assert own.content != base.content


def test_copy_mode_writes_each_quoted_line_verbatim_from_a_passage(settings, chunks):
    """The real engine with copy-constrained decoding: the adapter's quoted line is a sentence the prompt shows,
    cited to its own passage, in every domain."""
    adapters = {a: e.path for a, e in verified_adapters(settings.adapters_dir, settings.base_model_path).items()}
    engine = LocalChatModel(model_path=settings.base_model_path, adapters=adapters, torch_threads=1, copy_numbers=True)
    for domain in DOMAINS:
        example = _test_example(settings, domain)
        passages = passages_for(example, chunks)
        quotes = quotable(example["query"], passages)
        labels = house_format(domain).quote_labels
        reply = engine.bind(adapter_id=f"insurance-{domain}", copy_from=[p.text for p in passages], quote_from=quotes,
                            quote_labels=list(labels)).invoke(_messages(example, chunks), max_new_tokens=100)
        quoted = [line for line in reply.text.splitlines() if line.startswith(labels)]
        assert quoted, reply.text
        label = next(lab for lab in labels if quoted[0].startswith(lab))
        assert quoted[0] in {f"{label} {sentence} [{n}]" for n, sentence in quotes}, quoted[0]


def test_mixed_adapter_batch_equals_sequential_calls(engine, settings, chunks):
    """8 requests, each with its own adapter (or the base), in one forward pass == 8 single calls."""
    mix = ["insurance-auto", "insurance-home", "insurance-health", "insurance-billing", None,
           "insurance-auto", "insurance-health", "insurance-billing"]
    prompts = []
    for i, adapter_id in enumerate(mix):
        domain = (adapter_id or "insurance-home").removeprefix("insurance-")
        prompts.append(engine.prompt_text(_messages(_test_example(settings, domain, i // 4), chunks)))
    batch = engine.generate_texts(prompts, adapter_ids=mix, max_new_tokens=32)
    sequential = [engine.generate_texts([p], adapter_ids=[a], max_new_tokens=32)[0] for p, a in zip(prompts, mix)]
    assert batch == sequential
    assert len(set(batch)) > 1


def _small_data(settings, tmp_path: Path, n: int = 12) -> Path:
    rows = load_examples(data_path(settings.adapters_dir / "data", "billing"), "train")[:n]
    path = tmp_path / "billing.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_short_training_run_writes_a_loadable_adapter(settings, tmp_path, chunks):
    data = _small_data(settings, tmp_path)
    out = tmp_path / "insurance-billing"
    manifest = train_adapter("billing", settings.base_model_path, data, out,
                             AdapterTrainConfig(epochs=1, batch_size=4), kb_dir=settings.kb_dir, max_steps=3,
                             evaluate_test=False, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "manifest.json"]
    assert manifest["training"]["steps"] == 3 and manifest["base_model"]["sha256"] == base_weights_sha256(settings.base_model_path)
    entry = verified_adapters(tmp_path, settings.base_model_path)["insurance-billing"]
    assert entry.manifest == json.loads((out / "manifest.json").read_text())
    model = LocalChatModel(model_path=settings.base_model_path, adapters={"insurance-billing": out})
    example = load_examples(data, "train")[0]
    reply = model.bind(adapter_id="insurance-billing").invoke(_messages(example, chunks), max_new_tokens=8)
    assert reply.response_metadata["adapter_id"] == "insurance-billing" and reply.content


def test_interrupted_training_resumes_from_the_epoch_checkpoint(settings, tmp_path):
    from safetensors.torch import load_file

    data = _small_data(settings, tmp_path, n=10)
    cfg = AdapterTrainConfig(epochs=2, batch_size=4)
    common = dict(kb_dir=settings.kb_dir, evaluate_test=False, progress=False)
    straight = train_adapter("billing", settings.base_model_path, data, tmp_path / "straight", cfg, **common)

    def interrupt(step: int, loss: float) -> None:
        if step == straight["training"]["steps"] - 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter("billing", settings.base_model_path, data, tmp_path / "resumed", cfg, on_step=interrupt, **common)
    assert (tmp_path / "resumed" / "checkpoint" / "state.pt").exists()
    steps: list[int] = []
    train_adapter("billing", settings.base_model_path, data, tmp_path / "resumed", cfg,
                  on_step=lambda step, loss: steps.append(step), **common)
    per_epoch = straight["training"]["steps"] // 2
    assert steps == list(range(per_epoch + 1, 2 * per_epoch + 1))  # only the second epoch ran again
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert not (tmp_path / "resumed" / "checkpoint").exists()

    with pytest.raises(KeyboardInterrupt):
        train_adapter("billing", settings.base_model_path, data, tmp_path / "other", cfg, on_step=interrupt, **common)
    with pytest.raises(ConfigError, match="--fresh"):
        train_adapter("billing", settings.base_model_path, data, tmp_path / "other",
                      AdapterTrainConfig(epochs=2, batch_size=4, learning_rate=1e-3), **common)


def test_cli_lists_adapters_as_json(data_dir):
    result = run_cli(["adapters", "list", "--json"], data_dir)
    assert result.returncode == 0, result.stderr.decode()
    rows = json.loads(result.stdout)
    assert sorted(r["adapter_id"] for r in rows) == sorted(IDS)
    assert all(r["matches_loaded_base"] for r in rows)


def test_cli_eval_reports_every_condition_as_json(data_dir):
    result = run_cli(["adapters", "eval", "--domains", "billing", "--limit", "2", "--json"], data_dir)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    rows = {r["condition"]: r for r in report["results"]}
    assert set(rows) == {"base", "own", "base+copy", "own+copy", "base+quote", "own+quote", "wrong"}
    assert all(r["n"] == 2 and r["domain"] == "billing" for r in rows.values())
    assert rows["own+quote"]["adapter_id"] == "insurance-billing" and rows["wrong"]["adapter_id"] == "insurance-auto"
    for name in ("own_beats_base", "own_beats_base_copy_constrained", "own_beats_base_quote_constrained",
                 "own_beats_base_quote_constrained_ceiling_ties"):
        assert set(report[name]) == {"billing"}, name


def test_ask_json_reports_the_routes_adapter(data_dir):
    result = run_cli(["ask", "a pipe burst under my kitchen sink and soaked the floor", "--json"], data_dir)
    assert result.returncode == 0, result.stderr.decode()
    answer = json.loads(result.stdout)
    assert answer["route"] == "home" and answer["adapter"] == "insurance-home"
