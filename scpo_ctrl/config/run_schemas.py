"""The JSON schemas of a run directory's files (``verification/schemas/*.schema.json``), and validation.

Each schema names the run files it describes in ``x-run-files`` (glob patterns relative to the run directory,
``*`` not crossing ``/``); ``x-json-lines: true`` marks a file of one JSON document per line (``training.jsonl``).
``common.schema.json`` only holds shared definitions. Schemas are JSON Schema draft 2020-12, and refer to each
other by relative ``$ref`` resolved offline (no network).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..resources import resource_dir

SCHEMA_SUFFIX = ".schema.json"
#: the run files (by suffix) a run directory's validation looks at
RUN_FILE_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class RunFileSchema:
    """One schema file: ``name`` (file name), ``patterns`` (``x-run-files``), ``json_lines``, the ``schema``."""

    name: str
    patterns: tuple
    json_lines: bool
    schema: dict

    def matches(self, relative: str) -> bool:
        """True when the run file ``relative`` (posix path inside the run directory) is one this schema describes."""
        return any(_glob(pattern).fullmatch(relative) for pattern in self.patterns)


def schema_dir() -> Path:
    """``verification/schemas/``, through the package's resource resolver."""
    return resource_dir("verification") / "schemas"


def run_file_schemas(directory: Path | None = None) -> tuple:
    """Every schema of ``directory`` (default :func:`schema_dir`), sorted by name, as :class:`RunFileSchema`."""
    directory = directory or schema_dir()
    schemas = []
    for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
        schema = json.loads(path.read_text())
        schemas.append(RunFileSchema(name=path.name, patterns=tuple(schema.get("x-run-files", ())),
                                     json_lines=bool(schema.get("x-json-lines", False)), schema=schema))
    return tuple(schemas)


def schema_for(relative: str, schemas: tuple | None = None) -> RunFileSchema | None:
    """The schema of the run file ``relative`` (e.g. ``hil/sil/report.json``), or None if none describes it."""
    for schema in schemas if schemas is not None else run_file_schemas():
        if schema.matches(relative):
            return schema
    return None


def validate_document(document, schema: RunFileSchema, schemas: tuple) -> list:
    """Messages (``at PATH: problem``) for each way ``document`` breaks ``schema``; empty when it is valid."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (entry.schema["$id"], Resource.from_contents(entry.schema)) for entry in schemas if "$id" in entry.schema)
    validator = Draft202012Validator(schema.schema, registry=registry)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    return [f"at {'/'.join(str(part) for part in error.absolute_path) or '(top)'}: {error.message}"
            for error in errors]


def validate_run_file(path: Path, relative: str, schemas: tuple | None = None) -> list:
    """Problems of the run file ``path`` (``relative`` inside its run directory) against its schema.

    Returns a list of messages: empty when valid; one message when no schema describes the file or it is
    not JSON.
    """
    schemas = schemas if schemas is not None else run_file_schemas()
    schema = schema_for(relative, schemas)
    if schema is None:
        return [f"{relative}: no schema in verification/schemas/ describes this file"]
    text = Path(path).read_text()
    try:
        documents = ([json.loads(line) for line in text.splitlines() if line.strip()] if schema.json_lines
                     else [json.loads(text)])
    except json.JSONDecodeError as exc:
        return [f"{relative}: not valid JSON ({exc})"]
    problems = []
    for index, document in enumerate(documents):
        where = f"{relative} line {index + 1}" if schema.json_lines else relative
        problems += [f"{where} ({schema.name}) {message}" for message in validate_document(document, schema, schemas)]
    return problems


def validate_run_dir(run_dir: Path, schemas: tuple | None = None) -> dict:
    """``{relative path: problems}`` for every JSON / JSON-lines file of a run directory (export build trees
    and hidden files excluded); a file without a schema is a problem too."""
    run_dir = Path(run_dir)
    schemas = schemas if schemas is not None else run_file_schemas()
    results = {}
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir).as_posix()
        if not path.is_file() or path.suffix not in RUN_FILE_SUFFIXES or any(
                part.startswith(".") or part == "build" for part in path.relative_to(run_dir).parts[:-1]):
            continue
        results[relative] = validate_run_file(path, relative, schemas)
    return results


def _glob(pattern: str) -> re.Pattern:
    """A ``*``-glob (``*`` within one path component) as a regular expression."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))
