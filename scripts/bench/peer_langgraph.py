"""(c) LangGraph: the same 10-step agent as a model node + ``ToolNode`` graph, checkpointed.

Runs in ``.venv-bench``: ``python -m scripts.bench.peer_langgraph --saver postgres --dsn DSN``
(or ``--saver sqlite --path FILE``, or ``--saver memory``). The model is a LangChain chat model
that replays the script with zero latency (the turn is the number of AI messages so far, as
cloudagents' ``scripted`` provider does); the tool is a LangChain ``@tool`` calculator. Each run
is a new ``thread_id``, so every super-step writes a checkpoint to the saver, as a durable
LangGraph deployment does. With Postgres, the saver gets a database of its own (``langgraph_bench``)
and its writes are counted by the server between the first and the last timed run (``pgcount.py``,
the same count as the DBOS peer's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from scripts.bench.common import (
    FINAL_ANSWER,
    INSTRUCTIONS,
    STEPS,
    USER_MESSAGE,
    calculate,
    emit,
    script,
    summarize,
)

DATABASE = "langgraph_bench"


@tool
def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression, e.g. "(2 + 3) * 4"."""
    return calculate(expression)


class ScriptedChatModel(BaseChatModel):
    """Replays the benchmark script: tool calls, then the answer; no latency."""

    steps: int = STEPS

    @property
    def _llm_type(self) -> str:
        return "scripted-bench"

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        turn = sum(1 for m in messages if isinstance(m, AIMessage))
        turns = script(self.steps)
        expr = turns[min(turn, len(turns) - 1)]
        if expr is None:
            message = AIMessage(content=FINAL_ANSWER)
        else:
            call = {"name": "calculator", "args": {"expression": expr}, "id": f"call_{turn}"}
            message = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        return self._reply(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any
    ) -> ChatResult:
        return self._reply(messages)


def build_graph(steps: int, checkpointer: Any) -> Any:
    model = ScriptedChatModel(steps=steps)

    async def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode([calculator]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile(checkpointer=checkpointer)


@contextlib.asynccontextmanager
async def open_saver(kind: str, dsn: str | None, path: str | None) -> AsyncIterator[Any]:
    if kind == "postgres":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(dsn or "") as saver:
            await saver.setup()
            yield saver
    elif kind == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(path or ":memory:") as saver:
            await saver.setup()
            yield saver
    else:
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()


def database_and_counter(
    kind: str, dsn: str | None, database: str
) -> tuple[str | None, Any, str | None]:
    """With Postgres: the DSN of a fresh ``database`` for the saver, a ``WriteCounter`` on it
    (or None) and why counting is unavailable (or None). Otherwise ``dsn`` unchanged."""
    if kind != "postgres":
        return dsn, None, None
    from scripts.bench.pgcount import CountingUnavailable, WriteCounter, create_database

    admin_dsn = dsn or ""
    saver_dsn = create_database(admin_dsn, database)
    try:
        return saver_dsn, WriteCounter(admin_dsn, database), None
    except CountingUnavailable as exc:
        return saver_dsn, None, str(exc)


def saver_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every LangGraph peer takes: the saver, where it is, runs and warm-up."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--saver", choices=("postgres", "sqlite", "memory"), default="postgres")
    parser.add_argument("--dsn")
    parser.add_argument("--path")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    return parser


def versions() -> dict[str, str]:
    import langgraph.version

    return {"langgraph": langgraph.version.__version__, "python": sys.version.split()[0]}


async def measure(
    kind: str, dsn: str | None, path: str | None, runs: int, warmup: int, steps: int
) -> dict[str, Any]:
    per_step: list[float] = []
    before = None
    dsn, counter, counting_error = database_and_counter(kind, dsn, DATABASE)
    async with open_saver(kind, dsn, path) as saver:
        app = build_graph(steps, saver)
        for i in range(warmup + runs):
            if i == warmup and counter is not None:
                before = counter.snapshot()
            config = {
                "configurable": {"thread_id": f"bench-{uuid.uuid4().hex}"},
                "recursion_limit": 4 * steps + 10,
            }
            inputs = {"messages": [SystemMessage(INSTRUCTIONS), HumanMessage(USER_MESSAGE)]}
            started = time.perf_counter()
            state = await app.ainvoke(inputs, config)
            elapsed = time.perf_counter() - started
            answers = [m for m in state["messages"] if isinstance(m, AIMessage)]
            if len(answers) != steps or answers[-1].content != FINAL_ANSWER:
                raise RuntimeError(f"unexpected final state: {len(answers)} AI messages")
            if i >= warmup:
                per_step.append(elapsed * 1000 / steps)
        after = counter.snapshot() if counter is not None else None
        checkpoints = 0
        async for _ in saver.alist(config):
            checkpoints += 1
    result: dict[str, Any] = {
        "saver": kind,
        "ms_per_step": summarize(per_step),
        "checkpoints_per_run": checkpoints,
    }
    if counter is not None and before is not None and after is not None:
        writes = counter.writes(before, after)
        result["db_writes"] = {
            "method": "pg_stat_statements",
            "runs": runs,
            "steps": runs * steps,
            "write_statements_per_step": writes["write_statements"] / (runs * steps),
            "rows_written_per_step": writes["rows_written"] / (runs * steps),
            "write_transactions_per_step": writes["write_transactions"] / (runs * steps),
            "statements": writes["statements"],
        }
    elif kind == "postgres":
        result["db_writes_unavailable"] = counting_error or "no timed run"
    return result


def main() -> None:
    parser = saver_parser(__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    result = asyncio.run(
        measure(args.saver, args.dsn, args.path, args.runs, args.warmup, args.steps)
    )
    result["versions"] = versions()
    emit(result)


if __name__ == "__main__":
    main()
