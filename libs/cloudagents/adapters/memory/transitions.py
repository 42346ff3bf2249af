"""Seed 004's workflows, tokens and executions in dicts (tests and in-process runs)."""

from __future__ import annotations

from cloudagents.domain.transitions import (
    Token,
    TokenHistoryEntry,
    TransitionExecution,
    WorkflowDefinition,
)


class InMemoryTransitionStore:
    """``TransitionStore`` in memory; copies in and out, as a database would."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDefinition] = {}
        self.tokens: dict[str, Token] = {}
        self.histories: dict[str, list[TokenHistoryEntry]] = {}
        self.executions: dict[str, TransitionExecution] = {}

    async def put_workflow(self, workflow: WorkflowDefinition) -> None:
        self.workflows[workflow.id] = workflow.model_copy(deep=True)

    async def get_workflow(self, workflow_id: str) -> WorkflowDefinition | None:
        found = self.workflows.get(workflow_id)
        return found.model_copy(deep=True) if found else None

    async def list_workflows(self) -> list[WorkflowDefinition]:
        return [self.workflows[k].model_copy(deep=True) for k in sorted(self.workflows)]

    async def create_token(self, token: Token) -> bool:
        if token.token_id in self.tokens:
            return False
        self.tokens[token.token_id] = token.model_copy(deep=True)
        return True

    async def get_token(self, token_id: str) -> Token | None:
        found = self.tokens.get(token_id)
        return found.model_copy(deep=True) if found else None

    async def tokens_in_place(self, workflow_id: str, place: str) -> list[Token]:
        found = [
            t for t in self.tokens.values() if (t.workflow_id, t.place) == (workflow_id, place)
        ]
        return [t.model_copy(deep=True) for t in sorted(found, key=lambda t: t.token_id)]

    async def update_token(
        self,
        token: Token,
        *,
        expected_version: int,
        history: TokenHistoryEntry | None = None,
        executions: list[TransitionExecution] | None = None,
    ) -> bool:
        stored = self.tokens.get(token.token_id)
        if stored is None or stored.version != expected_version:
            return False
        entries = self.histories.setdefault(token.token_id, [])
        if history is not None and any(e.n == history.n for e in entries):
            return False
        self.tokens[token.token_id] = token.model_copy(deep=True)
        if history is not None:
            entries.append(history.model_copy(deep=True))
        for execution in executions or []:
            self.executions[execution.execution_id] = execution.model_copy(deep=True)
        return True

    async def history(self, token_id: str) -> list[TokenHistoryEntry]:
        return [e.model_copy(deep=True) for e in self.histories.get(token_id, [])]

    async def get_execution(self, execution_id: str) -> TransitionExecution | None:
        found = self.executions.get(execution_id)
        return found.model_copy(deep=True) if found else None

    async def list_executions_for_token(self, token_id: str) -> list[TransitionExecution]:
        found = [e for e in self.executions.values() if e.token_id == token_id]
        return [e.model_copy(deep=True) for e in sorted(found, key=_started)]


def _started(execution: TransitionExecution) -> tuple[str, str]:
    return (execution.started_at.isoformat(), execution.execution_id)
