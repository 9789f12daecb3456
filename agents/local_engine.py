"""The embedded LLM engine: a LangChain chat model over transformers + peft.

It behaves like TGI with LoRA adapters: each request may name an ``adapter_id`` (none = base model), the
adapters share one base model and are switched per request. One difference on purpose: an unknown adapter id is
an error naming the known ids (TGI silently answers with the base model).

Any Hugging Face causal LM folder works as the base; its tokenizer's chat template formats the messages.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from domainroute.errors import ConfigError, UnknownAdapterError

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}


@dataclass
class _Loaded:
    model: Any  # transformers PreTrainedModel or peft PeftModel
    tokenizer: Any
    lock: threading.Lock
    adapter_ids: frozenset[str]
    load_seconds: float


def to_chat(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> the role/content dicts that chat templates take."""
    chat = []
    for message in messages:
        role = _ROLES.get(message.type)
        if role is None:
            raise ValueError(f"message type {message.type!r} is not supported by the local engine")
        chat.append({"role": role, "content": message.text})
    return chat


class LocalChatModel(BaseChatModel):
    """Chat model over a local causal LM with per-request LoRA adapters (``model.bind(adapter_id=...)``)."""

    model_path: Path = Field(description="Folder of a Hugging Face causal LM (config, weights, tokenizer).")
    adapters: Mapping[str, Path] = Field(default_factory=dict, description="adapter id -> peft adapter folder")
    max_new_tokens: int = Field(160, ge=1, le=4096)
    torch_threads: int = Field(2, ge=1)
    repetition_penalty: float = Field(1.2, ge=1.0, description="1.0 = off; breaks the small model's loops (it also penalises copying)")
    copy_numbers: bool = Field(False, description="copy-constrained decoding when a call passes copy_from=[passage "
                                                   "texts]: every number generated must be one they state; with "
                                                   "quote_from and quote_labels, quoted lines are passage sentences")

    _loaded: _Loaded | None = PrivateAttr(default=None)
    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "domainroute-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": str(self.model_path), "adapters": sorted(self.adapters)}

    @property
    def adapter_ids(self) -> list[str]:
        return sorted(self.adapters)

    def check_adapter(self, adapter_id: str | None) -> None:
        """Raise UnknownAdapterError unless ``adapter_id`` is None or a configured adapter."""
        if adapter_id is not None and adapter_id not in self.adapters:
            raise UnknownAdapterError(adapter_id, list(self.adapters))

    def load(self) -> _Loaded:
        """Load the base model, its tokenizer and every adapter once (thread-safe)."""
        if self._loaded is not None:
            return self._loaded
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load()
        return self._loaded

    def _load(self) -> _Loaded:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        path = Path(self.model_path)
        if not (path / "config.json").exists():
            raise ConfigError(
                f"no causal LM at {path} (config.json missing); build the bundled one with "
                "`domainroute train-base` or set DOMAINROUTE_BASE_MODEL_PATH to a Hugging Face model folder"
            )
        torch.set_num_threads(self.torch_threads)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.chat_template is None:
            raise ConfigError(f"the tokenizer at {path} has no chat template; add one to tokenizer_config.json")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
        if self.adapters:
            from peft import PeftModel

            items = sorted(self.adapters.items())
            for adapter_id, folder in items:
                if not (Path(folder) / "adapter_config.json").exists():
                    raise ConfigError(f"adapter {adapter_id!r}: no adapter_config.json in {folder}")
            first_id, first_path = items[0]
            with warnings.catch_warnings():
                # peft 0.21 calls a transformers 5.x method that warns of its own rename; nothing for the user to do
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = PeftModel.from_pretrained(model, str(first_path), adapter_name=first_id)
                for adapter_id, folder in items[1:]:
                    model.load_adapter(str(folder), adapter_name=adapter_id)
            model.eval()
        return _Loaded(model, tokenizer, threading.Lock(), frozenset(self.adapters), time.perf_counter() - start)

    def prompt_text(self, messages: Sequence[BaseMessage]) -> str:
        tokenizer = self.load().tokenizer
        return tokenizer.apply_chat_template(to_chat(messages), tokenize=False, add_generation_prompt=True)

    def generate_texts(
        self,
        prompts: Sequence[str],
        *,
        adapter_ids: Sequence[str | None],
        max_new_tokens: int | None = None,
        copy_sources: Sequence[Sequence[str]] | None = None,
        quotes: Sequence[Sequence[tuple[int, str]]] | None = None,
        quote_labels: Sequence[str] = (),
    ) -> list[str]:
        """Greedy generation for a batch of formatted prompts, each with its own adapter (or None).

        A batch that mixes adapters is run in one forward pass with peft's ``adapter_names``.
        ``copy_sources``: per prompt, passage texts; every number generated must then be one they state
        (:class:`domainroute.agents.copy_constraint.NumberCopyProcessor`). ``quotes``: per prompt, the
        (passage number, sentence) pairs a line starting with one of ``quote_labels`` must quote verbatim
        (:class:`domainroute.agents.copy_constraint.QuoteProcessor`).
        """
        if len(prompts) != len(adapter_ids):
            raise ValueError("prompts and adapter_ids must have the same length")
        if copy_sources is not None and len(copy_sources) != len(prompts):
            raise ValueError("copy_sources must have one list of passage texts per prompt")
        if quotes is not None and len(quotes) != len(prompts):
            raise ValueError("quotes must have one list of (passage number, sentence) pairs per prompt")
        for adapter_id in adapter_ids:
            self.check_adapter(adapter_id)
        import torch

        loaded = self.load()
        tok = loaded.tokenizer
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        inputs = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        limit = max_new_tokens or self.max_new_tokens
        kwargs: dict[str, Any] = dict(
            max_new_tokens=limit,
            do_sample=False,
            repetition_penalty=self.repetition_penalty,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        processors = []
        if copy_sources is not None:
            from domainroute.agents.copy_constraint import NumberCopyProcessor

            processors.append(NumberCopyProcessor(tok, copy_sources, inputs["input_ids"].shape[1],
                                                  quote_labels=quote_labels if quotes is not None else (),
                                                  quotes=quotes))
        if quotes is not None and quote_labels:
            from domainroute.agents.copy_constraint import QuoteProcessor

            processors.append(QuoteProcessor(tok, quotes, quote_labels, inputs["input_ids"].shape[1]))
        if processors:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList(processors)
        with loaded.lock, torch.inference_mode():
            if not loaded.adapter_ids:
                out = loaded.model.generate(**inputs, **kwargs)
            elif len(set(adapter_ids)) == 1 and adapter_ids[0] is None:
                with loaded.model.disable_adapter():
                    out = loaded.model.generate(**inputs, **kwargs)
            elif len(set(adapter_ids)) == 1:
                loaded.model.set_adapter(adapter_ids[0])
                out = loaded.model.generate(**inputs, **kwargs)
            else:
                names = ["__base__" if a is None else a for a in adapter_ids]
                out = loaded.model.generate(**inputs, **kwargs, adapter_names=names)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [tok.decode(row, skip_special_tokens=True).strip() for row in new_tokens]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        adapter_id: str | None = None,
        max_new_tokens: int | None = None,
        copy_from: list[str] | None = None,
        quote_from: list[tuple[int, str]] | None = None,
        quote_labels: list[str] | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if kwargs:
            raise TypeError(f"unsupported generation arguments: {sorted(kwargs)}")
        self.check_adapter(adapter_id)
        prompt = self.prompt_text(messages)
        start = time.perf_counter()
        sources = [list(copy_from)] if copy_from is not None and self.copy_numbers else None
        quotes = [list(quote_from)] if quote_from is not None and self.copy_numbers else None
        text = self.generate_texts([prompt], adapter_ids=[adapter_id], max_new_tokens=max_new_tokens,
                                   copy_sources=sources, quotes=quotes, quote_labels=tuple(quote_labels or ()))[0]
        seconds = time.perf_counter() - start
        for marker in stop or []:
            if marker in text:
                text = text[: text.index(marker)]
        tokens = len(self.load().tokenizer(text, add_special_tokens=False)["input_ids"])
        message = AIMessage(
            content=text,
            response_metadata={"adapter_id": adapter_id, "model": str(self.model_path), "generated_tokens": tokens,
                               "seconds": round(seconds, 4)},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
