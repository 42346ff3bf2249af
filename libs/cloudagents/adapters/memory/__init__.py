"""In-memory fakes of every port: fast, for unit tests and the in-process runner."""
