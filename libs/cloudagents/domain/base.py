"""Shared model configuration and the schema-version rule for persisted documents."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from cloudagents.domain.errors import NewerSchemaVersion


class Model(BaseModel):
    """Base for every domain type: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Persisted(Model):
    """A record we write (a document, a message on the wire, a transcript entry). Readers accept
    released versions and refuse newer ones with ``NewerSchemaVersion`` (retryable)."""

    CURRENT_SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = 1

    @model_validator(mode="before")
    @classmethod
    def _check_schema_version(cls, data: Any) -> Any:
        if isinstance(data, dict):
            version = data.get("schema_version", 1)
            if isinstance(version, int) and version > cls.CURRENT_SCHEMA_VERSION:
                raise NewerSchemaVersion(
                    f"{cls.__name__} schema_version {version} is newer than this release "
                    f"understands ({cls.CURRENT_SCHEMA_VERSION}); upgrade cloudagents"
                )
        return data


def newer_schema(error: ValidationError) -> bool:
    """Whether validation failed only because a record is from a newer release."""
    problems = error.errors()
    return bool(problems) and all(
        isinstance((p.get("ctx") or {}).get("error"), NewerSchemaVersion) for p in problems
    )
