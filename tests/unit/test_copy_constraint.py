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


def greedy_pick(tokenizer, generated: str, preferred: list[str], passages=PASSAGES) -> str:
    """The token greedy decoding takes after ``generated`` when the model ranks ``preferred`` first, in order."""
    prompt = tokenizer.encode("<|assistant|>\n", add_special_tokens=False)
    ids = torch.tensor([prompt + tokenizer.encode(generated, add_special_tokens=False)])
    scores = torch.zeros(1, len(tokenizer))
    for rank, token in enumerate(preferred):
        (token_id,) = tokenizer.encode(token, add_special_tokens=False)  # each preference is one token
        scores[0, token_id] = 100.0 - rank
    processor = NumberCopyProcessor(tokenizer, [passages], len(prompt))
    return tokenizer.decode([int(processor(ids, scores)[0].argmax())])


def test_a_duration_must_be_one_a_passage_states(tokenizer):
    passages = ["A late fee of $30 applies. Reinstatement is possible within 15 days of cancellation."]
    # 30 is a passage number, but no passage gives 30 days: the unit is refused, the next choice taken
    assert greedy_pick(tokenizer, "You have 30", [" days", " of"], passages) == " of"
    assert greedy_pick(tokenizer, "You have 15", [" days", " of"], passages) == " days"


def test_a_date_must_be_one_a_passage_states(tokenizer):
    passages = ["The renewal premium (installment 1 of 2) is due on January 15, 2027."]
    # 1 is a passage number and "January 1" may still grow into "January 15"; closing it as January 1 is refused
    assert greedy_pick(tokenizer, "It is due January 1", [",", "5"], passages) == "5"
    assert greedy_pick(tokenizer, "It is due January 15", [",", "."], passages) == ","


def test_no_dollar_sign_without_a_passage_amount(tokenizer):
    passages = ["Payments are due on the 15th of each month; a grace period of 10 days applies."]
    assert greedy_pick(tokenizer, "The fee is", [" $", " not"], passages) == " not"
    assert greedy_pick(tokenizer, "The fee is $", ["%", "1"], PASSAGES) == "1"  # "$%" never; $1,500 is an amount


def test_the_sources_line_cites_a_passage_stating_the_answer_facts(tokenizer):
    answer = "Amount: $40 a day for a rental car.\nSources: ["
    assert "2" in allowed_after(tokenizer, answer) and "1" not in allowed_after(tokenizer, answer)
    covered = "Amount: $40 a day for a rental car. [2]\nSources: ["
    assert "2" in allowed_after(tokenizer, covered) and "1" not in allowed_after(tokenizer, covered)  # the cited one
    factless = "Glass claims need photos. [1]\nSources: ["  # no facts at all: a passage the answer cites
    assert "1" in allowed_after(tokenizer, factless) and "2" not in allowed_after(tokenizer, factless)
    assert {"1", "2"} <= allowed_after(tokenizer, "Glass claims need photos.\nSources: [")  # none cited yet: any
    assert {"1", "2"} <= allowed_after(tokenizer, "Glass claims need photos. [1]\nKeep receipts. [")  # not Sources


def test_a_line_whose_facts_no_one_passage_states_cites_the_passage_stating_most(tokenizer):
    # $1,500 and 30 days are in passage 1, $40 in passage 2: passage 1 states two of the line's three facts
    line = "Pay $1,500 within 30 days, and $40 a day for a rental. ["
    assert "1" in allowed_after(tokenizer, line) and "2" not in allowed_after(tokenizer, line)
    # the Sources line then cites what is still uncovered: the $40 of passage 2
    answer = line + "1]\nSources: ["
    assert "2" in allowed_after(tokenizer, answer) and "1" not in allowed_after(tokenizer, answer)
