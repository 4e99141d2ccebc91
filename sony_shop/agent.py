"""The shop assistant: a LangChain agent whose tools search the catalog and whose memory is the chat tables.

Part of the shop application (``pip install 'sony-rag[shop]'``, which brings ``langchain``), not of the library:
``sony_rag`` never imports it.

``ShopAgent`` wires three retrieval tools (``search_products``, ``search_faq``, ``search_policies``; each
is ``SonyVectorStore.as_retriever()`` with a ``source_type`` filter) and a chat model into
``langchain.agents.create_agent(..., checkpointer=SonyCheckpointer(db))``: the session is the thread, and
every message of a turn (the question, tool calls, tool results and answer) becomes a ``chat_messages`` row.

The chat model comes from ``SONY_RAG_CHAT_MODEL`` (for example ``openai:gpt-4o-mini``, through
``langchain.chat_models.init_chat_model``; the provider's package and API key must be installed and set).
With none configured, ``OfflineAnswerer`` stands in: a deterministic chat model that calls every search
tool with the question, picks the passages sharing the most words with it, and replies by quoting them
with their sources, saying that it is the offline answerer. It needs no network.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final
from uuid import UUID

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import Field

from sony_rag import plans
from sony_rag import validation as check
from sony_rag.cli import SHOP_INSTALL
from sony_rag.embeddings import word_stems
from sony_rag.errors import ConfigurationError, InvalidInputError
from sony_rag.executor import PlanGenerator, plan
from sony_rag.plans import Row
from sony_rag.vectorstore import SonyVectorStore

INSTALL_HINT: Final = SHOP_INSTALL  # one wording, the CLI's

OFFLINE_NOTICE: Final = (
    "(This is sony-rag's offline answerer: no chat model is configured, so it quotes the passages it "
    "retrieved. Set SONY_RAG_CHAT_MODEL, e.g. openai:gpt-4o-mini, and the provider's API key to use a "
    "language model.)"
)

SYSTEM_PROMPT: Final = (
    "You are the shopping assistant of Sony Interior, an online furniture shop. Before answering, look the "
    "facts up with the search tools: search_products for furniture, search_faq for common questions about "
    "orders, payment and delivery, search_policies for shipping, returns, warranty and store information. "
    "Answer only from what the tools return, briefly, and cite each fact's source as [source_type:source_id]. "
    "If the tools return nothing relevant, say that you do not know."
)

# (tool name, source types searched, description shown to the model)
SEARCH_TOOLS: Final = (
    ("search_products", ("product",),
     "Search the furniture catalog (names, SKUs, materials, dimensions, prices, descriptions)."),
    ("search_faq", ("faq",),
     "Search the frequently asked questions (orders, payment, delivery, assembly, accounts)."),
    ("search_policies", ("policy", "page_content"),
     "Search the shipping, returns and warranty policies and the store pages (showrooms, care guide)."),
)

# Words that make a question lean on the one before it ("does it come in oak?").
_FOLLOW_UP_WORDS: Final = frozenset({"it", "its", "this", "that", "these", "those", "they", "them", "their",
                                     "one", "ones", "same", "there", "he", "she"})
_MAX_PASSAGES: Final = 3
_SENTENCE: Final = re.compile(r"(?<=[.!?])\s+|\n+")
_TABLE_RULE: Final = re.compile(r"^\|?\s*:?-{3,}")


# -- tools -----------------------------------------------------------------------------------------------


def source_label(metadata: Mapping[str, Any]) -> str:
    """Return the citation of a chunk, ``source_type:source_id``."""
    return f"{metadata.get('source_type', 'document')}:{metadata.get('source_id', '?')}"


def search_tools(store: SonyVectorStore, k: int = 4) -> list[BaseTool]:
    """Return the agent's search tools: the store's retriever with a ``source_type`` filter per tool."""
    tools: list[BaseTool] = []
    for name, source_types, description in SEARCH_TOOLS:
        type_filter: dict[str, Any] = ({"source_type": source_types[0]} if len(source_types) == 1
                                       else {"source_type": {"$in": list(source_types)}})
        retriever = store.as_retriever(search_kwargs={"k": k, "filter": type_filter})

        def search(query: str, _retriever: Any = retriever) -> tuple[str, list[Document]]:
            documents: list[Document] = _retriever.invoke(query)
            return format_documents(documents), documents

        async def asearch(query: str, _retriever: Any = retriever) -> tuple[str, list[Document]]:
            documents: list[Document] = await _retriever.ainvoke(query)
            return format_documents(documents), documents

        tools.append(StructuredTool.from_function(
            func=search, coroutine=asearch, name=name, description=description,
            response_format="content_and_artifact",
        ))
    return tools


def passage_facts(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Return what a passage's metadata adds to its text: its section heading and its price, as text."""
    facts: dict[str, str] = {}
    section = metadata.get("section")
    if isinstance(section, str) and section.strip():
        facts["section"] = section.strip()
    price = metadata.get("price")
    if isinstance(price, int | float) and not isinstance(price, bool):
        currency = metadata.get("currency")
        facts["price"] = f"{price:,.2f}" + (f" {currency}" if isinstance(currency, str) and currency else "")
    elif isinstance(price, str) and price.strip():  # read back from a prompt by parse_passages
        facts["price"] = price.strip()
    return facts


