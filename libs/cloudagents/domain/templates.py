"""Prompt templates (seed 004's ``AgentPrompts``): ``user_template`` and ``context_instructions``
are format strings over the run's variables.

Seed 004's built-in variables are filled from the workflow token a run works on
(``transitions/``): ``{input_data}`` (the mapped input, as JSON), ``{token_id}``,
``{current_place}``, ``{token_metadata}`` (JSON), ``{workflow_id}``, ``{history_count}`` (the
token's transitions so far). ``{input}`` is the run's message, and outside a workflow
``{input_data}`` is the message too. A variable a template names that the run does not have is a
:class:`TemplateError`: the run ends ``ERROR`` with it (``RunRecord.opening_error``), the caller
never sees an exception.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

TOKEN_VARIABLES = (
    "input_data",
    "token_id",
    "current_place",
    "token_metadata",
    "workflow_id",
    "history_count",
)
"""Seed 004's built-in template variables, filled on runs of a workflow token."""


class TemplateError(ValueError):
    """A template names variables the run does not have (or does not parse)."""

    def __init__(self, which: str, missing: list[str]) -> None:
        builtin = [name for name in missing if name in TOKEN_VARIABLES]
        hint = (
            f" ({', '.join(builtin)}: filled only on runs of a workflow token)" if builtin else ""
        )
        super().__init__(f"{which} needs variables {missing} that were not given{hint}")
        self.which = which
        self.missing = missing


def template_fields(template: str) -> list[str]:
    """The variable names a format string uses, in order, once each (``{a.b}`` names ``a.b``:
    attribute and index access are not variables this renders)."""
    names = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    return list(dict.fromkeys(names))


def check_parses(template: str, which: str) -> None:
    """Raise ``ValueError`` naming ``which`` if ``template`` is not a format string."""
    try:
        list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{which} does not parse: {exc}") from exc


def render(template: str, values: Mapping[str, Any], *, which: str) -> str:
    """``template`` filled from ``values``; :class:`TemplateError` names what is missing."""
    missing = [name for name in template_fields(template) if name not in values]
    if missing:
        raise TemplateError(which, missing)
    try:
        return template.format_map(dict(values))
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        # ``{a.b}``, ``{a[0]}`` or a bad format spec: the variable exists but this use of it
        # cannot render.
        raise TemplateError(which, [str(exc)]) from exc
