"""The ``scripted`` provider: replies declared in the agent definition, for demos and tests.

It is deterministic and stateless across processes: the reply for a request is the turn whose
index is the number of this agent's replies already in the conversation (the last turn repeats);
replies carried over from another agent in a handoff carry that agent's ``name`` and don't count.
Model-call spans record ``gen_ai.system = scripted``, so nobody mistakes it for a real model.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from cloudagents.domain.agents import ScriptedTurn
from cloudagents.domain.errors import ModelError
from cloudagents.domain.messages import ModelRequest, ModelResponse, ToolCall, Usage
from cloudagents.ports.model import ChunkSink

CHUNK_CHARS = 16


class ScriptedModel:
    """Plays ``turns`` in order, one per model call of a run."""

    def __init__(self, turns: list[ScriptedTurn]) -> None:
        if not turns:
            raise ValueError("ScriptedModel needs at least one turn")
        self.turns = turns
        self._failures: Counter[int] = Counter()
        self.calls = 0

    def turn_for(self, request: ModelRequest) -> tuple[int, ScriptedTurn]:
        index = sum(1 for m in request.messages if m.role == "assistant" and m.name is None)
        index = min(index, len(self.turns) - 1)
        return index, self.turns[index]

    async def __call__(
        self, request: ModelRequest, *, on_chunk: ChunkSink | None = None
    ) -> ModelResponse:
        self.calls += 1
        index, turn = self.turn_for(request)
        if turn.fail_with is not None and self._failures[index] < turn.fail_times:
            self._failures[index] += 1
            raise ModelError(turn.fail_with, f"scripted failure on turn {index}")
        response = ModelResponse(
            content=turn.content,
            tool_calls=[
                ToolCall(
                    id=call.id or f"call_{index}_{n}", name=call.name, arguments=call.arguments
                )
                for n, call in enumerate(turn.tool_calls)
            ],
            handoff_target=turn.handoff_target,
            usage=Usage(
                prompt_tokens=turn.total_tokens // 2,
                completion_tokens=turn.total_tokens - turn.total_tokens // 2,
            ),
            done=turn.done,
        )
        text = response.content_text() or ""
        if on_chunk is not None and text:
            pieces = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
            pause = turn.delay_seconds / len(pieces)
            for piece in pieces:
                if pause:
                    await asyncio.sleep(pause)
                await on_chunk(piece)
        elif turn.delay_seconds:
            await asyncio.sleep(turn.delay_seconds)
        return response
