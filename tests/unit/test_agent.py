"""The offline answerer and the agent's helpers (no database: tool results are built by hand)."""

from __future__ import annotations

import importlib.util

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from sony_rag.errors import ConfigurationError
from sony_shop.agent import (
    OFFLINE_NOTICE,
    OfflineAnswerer,
    artifact_documents,
    best_sentences,
    chat_model,
    compose_answer,
    format_documents,
    parse_passages,
    recent_turns,
    search_query,
    turn_sources,
)


def doc(source_type: str, source_id: str, text: str, title: str | None = None) -> Document:
    """Return a retrieved chunk as the store returns it."""
    metadata = {"source_type": source_type, "source_id": source_id}
    if title:
        metadata["title"] = title
    return Document(page_content=text, metadata=metadata, id=f"{source_type}-{source_id}")


WARRANTY = doc("policy", "warranty", "# Warranty\nOur warranty covers defects for 5 years. It starts on delivery.",
               "Warranty")
TABLE = doc("product", "ekeby-oak-dining-table", "Ekeby Oak Dining Table (TB-2040), dining tables.\n"
            "A solid white-oak dining table that seats six.", "Ekeby Oak Dining Table")
SOFA = doc("product", "solvik-loveseat", "Solvik Loveseat. A washed linen slipcover that is machine washable.",
           "Solvik Loveseat")


@tool
def search_products(query: str) -> str:
    """Search products."""
    return query


@tool
def search_policies(query: str) -> str:
    """Search policies."""
    return query


def tool_result(name: str, documents: list[Document]) -> ToolMessage:
    """Return the ToolMessage a search tool produces."""
    return ToolMessage(content=format_documents(documents), artifact=documents, name=name, tool_call_id=name)


def test_first_turn_calls_every_bound_tool_with_the_question() -> None:
    model = OfflineAnswerer().bind_tools([search_products, search_policies])
    reply = model.invoke([SystemMessage("be brief"), HumanMessage("Do you have oak tables?")])
    assert isinstance(reply, AIMessage) and reply.content == ""
    assert [(call["name"], call["args"]) for call in reply.tool_calls] == [
        ("search_products", {"query": "Do you have oak tables?"}),
        ("search_policies", {"query": "Do you have oak tables?"})]
    assert len({call["id"] for call in reply.tool_calls}) == 2


def test_second_turn_quotes_the_best_passages_with_sources() -> None:
    model = OfflineAnswerer().bind_tools([search_products, search_policies])
    question = HumanMessage("Which one is machine washable linen?")
    calls = AIMessage(content="", tool_calls=[{"name": "search_products", "args": {"query": "x"}, "id": "1"}])
    reply = model.invoke([question, calls, tool_result("search_products", [TABLE, SOFA]),
                          tool_result("search_policies", [WARRANTY])])
    text = str(reply.content)
    assert not reply.tool_calls
    assert text.startswith('Here is what I found for "Which one is machine washable linen?":')
    assert "1. Solvik Loveseat: " in text and "machine washable. [product:solvik-loveseat]" in text
    assert "Ekeby" not in text and "warranty" not in text  # sharing no words with the question
    assert text.splitlines()[-2] == "Sources: [product:solvik-loveseat]"
    assert text.endswith(OFFLINE_NOTICE)


def test_follow_up_questions_search_with_the_previous_one() -> None:
    assert search_query("What warranty does it come with?", ["Do you have an oak table?"]) == (
        "Do you have an oak table? What warranty does it come with?")
    assert search_query("How much is shipping?", ["Do you have an oak table?"]) == "How much is shipping?"
    assert search_query("Is it oak?", []) == "Is it oak?"


def test_follow_up_answer_prefers_the_new_question_and_mentions_the_old() -> None:
    text = compose_answer("What warranty does it come with?", ["Do you have a solid oak dining table for six?"],
                          [[TABLE], [WARRANTY]])
    lines = text.splitlines()
    earlier = "Do you have a solid oak dining table for six?"
    assert lines[0] == f'(Continuing our conversation: earlier you asked "{earlier}".)'
    assert lines[2].startswith("1. Warranty: Our warranty covers defects for 5 years.")
    assert "[policy:warranty]" in lines[2]


def test_nothing_found() -> None:
    text = compose_answer("Do you sell cars?", [], [[], []])
    assert text.startswith('I could not find anything about "Do you sell cars?"') and text.endswith(OFFLINE_NOTICE)


def test_without_tools_it_answers_from_the_passages_in_the_prompt_in_their_order() -> None:
    prompt = f"Answer from these passages.\n\n{format_documents([WARRANTY, SOFA])}"
    reply = OfflineAnswerer().invoke([SystemMessage(prompt), HumanMessage("Does this apply here?")])
    text = str(reply.content)
    assert text.index("[policy:warranty]") < text.index("[product:solvik-loveseat]")


