"""Batched closed-loop simulation and safety metrics."""
