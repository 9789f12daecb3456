"""Quote-constrained decoding on the bundled tokenizer: a house format's quoted line is a passage sentence,
verbatim, cited to the passage that shows it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from domainroute.adapters.dataset import MAX_SENTENCE_WORDS, quotable
from domainroute.adapters.templates import house_format
from domainroute.agents.copy_constraint import NumberCopyProcessor, QuoteProcessor
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
    (first, *_) = tokenizer.encode(" within 10 business days. [2]", add_special_tokens=False)
    assert allowed == {tokenizer.decode([first])}
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


def _greedy_line(tokenizer, label: str, quotes, seed: int) -> tuple[str, list[int]]:
    """Decode greedily from ``label`` with random scores under the constraint; (line, token ids written after it).
    Works on token ids, as generation does (a byte token alone decodes to a replacement character)."""
    rng = torch.Generator().manual_seed(seed)
    targets = {f"{label} {s} [{n}]" for n, s in quotes}
    prompt = tokenizer.encode("<|assistant|>\n", add_special_tokens=False)
    ids = prompt + tokenizer.encode(label, add_special_tokens=False)
    processor = QuoteProcessor(tokenizer, [quotes], LABELS, len(prompt))
    start = len(ids)
    for _ in range(80):
        scores = processor(torch.tensor([ids]), torch.rand(1, len(tokenizer), generator=rng))
        ids.append(int(scores[0].argmax()))
        text = tokenizer.decode(ids[len(prompt):])
        if text in targets:
            break
    return text, ids[start:]


def test_greedy_decoding_under_random_scores_writes_a_quote_verbatim(tokenizer):
    """Whatever the model prefers, the line it writes after a label is one of the quotes, cited, in exactly the
    tokens the tokenizer would use for it."""
    targets = {f"Due date: {s} [{n}]" for n, s in QUOTES}
    for seed in range(10):
        text, ids = _greedy_line(tokenizer, "Due date:", QUOTES, seed)
        assert text in targets
        assert ids == tokenizer.encode(text[len("Due date:"):], add_special_tokens=False)


def test_characters_split_into_byte_tokens_are_quoted_exactly(tokenizer):
    quotes = [(1, "Your refund is $720 − $72 = $648."), (2, "The café fee is 3 × the base fee.")]
    assert any(tokenizer.decode([i]) == "\ufffd" for i in tokenizer.encode(" − é ×", add_special_tokens=False))
    seen = set()
    for seed in range(6):
        text, _ = _greedy_line(tokenizer, "Timeline:", quotes, seed)
        assert text in {f"Timeline: {s} [{n}]" for n, s in quotes}
        seen.add(text)
    assert len(seen) == 2  # both sentences get chosen under different preferences


def test_finished_rows_and_lines_that_leave_the_label_are_not_constrained(tokenizer):
    done = "Timeline: The late fee is $20 after the 15-day grace period. [1]<|end|><|pad|><|pad|>"
    scores, processor = _run(tokenizer, done, torch.zeros(1, len(tokenizer)))
    assert bool(torch.isfinite(scores).all()) and processor.departed == 0  # its quote is complete
    scores, processor = _run(tokenizer, "Due date:**", torch.zeros(1, len(tokenizer)))
    assert bool(torch.isfinite(scores).all()) and processor.departed == 1  # ":**" is one token: no quote follows


def test_each_row_of_a_left_padded_batch_has_its_own_quotes(tokenizer):
    pad = tokenizer.pad_token_id
    prompts = [tokenizer.encode("<|assistant|>\n", add_special_tokens=False),
               tokenizer.encode("<|user|>\nhi\n<|assistant|>\n", add_special_tokens=False)]
    width = max(map(len, prompts))
    label = tokenizer.encode("Timeline:", add_special_tokens=False)
    ids = torch.tensor([[pad] * (width - len(p)) + p + label for p in prompts])
    rows = [[(1, "Refunds are issued within 10 business days.")], [(1, "The late fee is $20.")]]
    processor = QuoteProcessor(tokenizer, rows, LABELS, width)
    scores = processor(ids, torch.zeros(2, len(tokenizer)))
    allowed = [{tokenizer.decode([i]) for i in torch.isfinite(r).nonzero().flatten().tolist()} for r in scores]
    assert allowed == [{" Refunds"}, {" The"}]


def test_the_quote_decides_its_citation_when_both_processors_run(tokenizer):
    """The number constraint would send a fact-free line's citation elsewhere; on a quoted line it defers."""
    passages = ["The late fee is $20 after the grace period.", "Refunds go back to the card you paid with."]
    quotes = [(1, "The late fee is $20 after the grace period."), (2, "Refunds go back to the card you paid with.")]
    text = "Amount: $20\nDue date: Refunds go back to the card you paid with. ["
    prompt = tokenizer.encode("<|assistant|>\n", add_special_tokens=False)
    ids = torch.tensor([prompt + tokenizer.encode(text, add_special_tokens=False)])
    scores = torch.zeros(1, len(tokenizer))
    for processor in (NumberCopyProcessor(tokenizer, [passages], len(prompt), quote_labels=LABELS, quotes=[quotes]),
                      QuoteProcessor(tokenizer, [quotes], LABELS, len(prompt))):
        scores = processor(ids, scores)
    assert {tokenizer.decode([i]) for i in torch.isfinite(scores[0]).nonzero().flatten().tolist()} == {"2"}
    # after the quote, the line is the number constraint's again: a later citation names the passage of its $20
    later = "Due date: Refunds go back to the card you paid with. [2] and the $20 fee ["
    ids = torch.tensor([prompt + tokenizer.encode(later, add_special_tokens=False)])
    scores = NumberCopyProcessor(tokenizer, [passages], len(prompt), quote_labels=LABELS, quotes=[quotes])(
        ids, torch.zeros(1, len(tokenizer)))
    assert "1" in {tokenizer.decode([i]) for i in torch.isfinite(scores[0]).nonzero().flatten().tolist()}
    assert not bool(torch.isfinite(scores[0, tokenizer.encode("2", add_special_tokens=False)[0]]))
    # without the labels the number constraint alone would send it to the passage of the uncited $20
    alone = NumberCopyProcessor(tokenizer, [passages], len(prompt))(ids, torch.zeros(1, len(tokenizer)))
    assert not bool(torch.isfinite(alone[0, tokenizer.encode("2", add_special_tokens=False)[0]]))


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
