"""Call the compiled host build of the C bundle from Python (ctypes), on batches of states."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .law import LawOutput

DTYPES = {"float32": (np.float32, ctypes.c_float), "float64": (np.float64, ctypes.c_double)}


class HostLaw:
    """The exported step function of a host shared library.

    Parameters
    ----------
    library : Path
        ``lib<name>_policy.so`` built with the host batch helper.
    name : str
        Plant name (symbol prefix).
    nx, nu : int
    precision : {'float32', 'float64'}
    """

    def __init__(self, library: Path, name: str, nx: int, nu: int, precision: str, backup_input: bool = False):
        self.nx, self.nu, self.precision, self.backup_input = nx, nu, precision, backup_input
        self.dtype, real = DTYPES[precision]
        self._library = ctypes.CDLL(str(Path(library).resolve()))
        real_p, int_p = ctypes.POINTER(real), ctypes.POINTER(ctypes.c_int32)
        self._batch = getattr(self._library, f"{name}_policy_batch")
        extra = [real_p] if backup_input else []
        self._batch.argtypes = [ctypes.c_int32, real_p, *extra, real_p, int_p, int_p, real_p, real_p]
        self._batch.restype = None
        self._backup = getattr(self._library, f"{name}_backup_batch")
        self._backup.argtypes = [ctypes.c_int32, real_p, *extra, real_p]
        self._backup.restype = None
        self._real_p, self._int_p = real_p, int_p

    def _pointer(self, array: np.ndarray, kind):
        return array.ctypes.data_as(kind)

    def _backup_arguments(self, X: np.ndarray, U_backup) -> list:
        """The backup's inputs as the build's type (a list with one array, or empty for an LQR build); the
        caller keeps the list alive during the C call."""
        if not self.backup_input:
            if U_backup is not None:
                raise ValueError("this build computes its backup itself; U_backup must not be given")
            return []
        if U_backup is None:
            raise ValueError("this build runs on an MPC backup: its inputs U_backup (N, nu) are needed")
        U_backup = np.ascontiguousarray(np.atleast_2d(U_backup), dtype=self.dtype)
        if U_backup.shape != (len(X), self.nu):
            raise ValueError(f"U_backup has shape {U_backup.shape}, expected {(len(X), self.nu)}")
        return [U_backup]

    def evaluate(self, X: np.ndarray, U_backup: np.ndarray | None = None) -> LawOutput:
        """The C step on each row of ``X (N, nx)`` (cast to the build's precision); float64 results.

        ``U_backup (N, nu)``: the backup's inputs, for a build whose backup is an input (MPC).
        """
        X = np.ascontiguousarray(np.atleast_2d(X), dtype=self.dtype)
        if X.shape[1] != self.nx:
            raise ValueError(f"expected states with {self.nx} columns, got {X.shape[1]}")
        n = len(X)
        kept = self._backup_arguments(X, U_backup)
        backup = [self._pointer(array, self._real_p) for array in kept]
        u = np.empty((n, self.nu), dtype=self.dtype)
        branch, reason = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32)
        gate, level = np.empty(n, dtype=self.dtype), np.empty(n, dtype=self.dtype)
        self._batch(n, self._pointer(X, self._real_p), *backup, self._pointer(u, self._real_p),
                    self._pointer(branch, self._int_p), self._pointer(reason, self._int_p),
                    self._pointer(gate, self._real_p), self._pointer(level, self._real_p))
        return LawOutput(u=u.astype(float), branch=branch, reason=reason, gate=gate.astype(float),
                         level=level.astype(float))

    def backup(self, X: np.ndarray, U_backup: np.ndarray | None = None) -> np.ndarray:
        """``<name>_backup_step`` on each row of ``X (N, nx)``; returns ``(N, nu)``."""
        X = np.ascontiguousarray(np.atleast_2d(X), dtype=self.dtype)
        kept = self._backup_arguments(X, U_backup)
        backup = [self._pointer(array, self._real_p) for array in kept]
        u = np.empty((len(X), self.nu), dtype=self.dtype)
        self._backup(len(X), self._pointer(X, self._real_p), *backup, self._pointer(u, self._real_p))
        return u.astype(float)
