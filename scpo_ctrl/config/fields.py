"""Typed reads from a parsed YAML document, each failure naming its key path."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..errors import SpecError
from .yaml_source import YamlDocument, dotted_path

_MISSING = object()


@dataclass(frozen=True)
class Field:
    """A value of a YAML document together with where it came from.

    Attributes
    ----------
    value : Any
        The plain value (dict, list, str, number, bool or None).
    path : tuple
        Key path from the document root.
    document : YamlDocument
        The document, for the file name and line numbers.
    """

    value: Any
    path: tuple
    document: YamlDocument

    # -- errors -------------------------------------------------------------
    def error(self, message: str) -> SpecError:
        """A :class:`SpecError` located at this field."""
        return SpecError(self.document.source, dotted_path(self.path), message, self.document.line_of(self.path))

    @property
    def where(self) -> str:
        return dotted_path(self.path)

    # -- structure ----------------------------------------------------------
    def mapping(self, allowed: Iterable[str], required: Iterable[str] = ()) -> "Field":
        """Check this is a mapping whose keys are ``allowed`` and include ``required``."""
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {_kind(self.value)}")
        allowed = list(allowed)
        for key in self.value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {', '.join(allowed)}"
                raise self.child(key).error(f"unknown key {key!r}{hint}")
        for key in required:
            if key not in self.value:
                raise self.error(f"missing required key {key!r}")
        return self

    def child(self, key: Any) -> "Field":
        """The field at ``key`` (a missing key gives a field whose value is ``None``)."""
        if isinstance(self.value, dict):
            value = self.value.get(key)
        elif isinstance(self.value, list) and isinstance(key, int) and 0 <= key < len(self.value):
            value = self.value[key]
        else:
            value = None
        return Field(value, self.path + (key,), self.document)

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def items(self) -> list[tuple[str, "Field"]]:
        """Key/field pairs of a mapping, in file order."""
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {_kind(self.value)}")
        return [(key, self.child(key)) for key in self.value]

    def elements(self, min_count: int = 0) -> list["Field"]:
        """The fields of a list."""
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {_kind(self.value)}")
        if len(self.value) < min_count:
            raise self.error(f"expected at least {min_count} element(s), got {len(self.value)}")
        return [self.child(index) for index in range(len(self.value))]

    # -- scalars ------------------------------------------------------------
    def number(self, *, positive: bool = False, nonnegative: bool = False, default: Any = _MISSING) -> float:
        """A finite float (ints accepted; bools and text are not)."""
        if self.value is None and default is not _MISSING:
            return default
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"expected a number, got {_kind(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(f"expected a finite number, got {value}")
        if positive and value <= 0:
            raise self.error(f"expected a number > 0, got {value:g}")
        if nonnegative and value < 0:
            raise self.error(f"expected a number >= 0, got {value:g}")
        return value

    def integer(self, *, minimum: int | None = None, maximum: int | None = None, default: Any = _MISSING) -> int:
        """An integer within the given bounds."""
        if self.value is None and default is not _MISSING:
            return default
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.error(f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(f"expected an integer <= {maximum}, got {value}")
        return value

    def text(self, *, default: Any = _MISSING, choices: Iterable[str] | None = None) -> str:
        """A string, optionally one of ``choices``."""
        if self.value is None and default is not _MISSING:
            return default
        if not isinstance(self.value, str):
            raise self.error(f"expected text, got {_kind(self.value)}")
        if choices is not None:
            choices = list(choices)
            if self.value not in choices:
                raise self.error(f"expected one of {', '.join(choices)}; got {self.value!r}")
        return self.value

    def boolean(self, *, default: Any = _MISSING) -> bool:
        if self.value is None and default is not _MISSING:
            return default
        if not isinstance(self.value, bool):
            raise self.error(f"expected true or false, got {_kind(self.value)}")
        return self.value

    def vector(self, length: int | None = None) -> np.ndarray:
        """A list of finite numbers, shape ``(length,)``."""
        values = [element.number() for element in self.elements()]
        if length is not None and len(values) != length:
            raise self.error(f"expected {length} number(s), got {len(values)}")
        return _frozen(np.array(values, dtype=float))

    def matrix(self, rows: int | None = None, cols: int | None = None) -> np.ndarray:
        """A list of equal-length lists of finite numbers, shape ``(rows, cols)``."""
        row_fields = self.elements(min_count=1)
        data = []
        for row in row_fields:
            data.append([element.number() for element in row.elements(min_count=1)])
        widths = {len(row) for row in data}
        if len(widths) != 1:
            raise self.error("rows have different lengths")
        out = np.array(data, dtype=float)
        if rows is not None and out.shape[0] != rows:
            raise self.error(f"expected {rows} row(s), got {out.shape[0]}")
        if cols is not None and out.shape[1] != cols:
            raise self.error(f"expected {cols} column(s), got {out.shape[1]}")
        return _frozen(out)

    def weight_matrix(self, n: int, *, definite: bool) -> np.ndarray:
        """A diagonal (list) or full symmetric weight matrix, shape ``(n, n)``.

        ``definite`` asks for positive definite; otherwise semidefinite.
        """
        if isinstance(self.value, list) and self.value and all(not isinstance(v, list) for v in self.value):
            diagonal = self.vector(n)
            M = np.diag(diagonal)
        else:
            M = np.array(self.matrix(n, n))
        if not np.allclose(M, M.T, rtol=0.0, atol=1e-12 * max(1.0, np.abs(M).max())):
            raise self.error("expected a symmetric matrix")
        eigenvalues = np.linalg.eigvalsh(M)
        scale = max(1.0, np.abs(eigenvalues).max())
        if definite and eigenvalues.min() <= 1e-12 * scale:
            raise self.error(f"expected a positive definite matrix (smallest eigenvalue {eigenvalues.min():.3g})")
        if not definite and eigenvalues.min() < -1e-12 * scale:
            raise self.error(f"expected a positive semidefinite matrix (smallest eigenvalue {eigenvalues.min():.3g})")
        return _frozen(M)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
