"""The package version, in a module of its own so that every module can name it without importing the
package root (which re-exports the API, and so imports everything)."""

__version__ = "0.1.0"
