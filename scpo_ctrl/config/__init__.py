"""YAML -> validated frozen dataclasses."""
