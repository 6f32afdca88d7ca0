"""Policies as CasADi functions of (x, theta)."""
