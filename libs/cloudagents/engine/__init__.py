"""The pure step logic: (run progress, model reply) -> outcome. No I/O here."""
