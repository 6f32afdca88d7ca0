"""Read a YAML document into plain Python values while keeping line numbers.

The loader is PyYAML's safe loader with three changes a plant file needs:
floats such as ``1e-3`` (no dot) are floats, duplicate keys are errors, and
the document may build at most ``MAX_NODES`` values (alias bombs stop here).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError

MAX_FILE_BYTES = 1_000_000
MAX_NODES = 100_000

_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """Safe loader whose float resolver also accepts ``1e-3``."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789."))


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML document.

    Attributes
    ----------
    data : Any
        The document as dicts, lists and scalars.
    lines : dict
        1-based line of each value, keyed by its key path (a tuple of keys and
        list indices).
    source : str
        The file name used in messages.
    sha256 : str
        Hex digest of the file's bytes.
    text : str
        The file's text.
    """

    data: Any
    lines: dict
    source: str
    sha256: str
    text: str = ""

    def line_of(self, path: tuple) -> int | None:
        """Line of the value at ``path``, or of its closest parent."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def read_yaml(path: Path, source: str | None = None) -> YamlDocument:
    """Read and parse ``path``; every failure is a :class:`SpecError`."""
    source = source or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(source, "", "file not found") from None
    except IsADirectoryError:
        raise SpecError(source, "", "is a directory, expected a YAML file") from None
    except OSError as exc:
        raise SpecError(source, "", f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(source, "", f"file is {len(raw)} bytes; at most {MAX_FILE_BYTES} are read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, "", f"not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse YAML ``text``; ``source`` names it in messages."""
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(source, "", "the file is empty; expected a mapping of plant keys")
        builder = _Builder(loader, source)
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(source, "", f"YAML syntax error: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, "", f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    return YamlDocument(data=data, lines=builder.lines, source=source, sha256=sha256, text=text)


class _Builder:
    """Turns composed nodes into Python values, recording lines per key path."""

    def __init__(self, loader: _Loader, source: str):
        self.loader = loader
        self.source = source
        self.lines: dict = {}
        self.count = 0

    def build(self, node: yaml.Node, path: tuple) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError(self.source, "", f"document expands to more than {MAX_NODES} values (alias bomb?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            out: dict = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise SpecError(self.source, dotted_path(path), f"keys must be text, got {key!r}", key_node.start_mark.line + 1)
                if key in out:
                    raise SpecError(self.source, dotted_path(path + (key,)), "duplicate key", key_node.start_mark.line + 1)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (index,)) for index, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def dotted_path(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text

