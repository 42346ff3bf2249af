"""Ports: one ``typing.Protocol`` per role. Adapters implement them; nothing else knows an SDK."""
