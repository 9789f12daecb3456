"""The two encoder backends (ONNX Runtime export, sentence-transformers) compute the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

from domainroute.embeddings import EMBEDDING_DIM, MPNET_DIM, Embedder, MpnetEmbedder, resolve_backend

pytestmark = pytest.mark.integration

TEXTS = [
    "my windshield cracked on the highway",
    "",
    "EOB",
    "Our fence blew down in the windstorm and landed on the neighbour's car. Whose policy pays for what? " * 30,
    "premuim went up again?? why",
]


def test_onnx_and_torch_backends_agree():
    fast, reference = Embedder("onnx"), Embedder("torch")
    a, b = fast.encode(TEXTS), reference.encode(TEXTS)
    assert fast.backend == "onnx", "the ONNX backend fell back to torch; see the logged warning"
    assert a.shape == b.shape == (len(TEXTS), EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.9999
    # batching (padding inside a batch) does not change a text's vector
    one_by_one = np.stack([fast.encode([t])[0] for t in TEXTS])
    assert float((a * one_by_one).sum(axis=1).min()) > 0.9999
    assert fast.encode([]).shape == (0, EMBEDDING_DIM)


def test_second_stage_encoder_backends_agree():
    """all-mpnet-base-v2, unpacked from its PyPI parts (sha256 checked), through ONNX Runtime and torch."""
    fast, reference = MpnetEmbedder("onnx"), MpnetEmbedder("torch")
    a, b = fast.encode(TEXTS), reference.encode(TEXTS)
    assert fast.backend == "onnx", "the ONNX backend fell back to torch; see the logged warning"
    assert a.shape == b.shape == (len(TEXTS), MPNET_DIM)
    assert float((a * b).sum(axis=1).min()) > 0.9999
    guitar, instrument, market = fast.encode(["A man is playing a guitar.", "Someone plays an instrument.",
                                              "The stock market fell sharply today."])
    assert float(guitar @ instrument) > 0.5 > float(guitar @ market)


def test_unknown_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DOMAINROUTE_ENCODER_BACKEND", "tpu")
    with pytest.raises(ValueError, match="auto, onnx, torch"):
        resolve_backend()
    assert resolve_backend("torch") == "torch"
