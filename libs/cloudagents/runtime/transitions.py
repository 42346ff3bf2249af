"""Seed 004's transitions as use cases: create a token, fire a transition, run place agents,
complete a firing when its agent's run finishes (registering workflows is
``transition_definitions.py``).

Firing a transition with an agent is a small state machine on the token document, every write
guarded by the token's ``version``: (1) the fire request sets ``firing`` (the transition, the
attempt, its run id ``execution_id(token, transition, version, attempt)``) and records the
execution; (2) the agent runs as an ordinary run (``start_run`` and an intent, as ``POST /runs``
does), with the mapped input as its message and the token's template variables, its deadline
the transition's ``timeout_seconds``; (3) the run's finishing commit publishes a
``FiringMessage`` (``{ws}-transitions``, its outbox: a crash after the commit re-publishes it),
and :meth:`Transitions.complete` maps the output back and moves the token, retries, or leaves
it with the reason. A redelivered fire finds the token firing (the run is created once) or at
another version; a redelivered completion finds the firing gone: the token moves once. A retry
with a backoff is claimed in the completion's write (``firing.not_before``) and started by a
Cloud Task on the place agent queue (:meth:`Transitions.start_retry`): no handler sleeps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from cloudagents.domain.agents import AgentDefinition
from cloudagents.domain.errors import PermanentMessageError, TransientError
from cloudagents.domain.intents import IntentionMessage
from cloudagents.domain.runs import OutboxMessage, TokenLink, WakeUp
from cloudagents.domain.transitions import (
    FireIntent,
    Firing,
    FiringMessage,
    FiringRetryTask,
    PlaceAgentConfig,
    PlaceAgentTask,
    Token,
    TokenHistoryEntry,
    TransitionDefinition,
    TransitionExecution,
    WorkflowDefinition,
)
from cloudagents.engine.transitions import (
    AgentStep,
    MappingError,
    Move,
    Retry,
    Stay,
    complete,
    execution_id,
    failed_rule,
    map_input,
    place_agent_digest,
    redefined_place_agents,
    token_variables,
)
from cloudagents.runtime.commands import Refused
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.executor import start_run
from cloudagents.runtime.transition_definitions import (
    CreateTokenRequest,
)

log = logging.getLogger(__name__)
TRANSITION_SOURCE = "transition"
# A retry's task may run this early (clocks of instances differ a little).
RETRY_SLACK_SECONDS = 1.0
FireStatus = Literal["moved", "firing", "stale"]


@dataclass(frozen=True)
class Fired:
    """What a fire request did: ``moved`` (no agent: the token moved), ``firing`` (its agent
    runs: ``execution_id``), ``stale`` (the token is no longer at the version asked)."""

    status: FireStatus
    token: Token
    execution_id: str | None = None


async def create_token(deps: Deps, body: CreateTokenRequest) -> tuple[Token, bool]:
    """A new token in its workflow's place, and whether it was created: the same request again
    (same id, workflow, place, data and metadata, not moved since) finds it, and schedules its
    place's agents again (harmless: they are counted), so a retried request loses nothing.
    404 for an unknown workflow, 422 for a place it does not have, 409 for a token id in use."""
    workflow = await deps.transitions.get_workflow(body.workflow_id)
    if workflow is None:
        raise Refused(404, f"unknown workflow {body.workflow_id!r}")
    place = body.place or workflow.initial_place or workflow.places[0]
    if place not in workflow.places:
        raise Refused(422, f"workflow {workflow.id!r} has no place {place!r}")
    now = deps.clock()
    token = Token(
        token_id=body.token_id or f"tok-{uuid.uuid4().hex[:20]}",
        workflow_id=workflow.id,
        place=place,
        data=body.data,
        metadata=body.metadata,
        created_at=now,
        updated_at=now,
    )
    created = await deps.transitions.create_token(token)
    if not created:
        found = await deps.transitions.get_token(token.token_id)
        same = (
            found is not None
            and found.version == 1
            and (
                (found.workflow_id, found.place, found.data, found.metadata)
                == (token.workflow_id, token.place, token.data, token.metadata)
            )
        )
        if found is None or not same or body.token_id is None:
            raise Refused(409, f"token {token.token_id!r} exists")
        token = found
    # The workflow read again after the token is written: a definition registered meanwhile
    # (its query of the place may have missed the token) has its place agents scheduled here.
    await Transitions(deps).enter(token)
    return token, created


class Transitions:
    """Fires transitions, runs place agents, and completes both (module docstring)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.store = deps.transitions

    async def _workflow(self, token: Token) -> WorkflowDefinition:
        workflow = await self.store.get_workflow(token.workflow_id)
        if workflow is None:
            raise Refused(409, f"the token's workflow {token.workflow_id!r} no longer exists")
        return workflow

    async def _transition(self, token: Token, transition_id: str) -> TransitionDefinition:
        workflow = await self._workflow(token)
        transition = workflow.transition(transition_id)
        if transition is None:
            raise Refused(404, f"workflow {workflow.id!r} has no transition {transition_id!r}")
        return transition

    async def _step_of(self, token: Token, firing: Firing) -> AgentStep:
        """The agent step a firing runs, from the workflow as it is now."""
        workflow = await self._workflow(token)
        if firing.transition_id is not None:
            transition = await self._transition(token, firing.transition_id)
            if transition.agent_execution is None:
                raise Refused(409, f"transition {transition.id!r} no longer runs an agent")
            return AgentStep.of_transition(transition, transition.agent_execution)
        index = firing.place_agent
        if index is None or index >= len(workflow.place_agents):
            raise Refused(409, f"place agent {index} of {workflow.id!r} no longer exists")
        return AgentStep.of_place(index, workflow.place_agents[index])

    async def fire(self, token_id: str, transition_id: str, version: int | None = None) -> Fired:
        """Fire ``transition_id`` on the token (at ``version``, if given): 404 unknown token or
        transition, 409 not enabled (place, rules, another firing), 422 an input path the token
        lacks (also its ``last_error``)."""
        token = await self.store.get_token(token_id)
        if token is None:
            raise Refused(404, f"unknown token {token_id!r}")
        if version is not None and token.version != version:
            return Fired("stale", token)
        transition = await self._transition(token, transition_id)
        if token.firing is not None:
            if token.firing.transition_id != transition_id:
                busy = token.firing.transition_id or "a place agent"
                raise Refused(409, f"token {token_id!r} is being worked on by {busy!r}")
            # A redelivered request: the run exists, or is created now (once, by its id).
            await self._resume(token)
            return Fired("firing", token, token.firing.execution_id)
        if token.place not in transition.from_places:
            raise Refused(
                409,
                f"transition {transition_id!r} is not enabled: the token is in "
                f"{token.place!r}, not in {transition.from_places}",
            )
        if (rule := failed_rule(transition.all_rules(), token)) is not None:
            raise Refused(409, f"transition {transition_id!r} is not enabled: {rule} is false")
        config = transition.agent_execution
        if config is None:
            moved = await self._move(token, transition, Move(token.data, token.metadata), [])
            return Fired("moved" if moved else "stale", token)
        started = await self._begin(token, AgentStep.of_transition(transition, config))
        if started is None:
            return Fired("stale", token)
        return Fired("firing", started[0], started[1].execution_id)

    async def _begin(
        self, token: Token, step: AgentStep, *, n: int | None = None, claim: str | None = None
    ) -> tuple[Token, TransitionExecution] | None:
        """Set the token's firing for ``step`` (guarded by its version; ``claim`` counts a
        place agent execution in the same write) and start the run; None: the token changed.
        Refused 409 for a deleted agent, 422 for an input path the token lacks."""
        agent = await self.deps.agents.get_agent(step.agent_id)
        if agent is None:
            raise Refused(409, f"the agent {step.agent_id!r} does not exist")
        try:
            mapped = map_input(step.input_mapping, token)
        except MappingError as exc:
            failed = self._next(token, last_error=str(exc), pending_auto=None)
            await self.store.update_token(failed, expected_version=token.version)
            raise Refused(422, str(exc)) from exc
        firing, execution = self._attempt(token, step, mapped, 1, n)
        changes: dict[str, Any] = {"firing": firing, "last_error": None, "pending_auto": None}
        if claim is not None:
            assert n is not None
            # Only this visit's counts are kept: the document stays small.
            visit = claim.rsplit(":", 1)[1]
            kept = {k: v for k, v in token.place_agent_runs.items() if k.endswith(f":{visit}")}
            changes["place_agent_runs"] = {**kept, claim: n}
        updated = self._next(token, **changes)
        if not await self.store.update_token(
            updated, expected_version=token.version, executions=[execution]
        ):
            return None
        await self._start(token, agent, step, mapped, execution)
        return updated, execution

    def _next(self, token: Token, **changes: Any) -> Token:
        """The token's next version with ``changes``."""
        return token.model_copy(
            update={**changes, "version": token.version + 1, "updated_at": self.deps.clock()}
        )

    def _attempt(
        self, token: Token, step: AgentStep, mapped: dict[str, Any], attempt: int, n: int | None
    ) -> tuple[Firing, TransitionExecution]:
        # Every attempt's id comes from the version the firing started at (its first attempt).
        base_version = token.version if token.firing is None else token.firing.version
        label = step.label if n is None else f"{step.label}:{n}"
        run_id = execution_id(token.token_id, label, base_version, attempt)
        now = self.deps.clock()
        transition_id = step.transition.id if step.transition is not None else None
        firing = Firing(
            transition_id=transition_id,
            place_agent=step.place_agent,
            n=n,
            execution_id=run_id,
            run_id=run_id,
            attempt=attempt,
            version=base_version,
            started_at=now,
        )
        execution = TransitionExecution(
            execution_id=run_id,
            token_id=token.token_id,
            workflow_id=token.workflow_id,
            transition_id=transition_id,
            place_agent=step.place_agent,
            place_id=step.place.place_id if step.place is not None else None,
            agent_id=step.agent_id,
            attempt=attempt,
            run_id=run_id,
            input=mapped,
            started_at=now,
        )
        return firing, execution

    async def _start(
        self,
        token: Token,
        agent: AgentDefinition,
        step: AgentStep,
        mapped: dict[str, Any],
        execution: TransitionExecution,
    ) -> None:
        """Start the attempt's run (once, by its id) as ``POST /runs`` does."""
        message = json.dumps(mapped, ensure_ascii=False, sort_keys=True)
        variables = json.loads(json.dumps(token_variables(token, mapped)))
        limited = agent
        if step.timeout_seconds is not None and step.timeout_seconds != agent.timeout_seconds:
            # Seed 004's execution timeout: the attempt's deadline, shorter or longer than the
            # agent's own (an earlier deadline wake-up of the agent's finds it not yet due).
            limited = agent.model_copy(update={"timeout_seconds": step.timeout_seconds})
        generation = None
        if step.generation is not None:
            # llm_config overrides the parameters it sets; the agent's others stay.
            generation = agent.generation.model_copy(
                update=step.generation.model_dump(exclude_unset=True)
            )
        await start_run(
            self.deps,
            run_id=execution.run_id,
            agent=limited,
            message=message,
            variables=variables,
            source=TRANSITION_SOURCE,
            token_link=TokenLink(token_id=token.token_id, execution_id=execution.execution_id),
            generation=generation,
        )
        if limited is not agent:
            # The run's deadline is the transition's timeout: its wake-up ends it there even if
            # the run waits on a model call (the executor's own is at the agent's timeout).
            at = self.deps.clock() + timedelta(seconds=limited.timeout_seconds)
            await self.deps.schedule_wake(WakeUp(run_id=execution.run_id, at=at))
        intent = IntentionMessage.for_run(
            run_id=execution.run_id,
            agent_id=agent.id,
            message=message,
            source_agent="transitions",
            variables=variables,
        )
        start = OutboxMessage(topic="intents", data=intent.model_dump(mode="json"))
        await self.deps.publish([start])

    async def _resume(self, token: Token) -> None:
        """A firing seen again (a redelivered request): start its run if it is not there; if
        it finished and its completion was lost, complete it now."""
        firing = token.firing
        assert firing is not None
        if firing.not_before is not None:
            # A retry waiting out its backoff: its task starts it (scheduled again, harmlessly).
            await self._schedule_retry(token)
            return
        run = await self.deps.runs.get_run(firing.run_id)
        if run is not None and run.finished:
            message = FiringMessage(
                run_id=run.run_id, token_id=token.token_id, execution_id=firing.execution_id
            )
            await self.complete(message)
            return
        execution = await self.store.get_execution(firing.execution_id)
        if run is None and execution is not None:
            step = await self._step_of(token, firing)
            agent = await self.deps.agents.get_agent(step.agent_id)
            if agent is not None:
                await self._start(token, agent, step, dict(execution.input), execution)

    async def _move(
        self,
        token: Token,
        transition: TransitionDefinition,
        move: Move,
        executions: list[TransitionExecution],
    ) -> bool:
        entry = TokenHistoryEntry(
            token_id=token.token_id,
            n=token.history_count + 1,
            transition_id=transition.id,
            from_place=token.place,
            to_place=transition.to_place,
            execution_id=token.firing.execution_id if token.firing else None,
            agent_failed=move.agent_failed,
            at=self.deps.clock(),
        )
        moved = self._next(
            token,
            place=transition.to_place,
            data=move.data,
            metadata=move.metadata,
            history_count=token.history_count + 1,
            firing=None,
            last_error=None,
            pending_auto=None,
            place_agent_runs={},  # counts are per visit of a place
        )
        applied = await self.store.update_token(
            moved, expected_version=token.version, history=entry, executions=executions
        )
        if applied:
            await self.enter(moved)
        return applied

    # -- place agents --------------------------------------------------------------------

    async def enter(self, token: Token, workflow: WorkflowDefinition | None = None) -> None:
        """The token is in a new place (created or moved there): schedule the first execution
        of each of the place's agents (after ``initial_delay_seconds``). Tasks are named after
        their content and counted when they run, so calling this twice is harmless."""
        workflow = workflow or await self.store.get_workflow(token.workflow_id)
        if workflow is None:
            return
        for index, config in enumerate(workflow.place_agents):
            if config.place_id == token.place:
                await self._schedule_first(token, index, config, version=None)

    async def redefined(
        self, previous: WorkflowDefinition | None, workflow: WorkflowDefinition
    ) -> int:
        """The workflow was defined again (``previous`` is the definition it replaced): the
        tokens already in the place of a place agent that is new or whose trigger conditions
        changed get the first execution a token entering the place gets (after
        ``initial_delay_seconds``; seed 004's "enters or exists in"). One query per such place;
        the executions are counted per token and visit as always, so a repeated registration,
        or an agent that already ran on the token this visit, does nothing. The tasks
        scheduled."""
        indices = redefined_place_agents(previous, workflow)
        scheduled = 0
        for place in sorted({workflow.place_agents[i].place_id for i in indices}):
            tokens = await self.store.tokens_in_place(workflow.id, place)
            for index in indices:
                config = workflow.place_agents[index]
                if config.place_id != place:
                    continue
                digest = place_agent_digest(config)
                for token in tokens:
                    await self._schedule_first(
                        token, index, config, version=token.version, salt=digest
                    )
                    scheduled += 1
        return scheduled

    async def _schedule(self, task: PlaceAgentTask, delay_seconds: float, salt: str = "") -> None:
        at = self.deps.clock() + timedelta(seconds=delay_seconds)
        await self._enqueue(task.model_dump_json().encode(), "place", at, salt=salt)

    async def _enqueue(self, body: bytes, prefix: str, at: datetime, *, salt: str = "") -> None:
        """A task on the place agent queue (``{ws}-place-agents`` -> the run executor's
        ``/tasks/place-agent``), named after its content and ``salt`` (production Cloud Tasks
        drops a duplicate; every handler also finds a duplicate harmless)."""
        if not self.deps.settings.wake_url:
            log.warning("CLOUDAGENTS_WAKE_URL is not set: task %s not scheduled", body.decode())
            return
        queue = self.deps.topology.place_agent_queue
        named = body + (b"/" + salt.encode() if salt else b"")
        name = f"{prefix}-" + hashlib.sha256(named).hexdigest()[:40]
        url = self.deps.settings.wake_url.rstrip("/") + queue.path
        await self.deps.tasks.schedule(queue.name, url, body, at, name=name)

    async def handle_task(self, body: bytes) -> str:
        """A task of the place agent queue: a place agent's execution or a retry's start."""
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise PermanentMessageError(f"not JSON: {exc}") from exc
        try:
            if isinstance(data, dict) and "execution_id" in data:
                return await self.start_retry(FiringRetryTask.model_validate(data))
            task = PlaceAgentTask.model_validate(data)
        except ValidationError as exc:
            raise PermanentMessageError(f"not a place agent queue task: {exc}") from exc
        return await self.run_place_agent(task)

    async def run_place_agent(self, task: PlaceAgentTask) -> str:
        """Execution ``task.n`` of a place agent, if the token is still in that visit of the
        place, the number is not taken (a duplicate task does nothing), it is within
        ``max_executions`` and the trigger conditions hold. A token busy with another agent
        is retried (``TransientError``: the task is redelivered)."""
        token = await self.store.get_token(task.token_id)
        if token is None:
            return "gone"
        if token.place != task.place or token.history_count != task.visit:
            return "left"
        workflow = await self.store.get_workflow(token.workflow_id)
        if workflow is None or task.index >= len(workflow.place_agents):
            return "no-place-agent"
        config = workflow.place_agents[task.index]
        if config.place_id != task.place:
            return "no-place-agent"
        if token.place_agent_runs.get(task.key, 0) >= task.n:
            return "duplicate"
        schedule = config.schedule
        if schedule and schedule.max_executions and task.n > schedule.max_executions:
            return "done"
        if failed_rule(config.trigger_conditions, token) is not None:
            # Not now: an interval schedule looks again later (the number is not used).
            await self._next_execution(task, config, n=task.n)
            return "conditions-false"
        if token.firing is not None:
            raise TransientError(f"token {token.token_id} is busy: the task comes back")
        step = AgentStep.of_place(task.index, config)
        try:
            started = await self._begin(token, step, n=task.n, claim=task.key)
        except Refused as refused:
            return f"refused: {refused}"
        return "started" if started is not None else "stale"

    async def _next_execution(self, task: PlaceAgentTask, config: PlaceAgentConfig, n: int) -> None:
        """Schedule execution ``n`` after ``interval_seconds``, within ``max_executions``."""
        schedule = config.schedule
        if schedule is None or schedule.interval_seconds is None:
            return
        if schedule.max_executions is not None and n > schedule.max_executions:
            return
        await self._schedule(task.model_copy(update={"n": n}), schedule.interval_seconds)

    async def handle_message(self, data: bytes) -> str:
        """A ``{ws}-transitions`` message: a finished firing's run (``FiringMessage``) or a
        ``FireIntent``. A fire the token refuses (unknown, not enabled, a path it lacks) can
        never apply: ``PermanentMessageError`` (dead-lettered, acknowledged)."""
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise PermanentMessageError(f"not JSON: {exc}") from exc
        try:
            if isinstance(body, dict) and "transition_id" in body:
                intent = FireIntent.model_validate(body)
            else:
                return await self.complete(FiringMessage.model_validate(body))
        except ValidationError as exc:
            raise PermanentMessageError(f"not a transitions message: {exc}") from exc
        try:
            fired = await self.fire(intent.token_id, intent.transition_id, intent.version)
        except Refused as refused:
            raise PermanentMessageError(f"fire {intent.transition_id}: {refused}") from refused
        return fired.status

    # -- completion ----------------------------------------------------------------------

    async def complete(self, message: FiringMessage) -> str:
        """The run of a firing finished: map its output back and move the token (once), try
        again (``retry_config``), or leave the token with the reason; a place agent updates the
        token in place, then fires its ``auto_transition``."""
        token = await self.store.get_token(message.token_id)
        if token is None:
            return "unknown-token"
        firing = token.firing
        if firing is None or firing.execution_id != message.execution_id:
            if firing is None:
                # A completion that stopped after its write: what it had left to do (the
                # place's agents, an auto_transition) is done again, harmlessly.
                await self.enter(token)
                await self._recheck(token, done_index=None)
                await self._auto_transition(token)
            return "stale"
        run = await self.deps.runs.get_run(message.run_id)
        if run is None or not run.finished or run.result is None:
            return "not-finished"
        try:
            step = await self._step_of(token, firing)
        except Refused as gone:
            # The workflow changed while the agent ran: the firing ends (it would never
            # complete), the token stays with the reason.
            stuck = self._next(token, firing=None, last_error=str(gone))
            await self.store.update_token(stuck, expected_version=token.version)
            return "stayed"
        execution = await self.store.get_execution(firing.execution_id)
        now = self.deps.clock()
        outcome, error, kind = complete(
            token,
            output_mapping=step.output_mapping,
            required=step.required,
            retry=step.retry,
            attempt=firing.attempt,
            result=run.result,
            builtins={
                "agent_id": step.agent_id,
                "timestamp": now.isoformat(),
                "run_id": run.run_id,
                "execution_id": firing.execution_id,
            },
        )
        done: list[TransitionExecution] = []
        if execution is not None:
            done.append(
                execution.model_copy(
                    update={
                        "status": "succeeded" if error is None else "failed",
                        "output": dict(run.result.payload),
                        "error": error,
                        "error_kind": kind,
                        "finished_at": now,
                    }
                )
            )
        match outcome:
            case Move() if step.transition is not None:
                moved = await self._move(token, step.transition, outcome, done)
                return "moved" if moved else "stale"
            case Move():
                return await self._place_agent_done(token, step, outcome, done, firing)
            case Stay(reason):
                stayed = self._next(token, firing=None, last_error=reason)
                applied = await self.store.update_token(
                    stayed, expected_version=token.version, executions=done
                )
                if applied:
                    await self._after_place_execution(stayed, step, firing)
                return "stayed" if applied else "stale"
            case Retry(attempt, backoff):
                return await self._retry(token, step, firing, execution, done, attempt, backoff)
        return "stale"  # pragma: no cover - every outcome is matched above

    async def _retry(
        self,
        token: Token,
        step: AgentStep,
        firing: Firing,
        execution: TransitionExecution | None,
        done: list[TransitionExecution],
        attempt: int,
        backoff: float,
    ) -> str:
        """Attempt ``attempt``, claimed in the token's guarded write (of two completions of the
        failed attempt, one writes it). With a backoff the run does not start here: the firing
        waits (``not_before``) and a Cloud Task on the place agent queue starts it then
        (:meth:`start_retry`), so the push returns at once and a crash loses nothing."""
        agent = await self.deps.agents.get_agent(step.agent_id)
        if agent is None:
            deleted = self._next(token, firing=None, last_error="the agent was deleted")
            await self.store.update_token(deleted, expected_version=token.version, executions=done)
            return "stayed"
        mapped = dict(execution.input) if execution is not None else {}
        next_firing, next_execution = self._attempt(token, step, mapped, attempt, firing.n)
        delayed = backoff > 0 and bool(self.deps.settings.wake_url)
        if backoff > 0 and not delayed:
            log.warning(
                "CLOUDAGENTS_WAKE_URL is not set: retry %s starts without its backoff", attempt
            )
        if delayed:
            at = self.deps.clock() + timedelta(seconds=backoff)
            next_firing = next_firing.model_copy(update={"not_before": at})
            next_execution = next_execution.model_copy(
                update={"status": "scheduled", "started_at": at}
            )
        retried = self._next(token, firing=next_firing)
        if not await self.store.update_token(
            retried, expected_version=token.version, executions=[*done, next_execution]
        ):
            return "stale"
        if delayed:
            await self._schedule_retry(retried)
            return f"retry:{attempt}:scheduled"
        await self._start(token, agent, step, mapped, next_execution)
        return f"retry:{attempt}"

    async def _schedule_retry(self, token: Token) -> None:
        """The Cloud Task that starts the token's waiting retry at its ``not_before`` (named
        after the attempt: scheduling it again is harmless)."""
        firing = token.firing
        assert firing is not None and firing.not_before is not None
        task = FiringRetryTask(token_id=token.token_id, execution_id=firing.execution_id)
        await self._enqueue(task.model_dump_json().encode(), "retry", firing.not_before)

    async def start_retry(self, task: FiringRetryTask) -> str:
        """A retry's backoff is over: claim its start in the token's guarded write
        (``not_before`` cleared) and start its run. A duplicate task finds it claimed and does
        nothing (``duplicate``); one that finds it claimed with no run (the claimer crashed
        before starting it) starts it (the run is created once, by its id)."""
        token = await self.store.get_token(task.token_id)
        if token is None:
            return "gone"
        firing = token.firing
        if firing is None or firing.execution_id != task.execution_id:
            return "stale"
        if firing.not_before is None:
            if await self.deps.runs.get_run(firing.run_id) is not None:
                return "duplicate"
            await self._resume(token)
            return "started"
        if self.deps.clock() < firing.not_before - timedelta(seconds=RETRY_SLACK_SECONDS):
            raise TransientError(f"retry {firing.execution_id} is not due yet")
        try:
            step = await self._step_of(token, firing)
        except Refused as gone:
            stuck = self._next(token, firing=None, last_error=str(gone))
            await self.store.update_token(stuck, expected_version=token.version)
            return "stayed"
        agent = await self.deps.agents.get_agent(step.agent_id)
        execution = await self.store.get_execution(firing.execution_id)
        now = self.deps.clock()
        if agent is None or execution is None:
            reason = "the agent was deleted" if agent is None else "the retry's execution is lost"
            ended = self._next(token, firing=None, last_error=reason)
            await self.store.update_token(ended, expected_version=token.version)
            return "stayed"
        started = execution.model_copy(update={"status": "running", "started_at": now})
        claimed = self._next(
            token, firing=firing.model_copy(update={"not_before": None, "started_at": now})
        )
        if not await self.store.update_token(
            claimed, expected_version=token.version, executions=[started]
        ):
            return "duplicate"
        await self._start(token, agent, step, dict(execution.input), started)
        return "started"

    async def _place_agent_done(
        self,
        token: Token,
        step: AgentStep,
        outcome: Move,
        done: list[TransitionExecution],
        firing: Firing,
    ) -> str:
        auto = step.place.auto_transition if step.place is not None else None
        updated = self._next(
            token,
            data=outcome.data,
            metadata=outcome.metadata,
            firing=None,
            last_error=None,
            pending_auto=auto,
        )
        if not await self.store.update_token(
            updated, expected_version=token.version, executions=done
        ):
            return "stale"
        await self._after_place_execution(updated, step, firing)
        await self._recheck(updated, done_index=step.place_agent)
        await self._auto_transition(updated)
        return "updated"

    async def _recheck(self, token: Token, done_index: int | None) -> None:
        """The token sits in its place with new data (a place agent's output): the place's
        other agents without an interval schedule (those look again on their own) check their
        trigger conditions again, after their ``initial_delay_seconds``. Their executions are
        counted as always, so one that already ran this visit does nothing."""
        workflow = await self.store.get_workflow(token.workflow_id)
        if workflow is None:
            return
        for index, config in enumerate(workflow.place_agents):
            if index == done_index or config.place_id != token.place:
                continue
            if config.schedule is not None and config.schedule.interval_seconds is not None:
                continue
            await self._schedule_first(token, index, config, version=token.version)

    async def _schedule_first(
        self,
        token: Token,
        index: int,
        config: PlaceAgentConfig,
        *,
        version: int | None,
        salt: str = "",
    ) -> None:
        """The first execution of place agent ``index`` on the token's current visit, after
        the schedule's initial delay (counted when it runs, so scheduling twice is harmless)."""
        delay = (config.schedule.initial_delay_seconds if config.schedule else None) or 0
        task = PlaceAgentTask(
            token_id=token.token_id,
            place=token.place,
            index=index,
            visit=token.history_count,
            n=1,
            version=version,
        )
        await self._schedule(task, delay, salt=salt)

    async def _after_place_execution(self, token: Token, step: AgentStep, firing: Firing) -> None:
        """A place agent execution ended: its next one, on an interval schedule."""
        if step.place is None or step.place_agent is None or firing.n is None:
            return
        task = PlaceAgentTask(
            token_id=token.token_id,
            place=step.place.place_id,
            index=step.place_agent,
            visit=token.history_count,
            n=firing.n,
        )
        await self._next_execution(task, step.place, n=firing.n + 1)

    async def _auto_transition(self, token: Token) -> None:
        """Fire the token's pending ``auto_transition`` (once: firing it clears it)."""
        if token.pending_auto is None or token.firing is not None:
            return
        try:
            await self.fire(token.token_id, token.pending_auto, token.version)
        except Refused as refused:
            cleared = self._next(token, pending_auto=None, last_error=f"auto_transition: {refused}")
            await self.store.update_token(cleared, expected_version=token.version)