def format_documents(documents: Sequence[Document]) -> str:
    """Return retrieved chunks as the text a model reads: each with its citation, title, section and price."""
    if not documents:
        return "No matching passages."
    parts = []
    for document in documents:
        title = document.metadata.get("title")
        heading = f"[{source_label(document.metadata)}]" + (f" {title}" if title else "")
        heading += "".join(f" | {key}: {value}" for key, value in passage_facts(document.metadata).items())
        parts.append(f"{heading}\n{document.page_content}")
    return "\n\n".join(parts)


# -- the offline answerer --------------------------------------------------------------------------------


class OfflineAnswerer(BaseChatModel):
    """A deterministic stand-in chat model: it calls the bound search tools, then quotes what they found.

    Turn 1 (the last message is the user's): one AI message calling every bound tool with the question;
    a follow-up question ("is it in stock?") is searched together with the user's previous question.
    Turn 2 (tool results arrived): the passages sharing the most word stems with the question (ties by
    retrieval rank, at most three) are quoted, each with its ``[source_type:source_id]``, followed by
    ``OFFLINE_NOTICE``. When earlier questions exist it also says which one came last.

    With no tools bound (an LCEL chain), it answers at once from the passages that ``format_documents``
    wrote into the system message(s) of the prompt.
    """

    tool_names: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "sony-rag-offline-answerer"

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
                   *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Return a copy of the answerer that calls these tools."""
        names = [convert_to_openai_tool(tool)["function"]["name"] for tool in tools]
        return self.model_copy(update={"tool_names": names})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        questions = [message for message in messages if isinstance(message, HumanMessage)]
        if not questions:
            return _result(AIMessage(content="Ask me about our furniture, orders or policies. " + OFFLINE_NOTICE))
        last_question = _text(questions[-1])
        earlier = [_text(message) for message in questions[:-1]]
        position = max(index for index, message in enumerate(messages) if isinstance(message, HumanMessage))
        results = [message for message in messages[position + 1:] if isinstance(message, ToolMessage)]
        if not results and self.tool_names:
            query = search_query(last_question, earlier)
            calls = [{"name": name, "args": {"query": query}, "id": f"call_{uuid.uuid4().hex[:12]}",
                      "type": "tool_call"} for name in self.tool_names]
            return _result(AIMessage(content="", tool_calls=calls))
        if results:
            ranked = [artifact_documents(result) for result in results]
        else:
            # No tools (an LCEL chain): the retrieved passages are in the prompt, as format_documents wrote them.
            passages = [parse_passages(_text(message)) for message in messages if isinstance(message, SystemMessage)]
            return _result(AIMessage(content=compose_answer(last_question, earlier, passages, rerank=False)))
        return _result(AIMessage(content=compose_answer(last_question, earlier, ranked)))


def _result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])


def _text(message: BaseMessage) -> str:
    return message.text if isinstance(message.text, str) else str(message.content)


def search_query(question: str, earlier_questions: Sequence[str]) -> str:
    """Return what to search for: the question, prefixed by the previous one when it is a follow-up."""
    words = set(re.findall(r"[^\W_]+", question.lower()))
    if earlier_questions and words & _FOLLOW_UP_WORDS:
        return f"{earlier_questions[-1]} {question}"
    return question


def compose_answer(question: str, earlier_questions: Sequence[str], ranked: Sequence[Sequence[Document]], *,
                   rerank: bool = True) -> str:
    """Return the offline answer: the best of the retrieved passages (one ranked list per search) quoted.

    With ``rerank`` a passage scores 3 per word stem it shares with the question, plus 0.4 per stem shared
    only with the previous question when this one is a follow-up; passages scoring at least half the best
    are kept. Without it (one list already ranked by a retriever) the first three are quoted in order.
    """
    weights = question_weights(question, earlier_questions)
    candidates: list[tuple[float, int, Document]] = []
    seen: set[str] = set()
    for documents in ranked:
        for rank, document in enumerate(documents):
            key = document.id or document.page_content
            if key in seen:
                continue
            seen.add(key)
            candidates.append((_score(document.page_content, weights), rank, document))
    if rerank:
        candidates.sort(key=lambda item: (-item[0], item[1]))
        best = candidates[0][0] if candidates else 0.0
        chosen = [item for item in candidates if item[0] > 0 and item[0] >= best / 2][:_MAX_PASSAGES] or candidates[:1]
    else:
        chosen = candidates[:_MAX_PASSAGES]
    lines = []
    if earlier_questions:
        lines.append(f"(Continuing our conversation: earlier you asked \"{earlier_questions[-1]}\".)")
    if not chosen:
        lines.append(f"I could not find anything about \"{question}\" in the catalog, FAQ or policies.")
    else:
        lines.append(f"Here is what I found for \"{question}\":")
        for number, (_, _, document) in enumerate(chosen, start=1):
            title = document.metadata.get("title")
            excerpt = best_sentences(document.page_content, weights, skip=str(title or ""))
            lines.append(f"{number}. {_quoted_heading(document.metadata)}{excerpt} [{source_label(document.metadata)}]")
        labels = dict.fromkeys(f"[{source_label(document.metadata)}]" for _, _, document in chosen)
        lines.append("Sources: " + ", ".join(labels))
    lines.append(OFFLINE_NOTICE)
    return "\n".join(lines)


def _quoted_heading(metadata: Mapping[str, Any]) -> str:
    """Return what goes before a quoted excerpt: title, section heading and price (the excerpt may lack them)."""
    title = metadata.get("title")
    facts = passage_facts(metadata)
    heading = str(title) if title else ""
    if "section" in facts:
        heading += (" › " if heading else "") + facts["section"]
    if "price" in facts:
        heading += f" ({facts['price']})"
    return heading + ": " if heading else ""


_PASSAGE_HEADING: Final = re.compile(r"^\[(?P<source_type>[a-z_]+):(?P<source_id>[^\]]+)\](?: (?P<title>.*))?$")


def parse_passages(text: str) -> list[Document]:
    """Return the passages that ``format_documents`` wrote into ``text`` (a prompt), in order."""
    documents: list[Document] = []
    current: dict[str, Any] | None = None
    body: list[str] = []
    for line in text.splitlines():
        heading = _PASSAGE_HEADING.match(line)
        if heading:
            if current is not None:
                documents.append(Document(page_content="\n".join(body).strip(), metadata=current))
            current = {key: value for key, value in heading.groupdict().items() if value}
            title, *facts = str(current.get("title", "")).split(" | ")
            current.pop("title", None)
            if title:
                current["title"] = title
            for fact in facts:
                key, _, value = fact.partition(": ")
                if key in ("section", "price") and value:
                    current[key] = value
            body = []
        elif current is not None:
            body.append(line)
    if current is not None:
        documents.append(Document(page_content="\n".join(body).strip(), metadata=current))
    return [document for document in documents if document.page_content]


def question_weights(question: str, earlier_questions: Sequence[str]) -> dict[str, float]:
    """Return the weight of each word stem of the question (3) and, for a follow-up, of the previous one (0.4)."""
    weights: dict[str, float] = {}
    if earlier_questions and search_query(question, earlier_questions) != question:
        weights.update(dict.fromkeys(word_stems(earlier_questions[-1]), 0.4))
    weights.update(dict.fromkeys(word_stems(question), 3.0))
    return weights


def _score(text: str, weights: Mapping[str, float]) -> float:
    return sum(weights.get(stem, 0.0) for stem in set(word_stems(text)))


def best_sentences(text: str, weights: Mapping[str, float], limit: int = 2, skip: str = "") -> str:
    """Return up to ``limit`` sentences of ``text`` that score best against ``weights``, in text order.

    Headings, table headers, the passage's title and an FAQ's restated question are not quoted; table
    rows read as "cell: cell"; Markdown emphasis is dropped.
    """
    sentences = [sentence for sentence in _readable_sentences(text) if sentence != skip.strip()]
    if not sentences:
        return " ".join(text.split())
    ranked = sorted(range(len(sentences)), key=lambda i: (-_score(sentences[i], weights), i))
    picked = sorted(index for index in ranked[:limit] if index == ranked[0] or _score(sentences[index], weights) > 0)
    # List items and table rows have no full stop of their own; without one, two of them run together.
    return " ".join(sentences[index] if sentences[index][-1] in ".!?:;" else sentences[index] + "."
                    for index in picked)


def _readable_sentences(text: str) -> list[str]:
    lines = text.splitlines()
    kept: list[str] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if (not stripped or stripped.startswith("#") or stripped.startswith("Q:") or _TABLE_RULE.match(stripped)
                or (stripped.startswith("|") and _TABLE_RULE.match(following))):
            continue
        if stripped.startswith("|"):
            stripped = ": ".join(cell.strip() for cell in stripped.strip("|").split("|") if cell.strip())
        stripped = stripped.removeprefix("A:").removeprefix("- ").replace("**", "").strip()
        kept.extend(part.strip() for part in _SENTENCE.split(stripped) if part.strip())
    return kept


# -- chat models -----------------------------------------------------------------------------------------


def chat_model(spec: str | None = None) -> BaseChatModel:
    """Return the chat model named by ``spec`` ("provider:model"), else SONY_RAG_CHAT_MODEL, else the offline one.

    Raises ConfigurationError when the named model cannot be set up (missing package, unknown provider).
    """
    if spec is None:
        from sony_rag.settings import get_settings

        spec = get_settings().chat_model
    if not spec or spec.strip().lower() == "offline":
        return OfflineAnswerer()
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as error:
        raise ConfigurationError(f"SONY_RAG_CHAT_MODEL needs the shop extra: {INSTALL_HINT}") from error
    try:
        model = init_chat_model(spec.strip())
    except ImportError as error:
        raise ConfigurationError(f"the chat model {spec!r} needs its provider's package: {error}") from error
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"cannot set up the chat model {spec!r}: {error}") from error
    if not isinstance(model, BaseChatModel):
        raise ConfigurationError(f"{spec!r} is not a chat model")
    return model


# -- the agent with memory -------------------------------------------------------------------------------


@dataclass
class AgentReply:
    """One answer: its text, the sources retrieved for it, and whether the offline answerer wrote it."""

    text: str
    sources: list[dict[str, Any]] = dataclass_field(default_factory=list)
    offline: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Return the reply as a JSON-ready dict."""
        return {"text": self.text, "sources": self.sources, "offline": self.offline}


