"""Build hook: the wheel carries the checkout's top-level resource folders as package data.

``codegen/``, ``hil/``, ``models/`` and ``verification/`` sit at
the top of the checkout, where the editable install uses them in place. A
regular build copies them into ``scpo_ctrl/_resources/`` of its build tree, where
:func:`scpo_ctrl.resources.resource_dir` finds them in an installation. The list
of folders is read from ``scpo_ctrl/resources.py`` so that there is one.
The sdist carries the folders themselves (MANIFEST.in), so a wheel built from it
gets the same copies. Everything else is in pyproject.toml.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: build by-products and caches that must not travel with the resources
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[co]", "*.o", "*.elf", "*.so", ".*")


def _resources_module():
    spec = importlib.util.spec_from_file_location("_scpo_ctrl_resources", ROOT / "scpo_ctrl" / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithResources(build_py):
    """``build_py`` that also copies the resource folders into ``<build>/scpo_ctrl/_resources/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the editable install uses the checkout's folders in place
        resources = _resources_module()
        target = Path(self.build_lib) / "scpo_ctrl" / resources.INSTALLED_RESOURCES
        shutil.rmtree(target, ignore_errors=True)
        for name in resources.RESOURCE_DIRECTORIES:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, target / name, ignore=IGNORED)


setup(cmdclass={"build_py": BuildPyWithResources})
