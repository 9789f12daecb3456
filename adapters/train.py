"""Train one domain's LoRA adapter (``domainroute adapters train DOMAIN``).

The adapter learns *how* a domain answers (its house format and vocabulary, ``adapters/templates.py``) on top of
the shared base model; the facts still come from the retrieved passages in the prompt. Training uses exactly the
prompt the agent sends (``graphs/prompts.py``: SYSTEM_PROMPT + numbered passages + question, through the base
tokenizer's chat template) and puts the loss on the answer tokens only.

Works unchanged for any Hugging Face causal LM folder with q_proj/v_proj-style attention (Llama, Mistral, Qwen);
it runs on CUDA when available, else on CPU. A checkpoint is written after every epoch to
``out_dir/checkpoint``; running the same command again resumes from it, and it is removed once training ends.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domainroute.adapters.dataset import file_sha256, load_examples, passages_for
from domainroute.adapters.registry import ADAPTER_FILES, MANIFEST, base_weights_sha256
from domainroute.adapters.templates import DOMAINS
from domainroute.errors import ConfigError, InputError
from domainroute.graphs.prompts import SYSTEM_PROMPT, user_prompt

CHECKPOINT = "checkpoint"


@dataclass
class AdapterTrainConfig:
    """LoRA and training settings for one domain adapter. Defaults train a bundled adapter in minutes on 1 CPU."""

    r: int = field(default=16, metadata={"help": "LoRA rank: width of the low-rank update matrices."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha; the update is scaled by alpha / r."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "v_proj"), metadata={"help": "Names of the linear layers that get LoRA matrices."})
    learning_rate: float = field(default=6e-3, metadata={"help": "Peak AdamW learning rate (warm-up, then cosine)."})
    epochs: int = field(default=3, metadata={"help": "Passes over the training split."})
    batch_size: int = field(default=4, metadata={"help": "Examples per optimizer step."})
    seed: int = field(default=1234, metadata={"help": "Seed for LoRA initialisation, dropout and data order."})
    max_seq_len: int = field(default=512, metadata={
        "help": "Longest training sequence in tokens; longer prompts are cut from the left, the answer is kept."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps spent warming up the LR."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest on a busy 2-core machine)."})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast (faster on this CPU); LoRA weights stay fp32."})
    eval_max_new_tokens: int = field(default=120, metadata={
        "help": "Token limit when generating test-split answers for the manifest's metrics."})

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        for name in ("r", "alpha", "epochs", "batch_size", "max_seq_len", "threads", "eval_max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AdapterTrainConfig.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AdapterTrainConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.learning_rate < 1.0:
            raise ValueError(f"AdapterTrainConfig.learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"AdapterTrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ValueError(f"AdapterTrainConfig.target_modules must be non-empty module names, "
                             f"got {self.target_modules!r}")
        if self.max_seq_len < 64:
            raise ValueError(f"AdapterTrainConfig.max_seq_len must be >= 64 (prompt plus answer), got {self.max_seq_len}")

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    def command(self, domain: str) -> str:
        """The CLI command that trains an adapter with this configuration."""
        default = AdapterTrainConfig()
        parts = ["domainroute", "adapters", "train", domain]
        flags = {"r": "--rank", "alpha": "--alpha", "dropout": "--dropout", "learning_rate": "--lr",
                 "epochs": "--epochs", "batch_size": "--batch-size", "seed": "--seed", "max_seq_len": "--max-seq-len",
                 "threads": "--threads"}
        for name, flag in flags.items():
            if getattr(self, name) != getattr(default, name) or name in ("epochs", "seed"):
                parts += [flag, str(getattr(self, name))]
        if self.target_modules != default.target_modules:
            parts += ["--target-modules", ",".join(self.target_modules)]
        return shlex.join(parts)


def adapter_id_for(domain: str) -> str:
    return f"insurance-{domain}"


def _encode(example: dict[str, Any], passages, tokenizer, max_len: int) -> tuple[list[int], list[int]]:
    chat = [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_prompt(example["query"], passages)}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p_ids + a_ids)[-max_len:]
    labels = ([-100] * len(p_ids) + a_ids)[-max_len:]
    return ids, labels


def _batch(rows, pad_id: int, device):
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return input_ids.to(device), labels.to(device), mask.to(device)


def _base_name(base_model_path: Path) -> str:
    manifest = Path(base_model_path) / "manifest.json"
    if manifest.exists():
        name = json.loads(manifest.read_text()).get("name")
        if name:
            return str(name)
    return Path(base_model_path).name


def _kb_dir_for(data: Path) -> Path:
    # <pack>/adapters/data/<domain>.jsonl -> <pack>/kb
    return Path(data).resolve().parent.parent.parent / "kb"


def train_adapter(
    domain: str,
    base_model_path: Path,
    data: Path,
    out_dir: Path,
    cfg: AdapterTrainConfig | None = None,
    *,
    kb_dir: Path | None = None,
    max_steps: int | None = None,
    evaluate_test: bool = True,
    fresh: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``domain``'s adapter on the train split of ``data`` and write it to ``out_dir``; return the manifest.

    ``max_steps`` stops early (tests, smoke runs); ``evaluate_test`` generates the test split's answers with the
    saved adapter for the manifest's metrics; ``fresh`` ignores an existing checkpoint instead of resuming;
    ``on_step(step, loss)`` is called after every optimizer step.
    """
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domainroute.retrievers.ingest import load_chunks

    cfg = cfg or AdapterTrainConfig()
    if domain not in DOMAINS:
        raise InputError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    base_model_path, data, out_dir = Path(base_model_path), Path(data), Path(out_dir)
    if not (base_model_path / "config.json").exists():
        raise ConfigError(f"no causal LM at {base_model_path} (config.json missing); build the bundled one with "
                          "`domainroute train-base` or pass a Hugging Face model folder")
    start = time.perf_counter()
    chunks_by_id = {c.chunk_id: c for c in load_chunks(kb_dir or _kb_dir_for(data))}
    train_rows = load_examples(data, "train")
    validation_rows = load_examples(data, "validation")
    if not train_rows:
        raise InputError(f"{data} has no train-split examples")
    data_sha = file_sha256(data)
    base_sha = base_weights_sha256(base_model_path)

    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigError(f"the tokenizer at {base_model_path} has no chat template; add one to tokenizer_config.json")
    base = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM", bias="none")
    try:
        model = get_peft_model(base, lora)
    except ValueError as exc:  # peft: target modules not found in the base model
        raise ConfigError(f"AdapterTrainConfig.target_modules {cfg.target_modules}: {exc}") from exc
    model.to(device)

    train = [_encode(e, passages_for(e, chunks_by_id), tokenizer, cfg.max_seq_len) for e in train_rows]
    validation = [_encode(e, passages_for(e, chunks_by_id), tokenizer, cfg.max_seq_len) for e in validation_rows]
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.learning_rate * (step + 1) / warmup
        frac = (step - warmup) / max(1, total_steps - warmup)
        return cfg.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    identity = {"config": asdict(cfg), "data_sha256": data_sha, "base_sha256": base_sha, "domain": domain,
                "max_steps": max_steps}
    identity["config"]["target_modules"] = list(cfg.target_modules)
    checkpoint_dir = out_dir / CHECKPOINT
    step, losses = 0, []
    if (checkpoint_dir / "state.pt").exists() and not fresh:
        state = torch.load(checkpoint_dir / "state.pt", map_location=device, weights_only=False)
        if state["identity"] != identity:
            raise ConfigError(f"the checkpoint in {checkpoint_dir} was made with other settings, data or base "
                              "model; delete it or pass --fresh to start over")
        set_peft_model_state_dict(model, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, losses = state["step"], state["losses"]

    def save_checkpoint() -> None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint_dir / "state.pt.tmp"
        torch.save({"identity": identity, "lora": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "step": step, "losses": losses}, tmp)
        tmp.replace(checkpoint_dir / "state.pt")

    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    bar = tqdm(total=total_steps, initial=step, desc=f"adapter {domain}", unit="step", disable=not progress)
    tokens_seen = 0
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        order = list(range(len(train)))
        random.Random(cfg.seed + epoch).shuffle(order)
        batch_ids = order[offset * cfg.batch_size: (offset + 1) * cfg.batch_size]
        input_ids, labels, mask = _batch([train[i] for i in batch_ids], tokenizer.pad_token_id, device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with autocast:
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += int(mask.sum())
        losses.append(round(float(loss.detach()), 4))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}", epoch=epoch + 1)
        if step % steps_per_epoch == 0 or step == total_steps:
            save_checkpoint()
        if on_step is not None:
            on_step(step, losses[-1])
    bar.close()
    train_seconds = time.perf_counter() - start

    model.eval()
    validation_loss = _mean_loss(model, validation, tokenizer.pad_token_id, device, cfg.batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = _base_name(base_model_path)
    had_readme = (out_dir / "README.md").exists()
    model.save_pretrained(out_dir, save_embedding_layers=False)  # only LoRA matrices are trained
    if not had_readme:
        (out_dir / "README.md").unlink(missing_ok=True)  # peft's boilerplate model card; manifest.json is ours
    for name in ADAPTER_FILES:
        (out_dir / name).chmod(0o644)  # readable by a TGI container that mounts the folder
    manifest: dict[str, Any] = {
        "adapter_id": adapter_id_for(domain),
        "domain": domain,
        "base_model": {"name": _base_name(base_model_path), "sha256": base_sha},
        "training_data": {"path": _display_path(data), "sha256": data_sha, "train_examples": len(train),
                          "validation_examples": len(validation)},
        "peft_config": {"peft_type": "LORA", "r": cfg.r, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
                        "target_modules": list(cfg.target_modules), "task_type": "CAUSAL_LM"},
        "training": {**identity["config"], "steps": step, "tokens_seen_this_run": tokens_seen,
                     "first_loss": losses[0] if losses else None,
                     "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
                     "validation_loss": validation_loss, "device": device.type,
                     "trainable_parameters": sum(p.numel() for p in trainable),
                     "seconds_this_run": round(train_seconds, 1)},
        "metrics": {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command(domain),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if evaluate_test:
        from domainroute.adapters.evaluate import evaluate_split

        manifest["metrics"] = {"split": "test", **evaluate_split(
            domain, base_model_path, data, adapters={manifest["adapter_id"]: out_dir},
            adapter_id=manifest["adapter_id"], kb_dir=kb_dir or _kb_dir_for(data),
            max_new_tokens=cfg.eval_max_new_tokens, threads=cfg.threads, progress=progress)}
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for leftover in sorted(checkpoint_dir.glob("*")) if checkpoint_dir.exists() else []:
        leftover.unlink()
    if checkpoint_dir.exists():
        checkpoint_dir.rmdir()
    return manifest


def _mean_loss(model, rows, pad_id: int, device, batch_size: int) -> float | None:
    import torch

    if not rows:
        return None
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            input_ids, labels, mask = _batch(rows[i: i + batch_size], pad_id, device)
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=input_ids, attention_mask=mask, labels=labels).loss) * n
            count += n
    return round(total / max(1, count), 4)


def _display_path(path: Path) -> str:
    """The data path relative to the package when it lives there (manifests are committed), else as given."""
    from domainroute.settings import PACKAGE_DIR

    try:
        return str(Path(path).resolve().relative_to(PACKAGE_DIR.parent))
    except ValueError:
        return str(path)
