"""Contract suites: every port's promises, checked on the in-memory fake and on the emulators."""
