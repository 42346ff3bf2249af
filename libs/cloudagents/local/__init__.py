"""Local development helpers: start and stop the GCP emulators for tests and ``make up``."""
