"""Pretrain the project's own small base model (``domainroute train-base``).

No pretrained causal LM can be downloaded on the machines this project is built on, so the bundled engine runs
a small Llama-architecture model (q_proj/v_proj like Llama/Mistral/Qwen, so LoRA adapters apply the same way)
trained here from the pack's knowledge base: plain language modelling on the documents, and grounded question
answering in the exact prompt format the graph uses (numbered passages, a question, an answer that quotes the
relevant passage and cites it as [n]). Loss on QA examples is on the answer tokens only.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from domainroute.graphs.prompts import SYSTEM_PROMPT, content_words, sentences, snippet, user_prompt
from domainroute.hashing import sha256_file
from domainroute.retrievers.base import Chunk
from domainroute.retrievers.ingest import load_chunks
from domainroute.schemas import Passage

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
NOT_FOUND = "I could not find this in the policy documents, so a specialist will need to confirm it."


@dataclass
class BaseModelConfig:
    """Architecture and training settings for ``domainroute train-base``."""

    hidden_size: int = field(default=256, metadata={"help": "Width of the model (Llama hidden_size)."})
    num_layers: int = field(default=6, metadata={"help": "Number of decoder layers."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads; must divide hidden_size."})
    intermediate_size: int = field(default=768, metadata={"help": "MLP width."})
    vocab_size: int = field(default=4096, metadata={"help": "Byte-level BPE vocabulary size."})
    max_seq_len: int = field(default=512, metadata={"help": "Training sequence length (tokens)."})
    steps: int = field(default=900, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=16, metadata={"help": "Examples per step."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate (cosine decay)."})
    warmup_steps: int = field(default=40, metadata={"help": "Linear warm-up steps."})
    qa_per_chunk: int = field(default=24, metadata={"help": "Grounded QA examples generated per KB chunk."})
    perturb_numbers: float = field(default=0.0, metadata={
        "help": "Share of QA examples whose passages (and so answers) have their numbers replaced by random ones, "
                "so that the model must copy figures from the passage instead of recalling them (0 = off)."})
    seed: int = field(default=1234, metadata={"help": "Seed for data generation and training."})
    threads: int = field(default=2, metadata={"help": "torch CPU threads."})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CPU (faster here); weights stay fp32."})

    def __post_init__(self) -> None:
        positive = ["hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size", "max_seq_len",
                    "steps", "batch_size", "qa_per_chunk", "threads"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"BaseModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"BaseModelConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if not 0.0 <= self.perturb_numbers <= 1.0:
            raise ValueError(f"BaseModelConfig.perturb_numbers must be in [0, 1], got {self.perturb_numbers}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"BaseModelConfig.learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.vocab_size < 300:
            raise ValueError("BaseModelConfig.vocab_size must be >= 300 (256 bytes plus special tokens)")


def _passage(chunk: Chunk) -> Passage:
    return Passage(chunk_id=chunk.chunk_id, doc_id=chunk.doc_id, title=chunk.title, section=chunk.section,
                   text=chunk.text, line=chunk.line, doc_type=chunk.doc_type,
                   effective_date=chunk.effective_date.isoformat(), version=chunk.version, tenant=chunk.tenant)


_QUESTION_FORMS = [
    "What does my policy say about {s}?", "{s}?", "how does {s} work", "Can you explain {s}?",
    "I have a question about {s}.", "tell me about {s} please", "What are the rules for {s}?",
    "Where can I read about {s}?", "{s} - what applies to me?", "need info on {s}",
]


def _questions(chunk: Chunk, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """(question, answer sentence(s)) pairs for a chunk: heading questions and keyword questions."""
    body = chunk.text.split("\n", 1)[1] if "\n" in chunk.text else chunk.text
    sents = [s for s in sentences(body) if 5 <= len(s.split()) <= 45] or sentences(body)[:1]
    out = []
    for i in range(n):
        if i % 3 == 0:
            q = rng.choice(_QUESTION_FORMS).format(s=chunk.section.lower() or chunk.title.lower())
            if rng.random() < 0.5:
                q = q.replace("my policy", f"my {chunk.line} policy")
        else:
            target = rng.choice(sents)
            words = sorted(w for w in content_words(target) if len(w) > 2)  # sorted: sets vary with PYTHONHASHSEED
            rng.shuffle(words)
            keys = " ".join(words[: rng.randint(2, 5)])
            q = rng.choice(["{k}?", "what about {k}", "Question on {k}.", "{k} - how does that work?",
                            "is there anything on {k}", "What is the rule on {k}?"]).format(k=keys)
        out.append((q, ""))
    return out


def _answer(passages: list[Passage], gold: int, question: str) -> str:
    shown = snippet(passages[gold].text, question)  # exactly what the prompt shows of the gold passage
    text = snippet("\n" + shown, question, max_words=34)
    n = gold + 1
    return f"{text} [{n}]\nSources: [{n}]"


_NUMBER_OR_CITATION = re.compile(r"\[\d+\]|\d+")


def number_perturber(rng: random.Random) -> Callable[[str], str]:
    """A function for one example: it replaces every run of digits in the texts it is given by a random one of the
    same length, the same digits by the same replacement in every text of the example. Citation markers ``[n]`` and
    any 4-digit 19xx/20xx are kept, so citations stay valid and written years stay years; the month and day of an
    ISO date are replaced like other numbers, and a leading zero is not kept."""
    mapping: dict[str, str] = {}

    def swap(match: re.Match) -> str:
        digits = match.group()
        if digits.startswith("[") or (len(digits) == 4 and digits[:2] in ("19", "20")):
            return digits
        if digits not in mapping:
            first = str(rng.randint(1, 9)) if len(digits) > 1 else str(rng.randint(0, 9))
            mapping[digits] = first + "".join(str(rng.randint(0, 9)) for _ in range(len(digits) - 1))
        return mapping[digits]

    return lambda text: _NUMBER_OR_CITATION.sub(swap, text)


def perturb_numbers(passages: list[Passage], rng: random.Random) -> list[Passage]:
    """The passages with their numbers replaced as ``number_perturber`` does, consistently across the passages.

    Draws from ``rng``, the corpus generator, so a perturbed corpus also differs from the plain one in the
    questions and passage mixes drawn after the first perturbed example."""
    perturb = number_perturber(rng)
    return [p.model_copy(update={"text": perturb(p.text)}) for p in passages]


def build_examples(chunks: list[Chunk], cfg: BaseModelConfig) -> list[dict[str, Any]]:
    """Grounded QA examples (curriculum: one passage first, then up to three) plus plain document text."""
    rng = random.Random(cfg.seed)
    passages = [_passage(c) for c in chunks]
    examples: list[dict[str, Any]] = []
    for index, chunk in enumerate(chunks):
        for q, _ in _questions(chunk, rng, cfg.qa_per_chunk):
            k = rng.choice([1, 2, 3, 3])
            others = rng.sample([p for j, p in enumerate(passages) if chunks[j].doc_id != chunk.doc_id], k - 1)
            gold = rng.randrange(k)
            shown = others[:gold] + [passages[index]] + others[gold:]
            if cfg.perturb_numbers and rng.random() < cfg.perturb_numbers:
                shown = perturb_numbers(shown, rng)
            examples.append({"kind": "qa", "k": k, "prompt": user_prompt(q, shown), "answer": _answer(shown, gold, q)})
        if rng.random() < 0.25:
            q, _ = _questions(chunk, rng, 1)[0]
            unrelated = rng.sample([p for j, p in enumerate(passages) if chunks[j].line != chunk.line], 1)
            examples.append({"kind": "qa", "k": 0, "prompt": user_prompt(q, []), "answer": NOT_FOUND})
        examples.append({"kind": "lm", "k": 0, "text": f"{chunk.title}\n{chunk.text}"})
    rng.shuffle(examples)
    # Curriculum: one-passage and plain-text examples first, then the harder ones.
    examples.sort(key=lambda e: 0 if e["k"] <= 1 else 1 if rng.random() < 0.2 else 2)
    return examples


def corpus_hash(examples: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps(e, sort_keys=True).encode())
    return digest.hexdigest()


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
                                   bos_token=None, unk_token=None, additional_special_tokens=SPECIAL_TOKENS[2:])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _encode(example: dict[str, Any], tokenizer, max_len: int) -> tuple[list[int], list[int]]:
    if example["kind"] == "lm":
        ids = tokenizer(example["text"], add_special_tokens=False)["input_ids"][: max_len - 1] + [tokenizer.eos_token_id]
        return ids, list(ids)
    chat = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": example["prompt"]}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p_ids + a_ids)[-max_len:]
    labels = ([-100] * len(p_ids) + a_ids)[-max_len:]
    return ids, labels


def train_base(kb_dir: Path, out_dir: Path, cfg: BaseModelConfig, *, progress: bool = True) -> dict[str, Any]:
    """Build the corpus from ``kb_dir``, train tokenizer and model, save both with a manifest; return it."""
    import torch
    from tqdm import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    chunks = load_chunks(kb_dir)
    examples = build_examples(chunks, cfg)
    texts = [e.get("text") or f"{e['prompt']}\n{e['answer']}" for e in examples]
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    encoded = [_encode(e, tokenizer, cfg.max_seq_len) for e in examples]

    model_cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, rope_theta=10000.0,
    )
    model = LlamaForCausalLM(model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    model.train()
    tokens_seen, losses, cursor = 0, [], 0
    bar = tqdm(range(cfg.steps), desc="train-base", unit="step", disable=not progress)
    for step in bar:
        batch = [encoded[(cursor + i) % len(encoded)] for i in range(cfg.batch_size)]
        cursor += cfg.batch_size
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            mask[row, : len(ids)] = 1
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += int(mask.sum())
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    bar.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(torch.float16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    seconds = time.perf_counter() - start
    manifest = {
        "name": "domainroute-base-tiny",
        "architecture": "LlamaForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": asdict(cfg),
        "data": {"kb_dir": str(kb_dir), "chunks": len(chunks), "examples": len(examples),
                 "corpus_sha256": corpus_hash(examples)},
        "steps": cfg.steps,
        "tokens_seen": tokens_seen,
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "first_loss": round(losses[0], 4),
        "train_seconds": round(seconds, 1),
        "weights_sha256": sha256_file(out_dir / "model.safetensors"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "domainroute train-base",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
