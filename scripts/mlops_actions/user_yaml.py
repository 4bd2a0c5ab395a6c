"""YAML written by users (mlops.yaml, the YAML inputs), parsed safely and with limits.

PyYAML's SafeLoader takes the last of two equal keys without a word, and expands aliases
without a bound: a "billion laughs" document of a few hundred bytes becomes a billion nodes for
whatever walks it afterwards. `Loader` refuses both, at the line they are on: duplicate keys
while mappings are constructed, and a document larger than `MAX_NODES` nodes once every alias
is expanded while it is composed (linear in the text, before anything walks it). Anchors and
merge keys (`<<: *defaults`) keep working within that bound.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from .errors import ConfigError

MAX_BYTES = 1024 * 1024  # a config is a few KB; the schema walk of much more is slow
MAX_NODES = 100_000  # nodes after alias expansion; a config has a few hundred
MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitError(yaml.MarkedYAMLError):
    """The document expands past MAX_NODES, or an alias refers to the node that holds it."""


class DuplicateKeyError(ConstructorError):
    """A mapping sets the same key twice; `context_mark` is the first, `problem_mark` the second."""


try:  # libyaml's parser makes the events ten times faster; PyYAML composes and constructs
    from yaml._yaml import CParser as _Events
except ImportError:  # PyYAML built without libyaml

    class _Events(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class Loader(Composer, SafeConstructor, Resolver, _Events):
    """SafeLoader that refuses duplicate keys and bounds alias expansion.

    Python's Composer on libyaml's events (unlike CSafeLoader, whose C composer has no hook).
    """

    def __init__(self, stream: str, max_nodes: int = MAX_NODES) -> None:
        _Events.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.max_nodes = max_nodes
        self._sizes: dict[yaml.Node, int] = {}  # node -> its node count, aliases expanded
        self._parents: dict[yaml.Node, tuple[yaml.Node | None, Any]] = {}  # for key paths
        self._checked: set[yaml.Node] = set()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        is_alias = self.check_event(yaml.AliasEvent)
        mark: Any = getattr(self.peek_event(), "start_mark", None)
        node = super().compose_node(parent, index)
        assert node is not None  # an event was there: check_node() said so
        if is_alias:
            if node not in self._sizes:  # its anchor is still open: `&a [*a]` never ends
                raise LimitError(
                    problem="an alias refers to a node that holds it", problem_mark=mark
                )
            return node  # counted where it is used, by the parent's sum below
        self._parents[node] = (parent, index)
        size = 1 + sum(self._sizes[child] for child in _children(node))
        if size > self.max_nodes:
            raise LimitError(
                problem=f"the document expands to more than {self.max_nodes:,} nodes "
                "(aliases count every time they are used); a config has a few hundred",
                problem_mark=node.start_mark,
            )
        self._sizes[node] = size
        return node

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # The first call sees the keys as written; merging (`<<`) then rewrites node.value.
        if node not in self._checked:
            self._checked.add(node)
            self._refuse_duplicates(node)
        super().flatten_mapping(node)

    def _refuse_duplicates(self, node: yaml.MappingNode) -> None:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # merged keys may be overridden: that is their point
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeConstructor refuses it itself
                continue
            if first is not key_node:
                raise DuplicateKeyError(
                    context=f"{self.key_path(node)}{_step(key_node)} is first set here",
                    context_mark=first.start_mark,
                    problem=f"duplicate key {self.key_path(node)}{_step(key_node)}",
                    problem_mark=key_node.start_mark,
                )

    def key_path(self, node: yaml.Node) -> str:
        """`$.gate.rules[0]`: where a node first appears in the document."""
        steps: list[str] = []
        parent, index = self._parents.get(node, (None, None))
        while parent is not None:
            steps.append(f"[{index}]" if isinstance(index, int) else _step(index))
            parent, index = self._parents.get(parent, (None, None))
        return "$" + "".join(reversed(steps))


def _step(key_node: Any) -> str:
    return f".{key_node.value}" if isinstance(key_node, yaml.ScalarNode) else ".<key>"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _line_map(root: yaml.Node) -> dict[tuple[Any, ...], int]:
    """1-based line of every key and item, by its JSON path (the tree is bounded by MAX_NODES)."""
    lines: dict[tuple[Any, ...], int] = {}
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, key_node.value)
                lines[child] = key_node.start_mark.line + 1
                stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return lines


def too_large(origin: str) -> ConfigError:
    return ConfigError(
        f"{origin} is larger than {MAX_BYTES // 1024 // 1024} MiB ({MAX_BYTES:,} bytes), "
        "the size limit for a config",
        "a config is a few KB: check that this is the file you meant",
    )


def load(text: str, origin: str, *, is_file: bool = True) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The one document in `text` and the line of every key, or a ConfigError at its line.

    `origin` is a file path (errors say `path:line`) or, with is_file=False, an input's name
    (errors say `input 'rules', line N`).
    """
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise too_large(origin)
    loader = Loader(text)
    try:
        root = loader.get_single_node()
        document = loader.construct_document(root) if root is not None else None
        lines = _line_map(root) if root is not None else {}
    except yaml.MarkedYAMLError as exc:
        raise _config_error(exc, origin, is_file) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}", "fix the YAML syntax") from None
    except RecursionError:  # PyYAML composes and constructs recursively
        raise ConfigError(f"{origin}: nested too deeply", "a config is a few levels deep") from None
    finally:
        loader.dispose()
    return document, lines


def _config_error(exc: yaml.MarkedYAMLError, origin: str, is_file: bool) -> ConfigError:
    line = exc.problem_mark.line + 1 if exc.problem_mark else None
    where = origin if line is None else f"{origin}:{line}" if is_file else f"{origin}, line {line}"
    if isinstance(exc, DuplicateKeyError) and exc.context_mark is not None:
        message = (
            f"{where}: {exc.problem} (first set at line {exc.context_mark.line + 1}); "
            "YAML would silently keep the last one"
        )
        error = ConfigError(message, "keep one of the two")
    elif isinstance(exc, LimitError):
        error = ConfigError(f"{where}: {exc.problem}", "write the values out, or use fewer aliases")
    else:
        error = ConfigError(f"{where}: not valid YAML: {exc.problem}", "fix the YAML syntax")
    if is_file:
        error.file = origin  # type: ignore[attr-defined]
        error.line = line  # type: ignore[attr-defined]
    return error
