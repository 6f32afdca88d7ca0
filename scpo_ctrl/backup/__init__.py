"""Backup controllers and their target sets."""
