"""Shared model configuration and the schema-version rule for persisted documents."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class Model(BaseModel):
    """Base for every domain type: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Persisted(Model):
    """A document we write. Readers accept released versions and fail fast on newer ones."""

    CURRENT_SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = 1

    @model_validator(mode="before")
    @classmethod
    def _check_schema_version(cls, data: Any) -> Any:
        if isinstance(data, dict):
            version = data.get("schema_version", 1)
            if isinstance(version, int) and version > cls.CURRENT_SCHEMA_VERSION:
                raise ValueError(
                    f"{cls.__name__} schema_version {version} is newer than this release "
                    f"understands ({cls.CURRENT_SCHEMA_VERSION}); upgrade cloudagents"
                )
        return data
