"""scpo-ctrl: safe adaptation of neural controllers on top of a certified backup.

The Python API mirrors the command line's verbs (documented in :mod:`scpo_ctrl.api`)::

    plant = scpo_ctrl.load_plant("double_integrator")      # or scpo_ctrl.plant_from_state_space(...)
    scpo_ctrl.check(plant); run = scpo_ctrl.adapt(plant, "runs/di", iterations=3)
    scpo_ctrl.export(run.run_dir); scpo_ctrl.verify(run.run_dir); scpo_ctrl.hil(run.run_dir)
    scpo_ctrl.report(run.run_dir)

``check``, ``adapt``, ``export``, ``verify``, ``hil`` and ``report`` share their names with the modules that
implement them: ``scpo_ctrl.export(...)`` runs the verb, and attribute access on it reaches the module
(``scpo_ctrl.export.run`` is the module ``scpo_ctrl/export/run.py``; ``from scpo_ctrl.export.run import ...``
works as ever). Everything is imported on first use: the numerical stack takes seconds to import, and
``scpo-ctrl --version`` should not wait for it.
"""

import sys
import types
from importlib import import_module

from .version import __version__

#: the verbs, each also the name of the module implementing it
_VERBS = ("check", "adapt", "export", "verify", "hil", "report")
_FUNCTIONS = {"load_plant": "scpo_ctrl.api", "plant_from_state_space": "scpo_ctrl.config.state_space"}

__all__ = ["__version__", "load_plant", "plant_from_state_space", *_VERBS]


class _Verb:
    """``scpo_ctrl.<verb>``: calling it calls :func:`scpo_ctrl.api.<verb>`; its attributes are the module's."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    @property
    def __wrapped__(self):
        """The API function (``help`` and ``inspect.signature`` show its documentation and parameters)."""
        return getattr(import_module("scpo_ctrl.api"), self._name)

    @property
    def __doc__(self):
        return self.__wrapped__.__doc__

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, attribute: str):
        if attribute.startswith("__") and attribute.endswith("__"):
            raise AttributeError(attribute)
        module = import_module(f"scpo_ctrl.{self._name}")
        try:
            return getattr(module, attribute)
        except AttributeError:
            if not hasattr(module, "__path__"):
                raise
        try:  # a submodule not imported yet (scpo_ctrl.verify.run)
            return import_module(f"{module.__name__}.{attribute}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{module.__name__}.{attribute}":
                raise
            raise AttributeError(f"module {module.__name__!r} has no attribute {attribute!r}") from None

    def __setattr__(self, attribute: str, value):
        # setting through the dotted path (monkeypatch or mock.patch of "scpo_ctrl.export.run") reaches the module
        setattr(import_module(f"scpo_ctrl.{self._name}"), attribute, value)

    def __repr__(self) -> str:
        return f"<scpo-ctrl verb {self._name}: scpo_ctrl.api.{self._name}>"


class _Package(types.ModuleType):
    """The package module: a verb's name stays the verb when the import system binds its module here."""

    def __setattr__(self, name: str, value):
        if name in _VERBS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def __getattr__(name: str):
    module = _FUNCTIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'scpo_ctrl' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(_FUNCTIONS))


for _name in _VERBS:
    globals()[_name] = _Verb(_name)
del _name
sys.modules[__name__].__class__ = _Package
