"""Knowledge-base documents -> chunks -> vectors -> a retriever.

A document is a Markdown file with front matter (doc_id, title, line, doc_type, effective_date, version,
tenant); its body is split at ``## `` headings, one chunk per section (long sections are split at paragraphs).
Chunk ids are stable (``{doc_id}@v{version}#{ordinal:03d}``), so ingesting the same document again replaces its
chunks instead of duplicating them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domainroute.embeddings import Embedder, default_embedder, encoder_name
from domainroute.errors import InputError
from domainroute.retrievers.base import Chunk, Retriever

log = logging.getLogger(__name__)

MAX_CHUNK_WORDS = 260
_NAME = r"^[a-z0-9][a-z0-9_-]*$"


class DocumentMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_id: str = Field(pattern=_NAME)
    title: str = Field(min_length=1)
    line: Literal["auto", "home", "health", "billing", "general"]
    doc_type: Literal["policy_wording", "procedure_manual", "billing_terms", "faq", "endorsement", "notice"]
    effective_date: date
    version: int = Field(1, ge=1)
    tenant: str = Field(pattern=_NAME)


@dataclass(frozen=True)
class Document:
    meta: DocumentMeta
    body: str
    path: Path


def parse_document(path: Path) -> Document:
    """Parse one Markdown document; a bad file raises InputError naming the file and the field."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    match = re.match(r"\A---\s*\n(.*?)\n---\s*\n(.*)\Z", raw, flags=re.S)
    if not match:
        raise InputError(f"{path}: missing front matter (a '---' block with doc_id, title, line, ...)")
    fields: dict[str, str] = {}
    for number, row in enumerate(match.group(1).splitlines(), start=2):
        row = row.split(" #", 1)[0].strip()
        if not row:
            continue
        if ":" not in row:
            raise InputError(f"{path}:{number}: front matter line is not 'key: value': {row!r}")
        key, value = row.split(":", 1)
        fields[key.strip()] = value.strip().strip('"').strip("'")
    try:
        meta = DocumentMeta(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "front matter"
        raise InputError(f"{path}: front matter field {where!r}: {first['msg']}") from exc
    return Document(meta=meta, body=match.group(2), path=path)


def _sections(body: str) -> Iterator[tuple[str, str]]:
    heading, lines, intro = "", [], ""
    for row in body.splitlines():
        if row.startswith("# ") and not heading and not lines:
            continue  # the document title line
        if row.startswith("## "):
            if heading:
                yield heading, "\n".join(lines).strip()
            elif lines:
                intro = "\n".join(lines).strip()
            heading, lines = row[3:].strip(), []
            if intro:
                lines, intro = [intro, ""], ""
        else:
            lines.append(row)
    if heading or lines:
        yield heading or "Overview", "\n".join(lines).strip()


def _split_long(text: str) -> list[str]:
    if len(text.split()) <= MAX_CHUNK_WORDS:
        return [text]
    parts, current = [], []
    for paragraph in re.split(r"\n\s*\n", text):
        if current and len(" ".join(current + [paragraph]).split()) > MAX_CHUNK_WORDS:
            parts.append("\n\n".join(current))
            current = []
        current.append(paragraph)
    if current:
        parts.append("\n\n".join(current))
    return parts


def chunk_document(doc: Document) -> list[Chunk]:
    meta, chunks = doc.meta, []
    for heading, text in _sections(doc.body):
        for piece in _split_long(text):
            if not piece.strip():
                continue
            ordinal = len(chunks)
            chunks.append(
                Chunk(
                    chunk_id=f"{meta.doc_id}@v{meta.version}#{ordinal:03d}",
                    doc_id=meta.doc_id,
                    version=meta.version,
                    ordinal=ordinal,
                    title=meta.title,
                    section=heading,
                    text=f"{heading}\n{piece}" if heading else piece,
                    line=meta.line,
                    doc_type=meta.doc_type,
                    effective_date=meta.effective_date,
                    tenant=meta.tenant,
                )
            )
    if not chunks:
        raise InputError(f"{doc.path}: the document has no text")
    return chunks


def find_documents(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.md") if p.name.upper() != "DATASET_CARD.MD" and p.name != "README.md")
        if files:
            return files
        raise InputError(f"{path}: no Markdown documents (*.md) found")
    raise InputError(f"{path}: no such file or folder")


def _reembed_other_encoders(retriever: Retriever, embedder: Embedder, progress: bool) -> None:
    """Every LanceDB tenant whose vectors another encoder wrote is re-embedded first (the stored chunks stay; only
    their vectors change), so the new chunks join comparable ones and no tenant is left unsearchable. Each
    conversion is logged with its direction. Other stores refuse such writes instead."""
    stored_encoder = getattr(retriever, "stored_encoder", None)
    if stored_encoder is None:
        return
    name = encoder_name(embedder)
    for tenant in retriever.tenants():
        stored = stored_encoder(tenant)
        if stored is not None and stored != name:
            log.warning("tenant %r: re-embedding the stored chunks, written by %r, with %r", tenant, stored, name)
            retriever.reembed(tenant, progress=progress)  # type: ignore[attr-defined]


def load_chunks(path: Path) -> list[Chunk]:
    """Parse and chunk every document under ``path`` (no embedding)."""
    return [chunk for file in find_documents(path) for chunk in chunk_document(parse_document(file))]


def embedding_text(chunk: Chunk) -> str:
    """What the vector of a chunk encodes: its line of business, its section heading and its text.

    Chosen on the validation half of ``retrieval/eval.jsonl``: prefixing the line ("auto: ...") beat the former
    "title. text" (the title mostly repeats the document type and pushes the chunk's tail past the encoder's
    256-token window); see docs/benchmarks/retrieval.md.
    """
    return embedding_text_of(chunk.line, chunk.text)


def embedding_text_of(line: str, text: str) -> str:
    """:func:`embedding_text` from a stored row's ``line`` and ``text`` (re-embedding a store reads rows back)."""
    return f"{line}: {text}"


@dataclass(frozen=True)
class IngestReport:
    documents: int
    chunks: int
    tenants: tuple[str, ...]


def ingest(
    path: Path,
    retriever: Retriever,
    *,
    embedder: Embedder | None = None,
    progress: bool = True,
) -> IngestReport:
    """Parse everything first (so a bad file changes nothing), embed document by document, then store.

    A retriever with ``upsert_documents`` (LanceDB) gets one bulk write per tenant; others one call per document.
    """
    from tqdm import tqdm

    docs = [parse_document(file) for file in find_documents(path)]
    chunked = [chunk_document(doc) for doc in docs]
    own = retriever._get_embedder() if hasattr(retriever, "_get_embedder") else None
    if embedder is None:  # the retriever's own encoder, so the vectors match what its store records
        embedder = own or default_embedder()
    elif own is not None and encoder_name(embedder) != encoder_name(own):
        raise InputError(f"ingest embeds with {encoder_name(embedder)!r} but the retriever records "
                         f"{encoder_name(own)!r}; pass the retriever's own encoder (or none)")
    by_tenant: dict[str, list[list[Chunk]]] = {}
    bar = tqdm(total=sum(len(c) for c in chunked), unit="chunk", desc="ingest", disable=not progress)
    bulk = getattr(retriever, "upsert_documents", None)
    _reembed_other_encoders(retriever, embedder, progress)
    total = 0
    for doc, chunks in zip(docs, chunked, strict=True):
        vectors = embedder.encode([embedding_text(c) for c in chunks])
        with_vectors = [replace(c, vector=v.tolist()) for c, v in zip(chunks, vectors, strict=True)]
        if bulk is None:
            total += retriever.upsert_document(with_vectors, tenant=doc.meta.tenant)
        else:
            by_tenant.setdefault(doc.meta.tenant, []).append(with_vectors)
        bar.update(len(chunks))
    for tenant, documents in by_tenant.items():
        total += bulk(documents, tenant=tenant)
    bar.close()
    tenants = {doc.meta.tenant for doc in docs}
    return IngestReport(documents=len(docs), chunks=total, tenants=tuple(sorted(tenants)))


def iter_texts(chunks: Iterable[Chunk]) -> Iterator[str]:
    for chunk in chunks:
        yield chunk.text
