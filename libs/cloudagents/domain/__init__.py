"""Domain models: pydantic types with no I/O. Everything persisted carries ``schema_version``."""