def test_format_and_parse_passages_round_trip() -> None:
    parsed = parse_passages("intro\n\n" + format_documents([WARRANTY, SOFA]))
    assert [(d.metadata, d.page_content) for d in parsed] == [
        ({"source_type": "policy", "source_id": "warranty", "title": "Warranty"}, WARRANTY.page_content),
        ({"source_type": "product", "source_id": "solvik-loveseat", "title": "Solvik Loveseat"}, SOFA.page_content)]
    assert format_documents([]) == "No matching passages."


def test_best_sentences_skip_headings_and_read_tables() -> None:
    text = ("# Warranty\n## Periods\n| Category | Coverage |\n|---|---|\n| Dining tables | 5 years |\n"
            "- **Beds** are covered too\nRugs have 1 year.")
    weights = {"din": 3.0, "table": 3.0, "bed": 3.0}
    assert best_sentences(text, weights) == "Dining tables: 5 years. Beds are covered too."
    assert best_sentences(text, {}) == "Dining tables: 5 years."
    assert best_sentences("Q: Why?\nA: Because.", {}, skip="Why?") == "Because."


def test_artifacts_read_back_from_json_are_documents_again() -> None:
    stored = ToolMessage(content="x", tool_call_id="1", name="search_faq",
                         artifact=[{"page_content": "Yes.", "metadata": {"source_type": "faq", "source_id": "f1"},
                                    "id": "a", "type": "Document"}, {"unrelated": True}, "text"])
    documents = artifact_documents(stored)
    assert [(d.page_content, d.id) for d in documents] == [("Yes.", "a")]
    assert turn_sources([stored, AIMessage("done")]) == [
        {"source": "faq:f1", "source_type": "faq", "source_id": "f1", "title": None, "tool": "search_faq"}]


def test_recent_turns_start_at_a_user_message() -> None:
    messages = [HumanMessage("q1"), AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "1"}]),
                ToolMessage("r", tool_call_id="1"), AIMessage("a1"), HumanMessage("q2"), AIMessage("a2")]
    assert recent_turns(messages, 100) == messages
    assert recent_turns(messages, 4) == messages[4:]  # never a tool result without its call
    assert recent_turns(messages, 1) == []


def test_chat_model_defaults_to_the_offline_answerer() -> None:
    assert isinstance(chat_model("offline"), OfflineAnswerer)
    assert isinstance(chat_model(""), OfflineAnswerer)


def test_an_unusable_chat_model_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no-such-provider"):
        chat_model("no-such-provider:some-model")


@pytest.mark.skipif(importlib.util.find_spec("langchain_openai") is not None, reason="langchain-openai is installed")
def test_a_missing_provider_package_is_named() -> None:
    with pytest.raises(ConfigurationError, match="provider's package"):
        chat_model("openai:gpt-4o-mini")


HALLWYL = Document(page_content="Hallwyl 3-Seat Sofa (SX-1123), sofas.\nA generous three-seater in cream boucle.",
                   metadata={"source_type": "product", "source_id": "hallwyl-3-seat-sofa",
                             "title": "Hallwyl 3-Seat Sofa", "price": 1899.0, "currency": "USD"}, id="product-hallwyl")
OSTERVIK = Document(page_content="Ostervik Sofa (SX-1150), sofas.\nA low two-seater in washed linen.",
                    metadata={"source_type": "product", "source_id": "ostervik-sofa", "title": "Ostervik Sofa",
                              "price": 1249.5, "currency": "USD"}, id="product-ostervik")
FINAL_SALE = Document(page_content="Returns Policy\n- Clearance and final-sale items\n- Gift cards",
                      metadata={"source_type": "policy", "source_id": "returns", "title": "Returns Policy",
                                "section": "Items that can't be returned"}, id="policy-returns-3")


def test_offline_answers_quote_each_passage_with_its_price() -> None:
    text = compose_answer("Which is cheaper, Hallwyl or Ostervik?", [], [[HALLWYL, OSTERVIK]])
    assert "Hallwyl 3-Seat Sofa (1,899.00 USD): " in text
    assert "Ostervik Sofa (1,249.50 USD): " in text


def test_offline_answers_quote_a_policy_line_under_its_section_heading() -> None:
    text = compose_answer("Can I return gift cards?", [], [[FINAL_SALE]])
    assert "1. Returns Policy › Items that can't be returned: Gift cards." in text


def test_price_and_section_survive_the_prompt_round_trip() -> None:
    prompt = format_documents([HALLWYL, FINAL_SALE])
    assert prompt.splitlines()[0] == "[product:hallwyl-3-seat-sofa] Hallwyl 3-Seat Sofa | price: 1,899.00 USD"
    parsed = parse_passages(prompt)
    assert parsed[0].metadata == {"source_type": "product", "source_id": "hallwyl-3-seat-sofa",
                                  "title": "Hallwyl 3-Seat Sofa", "price": "1,899.00 USD"}
    assert parsed[1].metadata["section"] == "Items that can't be returned"
    reply = OfflineAnswerer().invoke([SystemMessage(prompt), HumanMessage("How much is the Hallwyl?")])
    assert "Hallwyl 3-Seat Sofa (1,899.00 USD): " in str(reply.content)
