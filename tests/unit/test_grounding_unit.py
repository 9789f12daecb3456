"""Grounding without a model: fact extraction, normalisation, the support check, the extractive answer, and the
ground node's four actions on the graph with fakes."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from domainroute.graphs.context import AgentContext
from domainroute.graphs.graph import build_graph
from domainroute.graphs.grounding import (
    best_sentences,
    check_answer,
    extract_facts,
    extractive_answer,
    normalise,
    parse_number,
    passage_sentences,
    sentence_spans,
    wanted_kinds,
)
from domainroute.graphs.state import turn_input
from domainroute.pack import load_pack
from domainroute.settings import BUNDLED_PACK
from tests.fakes import KeywordRouter, ListRetriever, ScriptedChatModel, WordPolicy, passage

pytestmark = pytest.mark.unit


# ---- normalisation: equal keys ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variants", "key"),
    [
        (["$1,000", "1000 dollars", "$1000.00", "1,000 dollars", "USD 1,000", "one thousand dollars", "$1k"], "money:1000"),
        (["$1.5 million", "$1,500,000", "1.5 million dollars"], "money:1500000"),
        (["$0", "$0.00", "zero dollars"], "money:0"),
        (["$0.60", "$.60"], "money:0.6"),
        (["$250", "two hundred fifty dollars", "250 dollars"], "money:250"),
        (["$40.50", "40.50 dollars"], "money:40.5"),
        (["20%", "20 percent", "twenty percent", "20 per cent", "20.0%"], "percent:20"),
        (["16.7%"], "percent:16.7"),
        (["30 days", "thirty days", "30-day", "thirty-day", "30 calendar days", "thirty (30) days"], "duration:30:day"),
        (["2 weeks", "two weeks", "14 days"], "duration:14:day"),
        (["1 year", "one year", "12 months", "twelve months", "12-month"], "duration:12:month"),
        (["2 years", "24 months", "two-year"], "duration:24:month"),
        (["7 business days", "seven business days", "7 working days", "7-business-day"], "duration:7:business_day"),
        (["48 hours", "48-hour", "forty-eight hours"], "duration:48:hour"),
        (["45 days", "forty-five days", "forty five days"], "duration:45:day"),
        (["365 days", "three hundred sixty-five days"], "duration:365:day"),
        (["90 minutes", "ninety minutes"], "duration:90:minute"),
        (["January 5, 2026", "Jan. 5th 2026", "5 January 2026", "2026-01-05", "1/5/2026", "01/05/2026",
          "January 5th, 2026", "5th of January 2026", "Jan 5 2026", "1/5/26"], "date:2026-01-05"),
        (["March 10", "Mar 10", "10 March", "March 10th"], "date:--03-10"),
        (["January 2026", "Jan 2026"], "date:2026-01"),
        (["September 30, 2025", "Sept 30, 2025", "Sep. 30 2025"], "date:2025-09-30"),
        (["11:59 p.m.", "11:59 pm", "11:59PM"], "time:23:59"),
        (["8 a.m.", "8:00 a.m.", "8am", "8 AM"], "time:08:00"),
        (["12:01 a.m."], "time:00:01"),
        (["noon", "12 p.m."], "time:12:00"),
        (["1-800-555-0142", "(800) 555-0142", "800-555-0142", "800.555.0142", "+1 800 555 0142", "1 (800) 555-0142"],
         "phone:8005550142"),
        (["Form NW-A12", "NW-A12"], "form:NW-A12"),
        (["Form NW-PA-100", "NW-PA-100"], "form:NW-PA-100"),
        (["P.O. Box 4410", "PO Box 4410", "P. O. Box 4410", "p.o. box 4410"], "address:po box 4410"),
        (["4500 Meridian Parkway", "4500 Meridian Pkwy"], "address:4500 meridian parkway"),
        (["claims.northwind.example", "https://claims.northwind.example/", "www.claims.northwind.example"],
         "address:claims.northwind.example"),
        (["Coverage A", "coverage A"], "coverage:a"),
        (["Collision coverage", "collision coverage"], "coverage:collision"),
    ],
)
def test_variants_normalise_to_one_key(variants, key):
    for text in variants:
        assert normalise(text) == [key], text


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Lakeport, MN 55901", "address:lakeport mn 55901"),
        ("Columbus Falls, OH 43299-1234", "address:columbus falls oh 43299"),
        ("recovery@northwind.example", "address:recovery@northwind.example"),
        ("northwind.example/complaints", "address:northwind.example/complaints"),
        ("uninsured motorist coverage", "coverage:uninsured motorist"),
        ("Form HM-PA-2000", "form:HM-PA-2000"),
    ],
)
def test_more_kinds(text, key):
    assert normalise(text) == [key]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("$1,000", "$100"), ("$1,500", "$1,200"), ("30 days", "30 business days"), ("30 days", "30 months"),
        ("48 hours", "2 days"), ("20%", "$20"), ("January 5, 2026", "January 5, 2025"), ("1-800-555-0142", "1-800-555-0147"),
        ("Form NW-A12", "Form NW-A14"), ("P.O. Box 4410", "P.O. Box 4400"), ("8 a.m.", "8 p.m."),
        ("Coverage A", "Coverage C"), ("March 10", "October 3"),
    ],
)
def test_different_facts_have_different_keys(a, b):
    assert normalise(a) != normalise(b)


@pytest.mark.parametrize(
    "text",
    [
        "$50 a day",  # "a day" is not a duration
        "Call us any day of the week.",
        "We may review your claim.",  # "may" is not a month
        "It applies to 1/12 of the premium.",  # a fraction, not a date
        "The late fee is charged on day 16.",
        "Send three photos and one estimate.",
        "We never charge a fee for paperless billing.",
        "Page 2 of 3.",
    ],
)
def test_no_false_facts(text):
    found = [(f.kind, f.text) for f in extract_facts(text) if f.kind != "money"]
    assert found == [], found


def test_money_in_a_day_rate_is_only_money():
    assert [(f.kind, f.key) for f in extract_facts("$50 a day")] == [("money", "money:50")]


def test_extraction_finds_every_fact_in_order_without_overlap():
    text = ("Pay $50 per day up to $1,500 within 60 days; call 1-800-555-0142 by 8 p.m., or mail Form NW-A20 to "
            "P.O. Box 4410, Lakeport, MN 55901 by January 31, 2026. Coinsurance is 20%.")
    facts = extract_facts(text)
    assert [f.key for f in facts] == [
        "money:50", "money:1500", "duration:60:day", "phone:8005550142", "time:20:00", "form:NW-A20",
        "address:po box 4410", "address:lakeport mn 55901", "date:2026-01-31", "percent:20"]
    assert all(a.end <= b.start for a, b in zip(facts, facts[1:]))
    assert all(text[f.start:f.end].strip() == f.text for f in facts)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1,500", 1500), ("2.5", 2.5), ("thirty", 30), ("forty-five", 45), ("two hundred fifty", 250),
     ("a thousand", 1000), ("one hundred and five", 105), ("twelve", 12), ("ninety nine", 99)],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_number_rejects_words():
    with pytest.raises(ValueError, match="not a number"):
        parse_number("several")


# ---- sentences -----------------------------------------------------------------------------------------
def test_sentence_spans_keep_abbreviations_and_trailing_markers():
    text = "Mail it to P.O. Box 4410 by 5 p.m. Central. [1] Then call us. It is $1,000.00 total [2]."
    parts = [text[s:e].strip() for s, e in sentence_spans(text)]
    assert parts == ["Mail it to P.O. Box 4410 by 5 p.m. Central. [1]", "Then call us.", "It is $1,000.00 total [2]."]


def test_passage_sentences_skip_heading_and_split_bullets():
    text = "Heading line\nFirst sentence has enough words. Second one too, with $5 in it.\n- A bullet with four words"
    assert passage_sentences(text) == ["First sentence has enough words.", "Second one too, with $5 in it.",
                                       "A bullet with four words"]


# ---- the check ------------------------------------------------------------------------------------------
def _p(chunk_id: str, text: str) -> dict:
    return passage(chunk_id, text).model_dump()


def _c(p: dict) -> dict:
    return {"doc_id": p["doc_id"], "chunk_id": p["chunk_id"], "title": p["title"]}


RENTAL = _p("auto-rental@v2#000", "Rental Reimbursement pays up to $50 per day, to a maximum of $1,500 per covered loss. "
                                  "Submit Form NW-A20 within sixty days.")
GLASS = _p("auto-glass@v1#002", "A glass replacement has a $100 deductible. Call 1-800-555-0147 at any time.")


def test_supported_facts_pass_in_any_written_form():
    answer = "It pays fifty dollars a day, up to $1500.00 [1]. Send NW-A20 within 60 days [1]."
    check = check_answer(answer, [_c(RENTAL)], [RENTAL])
    assert (check.checked, check.supported, check.ok) == (4, 4, True)


def test_a_wrong_figure_is_unsupported():
    check = check_answer("Rental pays $40 per day [1].", [_c(RENTAL)], [RENTAL])
    assert [f.text for f in check.unsupported] == ["$40"]


def test_a_fact_must_be_in_the_passage_its_sentence_cites():
    answer = "The glass deductible is $100 [1]. Rental pays $50 per day [1]."
    check = check_answer(answer, [_c(GLASS), _c(RENTAL)], [GLASS, RENTAL])
    assert [f.text for f in check.unsupported] == ["$50"]
    fixed = "The glass deductible is $100 [1]. Rental pays $50 per day [2]."
    assert check_answer(fixed, [_c(GLASS), _c(RENTAL)], [GLASS, RENTAL]).ok


def test_a_sentence_without_marker_may_use_any_cited_passage():
    answer = "The glass deductible is $100 [1]. Rental pays $50 per day."
    assert check_answer(answer, [_c(GLASS), _c(RENTAL)], [GLASS, RENTAL]).ok


def test_nothing_cited_supports_nothing():
    check = check_answer("Rental pays $50 per day.", [], [RENTAL])
    assert check.checked == 1 and not check.ok


def test_a_citation_to_a_passage_not_retrieved_supports_nothing():
    check = check_answer("Rental pays $50 per day [1].", [_c(RENTAL)], [GLASS])
    assert not check.ok


def test_an_answer_without_facts_is_trivially_ok():
    check = check_answer("Yes, glass breakage is covered [1].", [_c(GLASS)], [GLASS])
    assert (check.checked, check.ok) == (0, True)


def test_partial_dates_match_full_dates_but_not_the_reverse():
    notice = _p("notice@v1#000", "The changes take effect on January 1, 2026.")
    assert check_answer("From January 1 [1].", [_c(notice)], [notice]).ok
    assert check_answer("From January 2026 [1].", [_c(notice)], [notice]).ok
    short = _p("notice@v1#001", "The changes take effect on January 1.")
    assert not check_answer("From January 1, 2026 [1].", [_c(short)], [short]).ok


def test_coverage_names_need_a_mention():
    comp = _p("auto-comp@v1#000", "Hitting a deer is paid under Comprehensive, not Collision.")
    assert check_answer("Comprehensive coverage pays for it [1].", [_c(comp)], [comp]).ok
    assert not check_answer("Uninsured motorist coverage pays for it [1].", [_c(comp)], [comp]).ok


# ---- the extractive answer --------------------------------------------------------------------------------
def test_wanted_kinds_from_the_question():
    assert "money" in wanted_kinds("How much is the late fee?")
    assert "duration" in wanted_kinds("How long do I have to send receipts?")
    assert "phone" in wanted_kinds("What number do I call?")
    assert "form" in wanted_kinds("Which form do I use?")


@pytest.mark.parametrize(
    ("question", "kinds"),
    [("How much is the late fee?", {"money", "percent"}), ("How long do I have to send receipts?", {"duration"}),
     ("What's the Glass Line's number?", {"phone"}), ("Which form do I sign?", {"form"}),
     ("Where do I mail my check?", {"address"}), ("Is hail damage to my roof covered?", set()),
     ("How do I set up AutoPay?", set()), ("What does my EOB mean?", set())],
)
def test_asked_kinds_only_for_questions_that_ask_for_a_figure(question, kinds):
    from domainroute.graphs.grounding import asked_kinds

    assert kinds <= set(asked_kinds(question)) and (kinds or not asked_kinds(question))


def test_answers_needs_a_supported_fact_of_the_asked_kind():
    from domainroute.graphs.grounding import answers

    q = "How much does rental pay per day?"
    assert answers(q, check_answer("It pays $50 per day [1].", [_c(RENTAL)], [RENTAL]))
    assert not answers(q, check_answer("Rental is covered [1].", [_c(RENTAL)], [RENTAL]))
    assert not answers(q, check_answer("Send NW-A20 within sixty days [1].", [_c(RENTAL)], [RENTAL]))
    assert answers("Is rental covered?", check_answer("Rental is covered [1].", [_c(RENTAL)], [RENTAL]))


def test_best_sentence_answers_the_question():
    quotes = best_sentences("How much does rental reimbursement pay per day?", [GLASS, RENTAL])
    assert quotes and "$50 per day" in quotes[0].sentence and quotes[0].passage == 1


def test_extractive_answer_quotes_with_citations_and_passes_the_check():
    quoted = extractive_answer("How much does rental reimbursement pay per day?", [GLASS, RENTAL])
    assert quoted is not None
    text, citations = quoted
    assert text.splitlines()[0].startswith('According to Auto Rental [1]: "Rental Reimbursement pays up to $50 per day')
    assert citations[0]["chunk_id"] == "auto-rental@v2#000"
    assert check_answer(text, citations, [GLASS, RENTAL]).ok


def test_a_cited_passage_states_its_title():
    wording = {**_p("home-wording@v1#005", "Trees and shrubs: up to $750 for any one tree."),
               "title": "HomeGuard Homeowners Policy Wording (Form HG-3)"}
    quoted = extractive_answer("What's the most paid for any one tree?", [wording])
    assert quoted is not None and "(Form HG-3) [1]" in quoted[0]
    assert check_answer(quoted[0], quoted[1], [wording]).ok
    assert not check_answer("See Form HG-4 [1].", quoted[1], [wording]).ok


def test_no_extractive_answer_when_no_passage_answers():
    assert extractive_answer("Can I bring my cat on the plane?", [GLASS, RENTAL]) is None


# ---- the ground node on the graph -------------------------------------------------------------------------
@pytest.fixture()
def pack():
    """The bundled routes on the base model: these tests are about grounding, not adapters."""
    bundled = load_pack(BUNDLED_PACK)
    return bundled.model_copy(update={"routes": [r.model_copy(update={"adapter_id": None}) for r in bundled.routes]})


def _graph(pack, replies, passages):
    model = ScriptedChatModel(replies=replies, calls=[])
    ctx = AgentContext(pack=pack, chat_model=model, router=KeywordRouter({"rental": "auto", "joke": "out_of_scope"}),
                       retriever=ListRetriever(passages), escalation_policy=WordPolicy({"lawyer": "legal"}),
                       adapters=frozenset())
    return build_graph(pack=pack).compile(checkpointer=InMemorySaver()), ctx, model


RENTAL_P = passage("auto-rental@v2#000", "Rental Reimbursement pays up to $50 per day, to a maximum of $1,500 per "
                                         "covered loss. Submit Form NW-A20 within 60 days.")


def _run(graph, ctx, query, thread="t"):
    cfg = {"configurable": {"thread_id": thread}}
    graph.invoke(turn_input(query, None), cfg, context=ctx)
    return graph.get_state(cfg)


def test_action_none_when_every_fact_is_supported(pack):
    graph, ctx, model = _graph(pack, ["Rental pays $50 per day [1]."], [RENTAL_P])
    values = _run(graph, ctx, "how much does rental pay per day?").values
    g = values["grounding"]
    assert (g["action"], g["checked"], g["supported"], g["removed"]) == ("none", 1, 1, 0)
    assert values["answer"] == "Rental pays $50 per day [1]." and len(model.calls) == 1


def test_regenerated_when_the_retry_is_supported(pack):
    graph, ctx, model = _graph(pack, ["Rental pays $40 per day [1] [7].", "Rental pays $50 per day [1]."], [RENTAL_P])
    values = _run(graph, ctx, "how much does rental pay per day?").values
    g = values["grounding"]
    assert (g["action"], g["checked"], g["supported"], g["removed"]) == ("regenerated", 1, 0, 1)
    assert g["unsupported"] == ["$40"] and values["answer"] == "Rental pays $50 per day [1]."
    assert '"$40"' in model.calls[1]["prompt"] and "$40" not in values["answer"]
    assert [s["step"] for s in g["steps"]] == ["check", "regenerate"]


def test_a_draft_without_the_asked_figure_is_retried_and_then_quoted(pack):
    graph, ctx, model = _graph(pack, ["Rental reimbursement is available [1].", "It is a good endorsement [1]."],
                               [RENTAL_P])
    values = _run(graph, ctx, "how much does rental reimbursement pay per day?").values
    g = values["grounding"]
    assert (g["action"], g["checked"], g["supported"], g["unsupported"]) == ("extractive", 0, 0, [])
    assert g["steps"][0]["missing"] == ["amount", "percentage"]
    assert "did not give the amount or percentage" in model.calls[1]["prompt"]
    assert "$50 per day" in values["answer"]


def test_a_draft_without_figures_is_fine_when_none_is_asked(pack):
    graph, ctx, model = _graph(pack, ["Yes, rental reimbursement covers a substitute car [1]."], [RENTAL_P])
    values = _run(graph, ctx, "is a rental car covered?").values
    assert values["grounding"]["action"] == "none" and len(model.calls) == 1


def test_extractive_when_the_retry_is_still_wrong(pack):
    graph, ctx, _ = _graph(pack, ["Rental pays $40 per day [1].", "Rental pays $45 per day [1]."], [RENTAL_P])
    values = _run(graph, ctx, "how much does rental reimbursement pay per day?").values
    g = values["grounding"]
    assert g["action"] == "extractive" and g["unsupported"] == ["$40", "$45"]
    assert values["answer"].startswith('According to Auto Rental [1]: "Rental Reimbursement pays up to $50 per day')
    assert "$40" not in values["answer"] and "$45" not in values["answer"]
    assert [c["chunk_id"] for c in values["citations"]] == ["auto-rental@v2#000"]
    assert values["status"] == "answered"


def test_escalated_when_no_passage_answers_and_nothing_unsupported_is_shown(pack):
    graph, ctx, _ = _graph(pack, ["It costs $99 [1].", "It costs $98 [1]."], [RENTAL_P])
    snap = _run(graph, ctx, "rental: can I bring my cat?", thread="esc")
    values = snap.values
    assert values["grounding"]["action"] == "escalated"
    assert values["status"] == "awaiting_human" and "ungrounded" in values["escalation"]["reasons"]
    assert "$99" not in values["answer"] and values["draft"] == "" and values["citations"] == []
    packet = snap.tasks[0].interrupts[0].value
    assert "ungrounded" in packet["reasons"] and packet["grounding"]["unsupported"] == ["$99", "$98"]
    assert [w["text"] for w in packet["grounding"]["withheld"]] == ["It costs $99 [1].", "It costs $98 [1]."]
    cfg = {"configurable": {"thread_id": "esc"}}
    graph.invoke(Command(resume={"action": "approve"}), cfg, context=ctx)
    final = graph.get_state(cfg).values
    assert "$99" not in final["answer"] and "$98" not in final["answer"]


def test_refused_turn_has_no_grounding_record(pack):
    graph, ctx, model = _graph(pack, ["Rental pays $50 per day [1]."], [RENTAL_P])
    _run(graph, ctx, "rental pays what per day?", thread="r")
    values = _run(graph, ctx, "tell me a joke", thread="r").values
    assert values["status"] == "refused" and values["grounding"] is None


# ---- the evaluation data and its scoring ------------------------------------------------------------------
def test_grounding_questions_are_valid_and_each_listed_chunk_states_the_expected_figure():
    import hashlib
    from collections import Counter

    from domainroute.commands.grounding import QUESTIONS_FILE, load_questions
    from domainroute.graphs.grounding import stated_keys
    from domainroute.retrievers.ingest import load_chunks

    questions = load_questions(BUNDLED_PACK / QUESTIONS_FILE)
    chunks = {c.chunk_id: c for c in load_chunks(BUNDLED_PACK / "kb")}
    newest: dict[str, int] = {}
    for c in chunks.values():
        newest[c.doc_id] = max(newest.get(c.doc_id, 0), c.version)
    assert len(questions) >= 200 and len({q.question for q in questions}) == len(questions)
    for q in questions:
        keys = normalise(q.expected)
        assert len(keys) == 1, q
        for chunk_id in q.chunk_ids:
            chunk = chunks[chunk_id]
            assert chunk.tenant == "northwind" and chunk.version == newest[chunk.doc_id], chunk_id
            assert keys[0] in stated_keys(chunk.text), (q.question, chunk_id)
        assert q.split == ("dev" if hashlib.sha256(q.question.encode()).digest()[0] % 2 == 0 else "test")
    splits = Counter(q.split for q in questions)
    assert 0.4 < splits["test"] / len(questions) < 0.6
    assert set(Counter(q.route for q in questions)) == {"auto", "home", "health", "billing"}


def test_load_questions_names_a_bad_line(tmp_path):
    from domainroute.commands.grounding import load_questions
    from domainroute.errors import InputError

    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "q", "expected": "$5", "chunk_ids": ["a"], "route": "auto", "split": "test"}\n{"x": 1}\n')
    with pytest.raises(InputError, match="q.jsonl:2"):
        load_questions(bad)


def test_spread_keeps_order_and_size():
    from domainroute.commands.grounding import spread

    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8] and spread([1, 2], None) == [1, 2]


def test_score_hallucinated_and_correct():
    from domainroute.commands.grounding import score

    assert score("Rental pays $50 per day [1].", [_c(RENTAL)], [RENTAL], "$50") == (False, True)
    assert score("Rental pays $40 per day [1].", [_c(RENTAL)], [RENTAL], "$50") == (True, False)
    assert score("Rental pays $50 per day.", [], [RENTAL], "$50") == (True, False)  # not cited
    assert score("Ask your adjuster [1].", [_c(RENTAL)], [RENTAL], "$50") == (False, False)


def test_run_config_scores_first_drafts_and_shown_answers(pack, tmp_path):
    from domainroute.commands.grounding import DatasetRouter, NeverEscalate, Question, _row, run_config
    from domainroute.service import AgentService
    from domainroute.settings import Settings

    questions = [Question("how much does rental reimbursement pay per day?", "$50", ("auto-rental@v2#000",), "auto",
                          "test")]
    model = ScriptedChatModel(replies=["It pays $40 per day [1].", "It pays $45 per day [1]."], calls=[])
    service = AgentService(Settings(data_dir=tmp_path), pack=pack, chat_model=model, retriever=ListRetriever([RENTAL_P]),
                           router=DatasetRouter(questions), escalation_policy=NeverEscalate(), adapters={})
    outcomes = run_config(service, pack, questions, service.router, label="t", progress=False)
    assert outcomes[0].action == "extractive" and outcomes[0].draft == "It pays $40 per day [1]."
    raw, checked = _row("raw", outcomes, shown=False), _row("checked", outcomes, shown=True)
    assert (raw["hallucination_rate"], raw["correct_rate"]) == (1.0, 0.0)
    assert (checked["hallucination_rate"], checked["correct_rate"], checked["escalated_rate"]) == (0.0, 1.0, 0.0)
    assert outcomes[0].ground_seconds > 0 and outcomes[0].check_seconds > 0


def test_evaluate_reports_every_row_and_says_when_adapters_are_missing(tmp_path):
    from domainroute.commands.grounding import evaluate, render_markdown
    from domainroute.settings import Settings

    import shutil

    from domainroute.commands.grounding import QUESTIONS_FILE

    pack_dir = tmp_path / "pack"  # the bundled routes and questions, and no adapters folder
    (pack_dir / QUESTIONS_FILE).parent.mkdir(parents=True)
    shutil.copy(BUNDLED_PACK / "pack.toml", pack_dir / "pack.toml")
    shutil.copy(BUNDLED_PACK / QUESTIONS_FILE, pack_dir / QUESTIONS_FILE)
    model = ScriptedChatModel(replies=["It is $12,345 [1]."], calls=[])
    report = evaluate(Settings(data_dir=tmp_path, pack_dir=pack_dir), limit=4, progress=False,
                      components={"chat_model": model, "retriever": ListRetriever([RENTAL_P]), "adapters": {}})
    names = [row["name"] for row in report["rows"]]
    assert names == ["base model", "base + domain adapter", "base + grounding check"]
    assert "not_available" in report["rows"][1] and report["questions"] == 4
    assert report["rows"][0]["hallucination_rate"] == 1.0 and report["rows"][2]["hallucination_rate"] == 0.0
    assert sum(report["actions"].values()) == 4 and "regenerated" not in report["actions"]
    page = render_markdown(report, "domainroute grounding eval --limit 4")
    assert "| base + domain adapter | not available: no trained adapters" in page
    assert "domainroute grounding eval --limit 4" in page


def test_a_draft_without_figures_is_quoted_over_when_fact_free_drafts_are_quoted(pack):
    from dataclasses import replace

    graph, ctx, model = _graph(pack, ["Yes, rental reimbursement covers a substitute car [1]."], [RENTAL_P])
    values = _run(graph, replace(ctx, quote_fact_free=True), "is a rental car covered?").values
    g = values["grounding"]
    assert (g["action"], g["checked"]) == ("extractive", 0) and len(model.calls) == 1  # no retry: nothing to fix
    assert values["answer"].startswith("According to Auto Rental [1]:") and "substitute car" not in values["answer"]
    assert g["withheld"][0]["text"] == "Yes, rental reimbursement covers a substitute car [1]."
    # a draft that states a supported fact is still shown as written
    graph, ctx, model = _graph(pack, ["Rental pays $50 per day [1]."], [RENTAL_P])
    assert _run(graph, replace(ctx, quote_fact_free=True), "how much does rental pay per day?").values[
        "grounding"]["action"] == "none"


def test_fact_free_drafts_setting_resolves_by_engine(pack, tmp_path):
    from domainroute.agents.local_engine import LocalChatModel
    from domainroute.service import AgentService
    from domainroute.settings import BUNDLED_BASE_MODEL, Settings

    def service(choice: str, model) -> AgentService:
        return AgentService(Settings(data_dir=tmp_path, fact_free_drafts=choice), pack=pack, chat_model=model,
                            retriever=ListRetriever([RENTAL_P]), adapters={})

    embedded = LocalChatModel(model_path=BUNDLED_BASE_MODEL, adapters={})  # not loaded: nothing is generated
    scripted = ScriptedChatModel(replies=[], calls=[])
    assert service("auto", embedded).quote_fact_free_drafts is True
    assert service("auto", scripted).quote_fact_free_drafts is False  # another engine (TGI, a fake): shown
    assert service("quote", scripted).quote_fact_free_drafts is True
    assert service("show", embedded).quote_fact_free_drafts is False
