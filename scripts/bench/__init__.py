"""``make bench``: cloudagents side by side with its peers (see docs/performance.md)."""
