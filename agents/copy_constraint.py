"""Copy-constrained decoding: every number the model writes is one its passages state.

A small model learns a domain's answer format quickly but not to copy the right figure (FACTS.md; the adapters
evaluation measures it). This logits processor makes the copying mechanical: while generating, any run of digits
the model starts must complete to a number written in that request's passages, as written there (``1,500``,
``2026``, ``0142``). Three contexts have their own numbers: a citation ``[n]`` may only name a passage that was
given (1..len(passages)) and, when one does, a passage that states every amount, date and duration of that line
(``adapters/templates.facts``), or else the most of them; a number after ``$`` must be an amount the passages state
after ``$``; and a number at the start of a line (a numbered step, ``1.``) may also be 1-9.

On top of the numbers, whole facts (``adapters/templates.fact_spans``: amounts, percentages, dates, durations)
must be ones a passage states: "30" may be a passage number, but "30 days" only if a passage says 30 days, and
"January 1" only if a passage gives that date. A fact is checked when the token that writes or closes it is
chosen: the highest-scoring candidates are tried in order and those that would state an unsupported fact are
banned, which is exact for greedy decoding (what the engine does). A citation on a line that states no fact
itself (``Sources: [``) must name a passage stating the answer's facts that no cited passage states yet, or, on the
``Sources:`` line when there is none, a passage the answer already cites. The citation right after a complete quote
on a quoted line (``quote_labels``, ``quotes``) is left to ``QuoteProcessor``, which cites the sentence's passage.

It constrains *which* figures appear, not *which passage* states them or whether the sentence is right: the
grounding node still checks every answer. Works with any tokenizer (tokens are decoded once, up front).

``QuoteProcessor`` goes one step further for the house format's quoted line (``Due date: <sentence> [n]``): the
sentence must be one the prompt shows, verbatim, cited to its own passage; the model only chooses which.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import torch
from transformers import LogitsProcessor

from domainroute.adapters.templates import cited_numbers, fact_spans, facts

_NUMBER = re.compile(r"\d[\d,.]*\d|\d")
_TAIL = re.compile(r"\d[\d,.]*$")
_LEAD = re.compile(r"^[\d,.]+")
_INNER = re.compile(r"\d[\d,.]*")
_MONEY = re.compile(r"\$\s?(\d[\d,.]*\d|\d)")
_MARKER = re.compile(r"\[\d*\]?")
_DOLLAR = re.compile(r"\$")
_AMOUNT_START = re.compile(r"\s?\d")
STEP_NUMBERS = frozenset(str(i) for i in range(1, 10))
FACT_CANDIDATES = 16  # top-scoring tokens tried, in order, against the fact check at each step


def passage_numbers(texts: Sequence[str]) -> frozenset[str]:
    """Every number written in ``texts``, as written (trailing ``,``/``.`` dropped)."""
    return frozenset(m.rstrip(",.") for text in texts for m in _NUMBER.findall(text))


def money_numbers(texts: Sequence[str]) -> frozenset[str]:
    """The numbers written right after a ``$`` in ``texts``."""
    return frozenset(m.group(1).rstrip(",.") for text in texts for m in _MONEY.finditer(text))




def quote_label(line: str, labels: Sequence[str]) -> str | None:
    """The quote label ``line`` starts with (``Due date:``), or None."""
    return next((label for label in labels if line.startswith(label)), None)


@lru_cache(maxsize=8)
def _token_table(tokenizer) -> tuple[list[str], torch.Tensor, list[int]]:
    """Decoded text of every token; a mask of tokens that can continue a number; the ids that contain a digit."""
    size = len(tokenizer)
    texts = [tokenizer.decode([i]) for i in range(size)]
    cont = torch.tensor([bool(_LEAD.match(t)) for t in texts], dtype=torch.bool)
    digit_ids = [i for i, t in enumerate(texts) if any(c.isdigit() for c in t) and not _LEAD.match(t)]
    return texts, cont, digit_ids


class NumberCopyProcessor(LogitsProcessor):
    """A ``transformers`` logits processor (batch rows may have different passages).

    ``sources[b]``: the passage texts of row ``b``; ``prompt_width``: the (left-padded) prompt length, so the
    generated part of each row is ``input_ids[b, prompt_width:]``.
    """

    def __init__(self, tokenizer, sources: Sequence[Sequence[str]], prompt_width: int,
                 quote_labels: Sequence[str] = (), quotes: Sequence[Sequence[tuple[int, str]]] | None = None):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        # quoted lines (QuoteProcessor): the citation right after a complete quote is the quote's own passage
        self.quote_labels = tuple(quote_labels)
        self.quote_heads = [frozenset(f" {s} [" for _, s in row) for row in quotes] if quotes else None
        self.numbers = [passage_numbers(texts) for texts in sources]
        self.money = [money_numbers(texts) for texts in sources]
        self.per_passage = [[facts(t, supported=True) for t in texts] for texts in sources]
        self.citations = [frozenset(str(i) for i in range(1, len(texts) + 1)) for texts in sources]
        self.known_facts = [frozenset().union(*row) for row in self.per_passage]  # any passage of the row
        self.texts, self.cont, self.digit_ids = _token_table(tokenizer)
        self.cont_ids = self.cont.nonzero().flatten().tolist()
        self.relaxed = 0  # steps where no token satisfied the constraint (then the row is left unconstrained)
        self.fact_relaxed = 0  # steps where none of the top FACT_CANDIDATES tokens passed the fact check

    # -- what a number may be, by the text before it ----------------------------------------------------------
    def _allowed(self, row: int, before: str) -> frozenset[str]:
        if before.endswith("["):  # cite a passage stating every fact of this line (else the most of them)
            if (row, before) not in self._cite_memo:  # asked once per candidate token: extract the facts once
                line = before.rsplit("\n", 1)[-1]
                label = quote_label(line, self.quote_labels)
                if label is not None and self.quote_heads and line[len(label):] in self.quote_heads[row]:
                    self._cite_memo[(row, before)] = self.citations[row]  # QuoteProcessor cites the quote's passage
                    return self.citations[row]
                stated = facts(_MARKER.sub("", line))
                if not stated:  # e.g. "Sources: [": the answer's facts that no cited passage states yet
                    cited = [n for n in cited_numbers(before) if 1 <= n <= len(self.per_passage[row])]
                    covered = set().union(*(self.per_passage[row][n - 1] for n in cited))
                    stated = facts(_MARKER.sub("", before)) - covered
                    if not stated and cited and line.startswith("Sources:"):  # nothing left: one already cited
                        self._cite_memo[(row, before)] = frozenset(str(n) for n in cited)
                        return self._cite_memo[(row, before)]
                overlap = [len(stated & known) for known in self.per_passage[row]]
                best = max(overlap, default=0)  # every fact if one passage states them all, else the most
                fitting = frozenset(str(i + 1) for i, n in enumerate(overlap) if n == best and best > 0)
                self._cite_memo[(row, before)] = fitting or self.citations[row]
            return self._cite_memo[(row, before)]
        if before == "" or before.endswith("\n"):
            return self.numbers[row] | STEP_NUMBERS
        if before.rstrip(" ").endswith("$"):
            return self.money[row] or self.numbers[row]
        return self.numbers[row]

    @staticmethod
    def _complete(number: str, allowed: frozenset[str]) -> bool:
        return number.rstrip(",.") in allowed

    @staticmethod
    def _prefix(number: str, allowed: frozenset[str]) -> bool:
        return number.rstrip(",.") in allowed or any(a.startswith(number) for a in allowed)

    def _ok_new(self, row: int, before: str, token: str) -> bool:
        """A token that starts fresh numbers inside it: each must fit (the last may be unfinished)."""
        matches = list(_INNER.finditer(token))
        for k, m in enumerate(matches):
            allowed = self._allowed(row, before + token[: m.start()])
            last_open = k == len(matches) - 1 and m.end() == len(token)
            if not (self._prefix(m.group(), allowed) if last_open else self._complete(m.group(), allowed)):
                return False
        return True

    # -- whole facts -----------------------------------------------------------------------------------------
    def _facts_fit(self, row: int, line: str, token: str) -> bool:
        """Does appending ``token`` to ``line`` keep every fact it writes or closes one the passages state?

        A fact still open at the end (``$1,5``, ``January 1``) only has to start a passage fact."""
        text = line + token
        known = self.known_facts[row]
        for sign in _DOLLAR.finditer(text, max(len(line) - 1, 0)):  # "$" goes on to a passage amount or not at all
            after = text[sign.end():]
            if (after.strip() == "" and not any(k.startswith("$") for k in known)) or \
                    (after.strip() != "" and not _AMOUNT_START.match(after)):
                return False
        for fact, start, end in fact_spans(text):
            if end < len(line) - 1:
                continue  # written and checked before this token
            tail = text[end:]
            if tail == "":  # may still grow: "$1,5" -> "$1,500", "January 1" -> "January 15"
                fits = any(k.startswith(fact) for k in known)
            elif tail in (",", "."):  # closed, or growing: "$20." -> "$20.50", "January 15," -> "January 15, 2027"
                fits = fact in known or any(k.startswith(fact + tail) for k in known)
            else:
                fits = fact in known
            if not fits:
                return False
        return True

    def _guard_facts(self, row: int, text: str, row_scores: torch.FloatTensor) -> None:
        line = text.rsplit("\n", 1)[-1]
        for i in torch.topk(row_scores, k=min(FACT_CANDIDATES, row_scores.shape[0])).indices.tolist():
            if not bool(torch.isfinite(row_scores[i])) or self._facts_fit(row, line, self.texts[i]):
                return
            row_scores[i] = float("-inf")
        self.fact_relaxed += 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._cite_memo: dict[tuple[int, str], frozenset[str]] = {}
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row, self.prompt_width:], skip_special_tokens=True)
            banned = torch.zeros(scores.shape[1], dtype=torch.bool)
            tail = _TAIL.search(text)
            if tail is not None:
                number, before = tail.group(), text[: tail.start()]
                allowed = self._allowed(row, before)
                if not self._complete(number, allowed):  # the number must go on: only continuations
                    banned[:] = True
                    banned[self.cont_ids] = False
                for i in self.cont_ids:
                    token = self.texts[i]
                    lead = _LEAD.match(token).group()
                    rest = token[len(lead):]
                    grown = number + lead
                    fits = self._complete(grown, allowed) if rest else self._prefix(grown, allowed)
                    if fits and rest and any(c.isdigit() for c in rest):
                        fits = self._ok_new(row, before + grown, rest)
                    banned[i] = not fits
            else:
                for i in self.cont_ids:  # a token starting with digits starts a number here
                    token = self.texts[i]
                    banned[i] = bool(re.match(r"^\d", token)) and not self._ok_new(row, text, token)
            for i in self.digit_ids:
                if not banned[i]:
                    banned[i] = not self._ok_new(row, text, self.texts[i])
            if bool(banned.all()):
                self.relaxed += 1
                continue
            scores[row, banned] = float("-inf")
            self._guard_facts(row, text, scores[row])
        return scores


class QuoteProcessor(LogitsProcessor):
    """Quoted lines: on a line that opens with one of ``labels`` (``Due date:``, ``Plan rule:``), the rest of the
    line must be one of the row's quotable sentences followed by `` [n]``, n the passage that shows it.

    ``quotes[b]``: (passage number, sentence) pairs of row ``b`` (``adapters/dataset.quotable``: the sentences the
    prompt shows, clipped as the reference answers clip them). The model still chooses which sentence (greedily,
    token by token); it cannot change one. Once a quote is complete the rest of the line is free.

    Matching is on token ids: each target `` <sentence> [n]`` is encoded once, and the tokens written since the label
    must be a prefix of one target's encoding, so the quote takes as few tokens as the tokenizer would use and a
    character split into several byte tokens (``−``, ``é``) is followed exactly. Targets are encoded on their own: a
    byte-level BPE tokenizer (the bundled model, GPT-2, Llama 3, Qwen) encodes them as it would mid-text; one that
    marks word starts (SentencePiece's ``▁``) may write an extra space at the start of the quote.
    """

    def __init__(self, tokenizer, quotes: Sequence[Sequence[tuple[int, str]]], labels: Sequence[str],
                 prompt_width: int):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.labels = tuple(labels)
        self.targets = [sorted({f" {s} [{n}]" for n, s in row}) for row in quotes]
        self.target_ids = [[tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in row]
                           for row in self.targets]
        self.relaxed = 0  # steps where every allowed token had been banned by another processor (row left alone)
        self.departed = 0  # steps on a labelled line that follows no quote (e.g. "Due date:**"): left unconstrained

    def _quote_length(self, row: int, generated: list[int], label: str) -> int | None:
        """How many of the last generated tokens are the quote so far: the largest m such that they start one of
        the row's targets and the text before them ends with a line that is exactly ``label``; None if none fits."""
        fits = {m for target in self.target_ids[row] for m in range(min(len(target), len(generated)) + 1)
                if tuple(generated[len(generated) - m:]) == target[:m]}
        for m in sorted(fits, reverse=True):
            before = self.tokenizer.decode(generated[:len(generated) - m], skip_special_tokens=True)
            if before.rsplit("\n", 1)[-1] == label:
                return m
        return None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(input_ids.shape[0]):
            generated = input_ids[row, self.prompt_width:].tolist()
            line = self.tokenizer.decode(generated, skip_special_tokens=True).rsplit("\n", 1)[-1]
            label = quote_label(line, self.labels)
            if label is None or any(line[len(label):].startswith(t) for t in self.targets[row]):
                continue  # not a quoted line, or its quote is complete
            m = self._quote_length(row, generated, label)
            if m is None:
                self.departed += 1
                continue
            written = tuple(generated[len(generated) - m:])
            allowed = sorted({t[m] for t in self.target_ids[row] if len(t) > m and t[:m] == written})
            ids = torch.tensor(allowed, dtype=torch.long)
            if not ids.numel() or not bool(torch.isfinite(scores[row, ids]).any()):
                self.relaxed += 1
                continue
            keep = scores[row, ids].clone()
            scores[row, :] = float("-inf")
            scores[row, ids] = keep
        return scores
