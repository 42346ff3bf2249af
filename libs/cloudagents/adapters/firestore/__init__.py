"""Firestore adapters: runs and their sub-collections, agents, dead letters, budget counters."""
