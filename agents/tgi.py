"""The production LLM backend: a LangChain chat model over a Text Generation Inference server.

It sends ``adapter_id`` per request through ``huggingface_hub.InferenceClient.text_generation`` (the old
``text-generation`` client cannot). Parameters are validated before anything is sent; only 429, 5xx and
timeouts are retried, with exponential backoff; an adapter id the registry does not know is refused here,
because TGI itself would silently answer with the base model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from domainroute.agents.local_engine import to_chat
from domainroute.errors import BackendUnavailableError, ConfigError, InputError, UnknownAdapterError

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_TGI_ORIGINS: set[str] = set()
_FACTORY_LOCK = threading.Lock()


def _origin(url: Any) -> str:
    parsed = urlsplit(str(url))
    return f"{parsed.scheme}://{parsed.netloc}".lower()


def _allow_offline(base_url: str) -> None:
    """Let huggingface_hub reach this TGI server while HF_HUB_OFFLINE=1 (which the CLI sets to keep model loading
    off the network): the Hub's HTTP client blocks *every* request in offline mode, including ones to our own
    inference server. Requests to other hosts keep the Hub's own hook (offline block, request ids)."""
    with _FACTORY_LOCK:
        first = not _TGI_ORIGINS
        _TGI_ORIGINS.add(_origin(base_url))
        if not first:
            return
        import httpx2
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils import _http  # the Hub's request hook is not exported publicly

        def hook(request: httpx2.Request) -> Any:
            if _origin(request.url) in _TGI_ORIGINS:
                return None
            return _http.hf_request_event_hook(request)

        set_client_factory(lambda: httpx2.Client(event_hooks={"request": [hook]}, follow_redirects=True, timeout=None))


class GenerateParams(BaseModel):
    """The parameters we send to TGI's /generate, validated before sending."""

    model_config = ConfigDict(extra="forbid")

    adapter_id: str | None = Field(None, min_length=1, max_length=200)
    max_new_tokens: int = Field(160, ge=1, le=4096)
    repetition_penalty: float = Field(1.1, gt=0.0, le=10.0)
    stop: list[str] = Field(default_factory=list, max_length=4)
    do_sample: bool = False


class TGIChatModel(BaseChatModel):
    """Chat model over TGI with per-request LoRA adapters (``model.bind(adapter_id=...)``)."""

    base_url: str = Field(description="TGI server, e.g. http://127.0.0.1:8080")
    adapters: Sequence[str] = Field(default_factory=list, description="adapter ids the registry knows")
    tokenizer_path: Path | None = Field(None, description="local tokenizer whose chat template formats prompts")
    max_new_tokens: int = 160
    timeout_s: float = 60.0
    max_retries: int = Field(3, ge=0, le=10)
    backoff_s: float = Field(0.5, ge=0.0)

    _client: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "domainroute-tgi"

    @property
    def client(self):
        if self._client is None:
            from huggingface_hub import InferenceClient

            _allow_offline(self.base_url)
            self._client = InferenceClient(base_url=self.base_url.rstrip("/"), timeout=self.timeout_s)
        return self._client

    def format_prompt(self, messages: Sequence[BaseMessage]) -> str:
        if self.tokenizer_path is None:
            raise ConfigError("TGIChatModel needs tokenizer_path (the served model's tokenizer folder) to format chats")
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tokenizer.apply_chat_template(to_chat(messages), tokenize=False, add_generation_prompt=True)

    def generate_text(self, prompt: str, params: GenerateParams) -> str:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, TextGenerationError

        if params.adapter_id is not None and params.adapter_id not in self.adapters:
            raise UnknownAdapterError(params.adapter_id, list(self.adapters))
        for attempt in range(self.max_retries + 1):
            try:
                return self.client.text_generation(prompt, **params.model_dump(exclude_none=True))
            except InferenceTimeoutError as exc:
                error: Exception = exc
            except (HfHubHTTPError, TextGenerationError) as exc:
                # TGI's JSON errors ({"error_type": "overloaded"}, ...) arrive as TextGenerationError subclasses
                # raised from the HfHubHTTPError that holds the response.
                http = exc if isinstance(exc, HfHubHTTPError) else exc.__cause__
                response = getattr(http, "response", None)
                status = response.status_code if response is not None else None
                if status not in RETRYABLE_STATUS:
                    raise BackendUnavailableError(f"TGI at {self.base_url} answered {status}: {exc}") from exc
                error = exc
            except (OSError, httpx2.TransportError) as exc:  # connection refused, DNS, reset
                error = exc
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * (2**attempt))
        raise BackendUnavailableError(f"TGI at {self.base_url} failed after {self.max_retries + 1} attempts: {error}")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        adapter_id: str | None = None,
        max_new_tokens: int | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if kwargs:
            raise TypeError(f"unsupported generation arguments: {sorted(kwargs)}")
        try:
            params = GenerateParams(adapter_id=adapter_id, max_new_tokens=self.max_new_tokens
                                    if max_new_tokens is None else max_new_tokens, stop=list(stop or []))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(f"invalid TGI parameter {'.'.join(map(str, first['loc']))}: {first['msg']} "
                             f"(got {first.get('input')!r})") from exc
        text = self.generate_text(self.format_prompt(messages), params)
        message = AIMessage(content=text.strip(), response_metadata={"adapter_id": adapter_id, "backend": "tgi"})
        return ChatResult(generations=[ChatGeneration(message=message)])