class ShopAgent:
    """The shop assistant: ``ask(question)`` runs one agent turn; its memory is a LangGraph checkpointer.

    Example:
        .. code-block:: python

            store = SonyVectorStore(get_embeddings(), db)
            agent = ShopAgent(store, session_id)   # offline answerer unless SONY_RAG_CHAT_MODEL is set
            print(agent.ask("Which sofas have linen covers?").text)

    The session is the thread (``thread_id``); the checkpointer (default: ``SonyCheckpointer`` on the store's
    database) keeps the conversation as rows of ``chat_messages``. A session that already has messages but no
    checkpoint (written through ``SonyChatMessageHistory``) starts from its newest ``max_history_messages``.
    """

    def __init__(self, store: SonyVectorStore, session_id: UUID | str, *, model: BaseChatModel | None = None,
                 checkpointer: BaseCheckpointSaver[Any] | None = None, k: int = 4, max_history_messages: int = 40,
                 page_context: str | None = None, user_agent: str | None = None) -> None:
        """Build the agent graph; raises InvalidInputError for a bad id, ``k`` or history window (no I/O)."""
        for value, what in ((k, "k"), (max_history_messages, "max_history_messages")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{what} must be a positive integer, got {value!r}")
        try:
            from langchain.agents import create_agent
        except ImportError as error:
            raise ConfigurationError(f"the shop agent needs the shop extra: {INSTALL_HINT}") from error

        from sony_rag.checkpointer import SonyCheckpointer

        self.store = store
        self.session_id = check.as_uuid(session_id, "session_id")
        self.page_context = check.text(page_context, "page_context", optional=True)
        self.user_agent = check.text(user_agent, "user_agent", optional=True)
        self.model = model if model is not None else chat_model()
        self.max_history_messages = max_history_messages
        self.tools = search_tools(store, k)
        self.checkpointer = checkpointer if checkpointer is not None else SonyCheckpointer(store.db)
        self.graph = create_agent(self.model, self.tools, system_prompt=SYSTEM_PROMPT, checkpointer=self.checkpointer)
        self._started = False

    @property
    def offline(self) -> bool:
        """Return True when the offline answerer writes the replies."""
        return isinstance(self.model, OfflineAnswerer)

    @property
    def config(self) -> RunnableConfig:
        """Return the run config of this conversation: its thread and the page the user is on."""
        configurable: dict[str, Any] = {"thread_id": str(self.session_id)}
        if self.page_context is not None:
            configurable["page_context"] = self.page_context
        return {"configurable": configurable}

    def ask(self, question: str) -> AgentReply:
        """Answer ``question`` in this conversation and store the turn; raises InvalidInputError, SonyRagError."""
        asked = HumanMessage(_question(question), id=str(uuid.uuid4()))
        earlier: list[BaseMessage] = []
        if not self._started:
            earlier = self._earlier(self.graph.get_state(self.config).values,
                                    self.store.db.run(_start_session(self.session_id, self.user_agent,
                                                                     self.page_context)))
        state: dict[str, Any] = self.graph.invoke(_input([*earlier, asked]), self.config)
        self._started = True
        return self._reply(state["messages"], asked)

    async def aask(self, question: str) -> AgentReply:
        """Answer ``question`` in this conversation and store the turn (async)."""
        asked = HumanMessage(_question(question), id=str(uuid.uuid4()))
        earlier: list[BaseMessage] = []
        if not self._started:
            earlier = self._earlier((await self.graph.aget_state(self.config)).values,
                                    await self.store.db.arun(_start_session(self.session_id, self.user_agent,
                                                                            self.page_context)))
        state: dict[str, Any] = await self.graph.ainvoke(_input([*earlier, asked]), self.config)
        self._started = True
        return self._reply(state["messages"], asked)

    def _earlier(self, values: Mapping[str, Any], rows: list[Row]) -> list[BaseMessage]:
        """Return the session's messages to start from when the thread has no checkpoint yet."""
        if values.get("messages"):
            return []
        from sony_rag.checkpointer import message_from_row

        return recent_turns([message_from_row(row) for row in rows], self.max_history_messages)

    def _reply(self, messages: Sequence[BaseMessage], asked: HumanMessage) -> AgentReply:
        start = next((index for index, message in enumerate(messages) if message.id == asked.id), len(messages))
        turn = list(messages[start:])
        answers = [message for message in turn if isinstance(message, AIMessage) and not message.tool_calls]
        text = _text(answers[-1]) if answers else ""
        return AgentReply(text=text, sources=turn_sources(turn), offline=self.offline)


@plan(read_only=False)
def _start_session(session_id: UUID, user_agent: str | None, page: str | None) -> PlanGenerator[list[Row]]:
    """Create the session if it is missing (with its user agent and page); return its messages, oldest first."""
    yield from plans.create_session(session_id, user_agent, page, {}, if_missing=True).start()
    return (yield from plans.history(session_id, None).start())  # type: ignore[no-any-return]


def _input(messages: list[BaseMessage]) -> Any:
    return {"messages": messages}


def _question(question: object) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError("the question must be a non-empty string")
    return question.strip()


def recent_turns(messages: Sequence[BaseMessage], limit: int) -> list[BaseMessage]:
    """Return at most ``limit`` newest messages, starting at a user message so no tool result is orphaned."""
    window = list(messages[-limit:])
    for index, message in enumerate(window):
        if isinstance(message, HumanMessage):
            return window[index:]
    return []


def artifact_documents(message: ToolMessage) -> list[Document]:
    """Return the documents a search tool returned as its artifact (also after a round trip through JSON)."""
    if not isinstance(message.artifact, list):
        return []
    documents = []
    for item in message.artifact:
        if isinstance(item, Document):
            documents.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("page_content"), str):
            metadata = item.get("metadata")
            documents.append(Document(page_content=item["page_content"], id=item.get("id"),
                                      metadata=dict(metadata) if isinstance(metadata, Mapping) else {}))
    return documents


def turn_sources(turn: Iterable[BaseMessage]) -> list[dict[str, Any]]:
    """Return the distinct sources the tools retrieved in one turn, in retrieval order."""
    sources: list[dict[str, Any]] = []
    seen: set[str] = set()
    for message in turn:
        if not isinstance(message, ToolMessage):
            continue
        for document in artifact_documents(message):
            if source_label(document.metadata) not in seen:
                seen.add(source_label(document.metadata))
                sources.append({"source": source_label(document.metadata),
                                "source_type": document.metadata.get("source_type"),
                                "source_id": document.metadata.get("source_id"),
                                "title": document.metadata.get("title"), "tool": message.name})
    return sources


__all__ = ["INSTALL_HINT", "OFFLINE_NOTICE", "SEARCH_TOOLS", "SYSTEM_PROMPT", "AgentReply", "OfflineAnswerer",
           "ShopAgent", "artifact_documents", "best_sentences", "chat_model", "compose_answer", "format_documents",
           "parse_passages", "passage_facts", "question_weights", "recent_turns", "search_query", "search_tools",
           "source_label", "turn_sources"]
