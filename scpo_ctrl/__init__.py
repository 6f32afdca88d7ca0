"""scpo-ctrl: safe adaptation of neural controllers on top of a certified backup."""

__version__ = "0.1.0"
