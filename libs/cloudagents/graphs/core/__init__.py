"""Seed 001's ``distributed_agents.core`` import path."""
