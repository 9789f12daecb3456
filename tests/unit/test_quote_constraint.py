"""Quote-constrained decoding on the bundled tokenizer: a house format's quoted line is a passage sentence,
verbatim, cited to the passage that shows it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from domainroute.adapters.dataset import MAX_SENTENCE_WORDS, quotable
from domainroute.adapters.templates import house_format
from domainroute.agents.copy_constraint import QuoteProcessor
from domainroute.schemas import Passage
from domainroute.settings import BUNDLED_BASE_MODEL

pytestmark = pytest.mark.unit

QUOTES = [(1, "The late fee is $20 after the 15-day grace period."),
          (2, "Refunds are issued within 10 business days."),
          (2, "Refunds go back to the card you paid with.")]
LABELS = ("Due date:", "Timeline:")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(BUNDLED_BASE_MODEL))


def _run(tokenizer, generated: str, scores: torch.Tensor, quotes=QUOTES) -> tuple[torch.Tensor, QuoteProcessor]:
    prompt = tokenizer.encode("<|assistant|>\n", add_special_tokens=False)
    ids = torch.tensor([prompt + tokenizer.encode(generated, add_special_tokens=False)])
    processor = QuoteProcessor(tokenizer, [quotes], LABELS, len(prompt))
    return processor(ids, scores), processor


def allowed_after(tokenizer, generated: str) -> set[str]:
    scores, _ = _run(tokenizer, generated, torch.zeros(1, len(tokenizer)))
    return {tokenizer.decode([i]) for i in torch.isfinite(scores[0]).nonzero().flatten().tolist()}


def test_after_the_label_only_the_first_token_of_a_quotable_sentence(tokenizer):
    assert allowed_after(tokenizer, "Timeline:") == {" The", " Refunds"}


def test_inside_a_quote_only_the_tokenizers_own_continuation(tokenizer):
    allowed = allowed_after(tokenizer, "Timeline: Refunds are issued")
    assert allowed == {tokenizer.decode([tokenizer.encode(" within 10 business days. [2]", add_special_tokens=False)[0]])}
    # two sentences share "Refunds": both continuations stay open until they part
    assert len(allowed_after(tokenizer, "Timeline: Refunds")) == 2


def test_the_quote_ends_with_the_citation_of_its_own_passage(tokenizer):
    assert allowed_after(tokenizer, "Due date: Refunds are issued within 10 business days.") == {" ["}
    assert allowed_after(tokenizer, "Due date: Refunds are issued within 10 business days. [") == {"2"}
    assert allowed_after(tokenizer, "Due date: The late fee is $20 after the 15-day grace period. [") == {"1"}


def test_other_lines_and_finished_quotes_are_free(tokenizer):
    for text in ("Amount:", "Sources: [", "Due date: Refunds are issued within 10 business days. [2]",
                 "Due date: Refunds are issued within 10 business days. [2]\nAmount: $"):
        scores, _ = _run(tokenizer, text, torch.zeros(1, len(tokenizer)))
        assert bool(torch.isfinite(scores).all()), text


def test_greedy_decoding_under_random_scores_writes_a_quote_verbatim(tokenizer):
    """Whatever the model prefers, the line it writes after a label is one of the quotes, cited, token-efficient."""
    rng = torch.Generator().manual_seed(3)
    targets = {f"Due date: {s} [{n}]" for n, s in QUOTES}
    for _ in range(10):
        text = "Due date:"
        for _ in range(60):
            scores = torch.rand(1, len(tokenizer), generator=rng)
            out, _ = _run(tokenizer, text, scores)
            text += tokenizer.decode([int(out[0].argmax())])
            if text in targets:
                break
        assert text in targets
        written = tokenizer.encode(text[len("Due date:"):], add_special_tokens=False)
        assert len(written) <= len(tokenizer.encode(" " + text.split(" ", 2)[2], add_special_tokens=False)) + 2


def test_when_no_allowed_token_has_a_finite_score_the_row_is_left_alone(tokenizer):
    scores = torch.zeros(1, len(tokenizer))
    for token in (" The", " Refunds"):
        scores[0, tokenizer.encode(token, add_special_tokens=False)[0]] = float("-inf")  # banned by another rule
    out, processor = _run(tokenizer, "Timeline:", scores.clone())
    assert processor.relaxed == 1
    assert torch.equal(out, scores)


def test_quotable_gives_every_shown_sentence_clipped_with_its_passage_number():
    long = " ".join(["word"] * (MAX_SENTENCE_WORDS + 10)) + ", and more words here."
    common = dict(line="billing", doc_type="faq", effective_date="2026-01-01", tenant="northwind")
    passages = [Passage(chunk_id="a@v1#000", doc_id="a", title="Billing terms", section="Late fees",
                        text="Late fees\nThe late fee is $20. It is charged once per bill.", **common),
                Passage(chunk_id="b@v1#000", doc_id="b", title="FAQ", section="Long", text=f"Long\n{long}", **common)]
    quotes = quotable("late fee", passages)
    assert (1, "The late fee is $20.") in quotes and (1, "It is charged once per bill.") in quotes
    (second,) = [s for n, s in quotes if n == 2]
    assert len(second.split()) <= MAX_SENTENCE_WORDS and second.endswith(".")


def test_every_house_format_names_its_quoted_line():
    assert house_format("billing").quote_labels == ("Due date:", "Timeline:")
    assert house_format("health").quote_labels == ("Plan rule:",)
    assert house_format("auto").quote_labels == house_format("home").quote_labels == ("1.",)
