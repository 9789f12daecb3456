"""Copy-constrained decoding on the bundled tokenizer: numbers only as the passages write them."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from domainroute.agents.copy_constraint import NumberCopyProcessor, money_numbers, passage_numbers
from domainroute.settings import BUNDLED_BASE_MODEL

pytestmark = pytest.mark.unit

PASSAGES = ["The collision deductible is $1,500 and you have 30 days to report. Call 1-800-555-0142.",
            "Glass claims have no deductible; rental cars are paid up to $40 a day."]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(BUNDLED_BASE_MODEL))


def allowed_after(tokenizer, generated: str, passages=PASSAGES) -> set[str]:
    prompt = tokenizer.encode("<|assistant|>\n", add_special_tokens=False)
    ids = torch.tensor([prompt + tokenizer.encode(generated, add_special_tokens=False)])
    processor = NumberCopyProcessor(tokenizer, [passages], len(prompt))
    scores = processor(ids, torch.zeros(1, len(tokenizer)))
    return {tokenizer.decode([i]) for i in torch.isfinite(scores[0]).nonzero().flatten().tolist()}


def test_numbers_in_passages_as_written():
    assert {"1,500", "30", "1-800-555-0142".split("-")[0], "800", "555", "0142", "40"} <= passage_numbers(PASSAGES)
    assert money_numbers(PASSAGES) == {"1,500", "40"}


def test_a_started_number_must_complete_to_a_passage_number(tokenizer):
    allowed = allowed_after(tokenizer, "Your deductible is $1,")
    assert "5" in allowed or "500" in allowed
    assert not {"9", "2", " days", "."} & allowed  # "$1,9..." is no passage amount; "$1," cannot stop here


def test_an_amount_after_a_dollar_sign_is_a_passage_amount(tokenizer):
    allowed = allowed_after(tokenizer, "Rental is paid up to $")
    assert "4" in allowed or "40" in allowed
    assert "3" not in allowed and "30" not in allowed  # 30 is a number of days there, not an amount


def test_a_citation_names_a_passage_that_states_the_line_facts(tokenizer):
    assert "2" not in allowed_after(tokenizer, "Your deductible is $1,500. [")
    assert "1" in allowed_after(tokenizer, "Your deductible is $1,500. [")
    assert "2" in allowed_after(tokenizer, "Rental cars are paid up to $40 a day. [")
    assert "3" not in allowed_after(tokenizer, "Glass has no deductible. [")  # only two passages were given


def test_words_stay_free_and_new_numbers_must_start_a_passage_number(tokenizer):
    allowed = allowed_after(tokenizer, "Your deductible")
    assert " is" in allowed and len(allowed) > len(tokenizer) // 2
    after_space = allowed_after(tokenizer, "You have ")
    assert "3" in after_space or "30" in after_space
    assert "9" not in after_space and "7" not in after_space  # no passage number starts with 9 or 7
