"""The one way helix-ops reads a file it is given: bounded, strict, and failing with one line.

Every input file (descriptors, ``helix.config.yaml``, ``prefect.yaml``, the ``plan --state`` JSON, backup
manifests) goes through this module, so no input can hang or crash the tool:

- **size**: at most ``limit`` bytes are accepted and at most ``limit + 1`` are ever read (a 50 MB file is refused
  after reading 1 MiB of it; a FIFO with no writer is not waited for);
- **encoding**: the bytes must be UTF-8; the first invalid byte is reported with its offset and line;
- **aliases**: YAML anchors and aliases are refused (no helix-ops schema has a use for them), except where a file
  is known to use them (``prefect.yaml``): there the expansion is bounded (:data:`MAX_NODES`) and a recursive
  alias is refused;
- **depth**: collections nest at most :data:`MAX_DEPTH` levels, checked while composing, before anything deep is
  built (no RecursionError);
- **duplicate keys**: refused, naming the path of the second key and its line (YAML) or its path (JSON);
- anything else that can go wrong inside PyYAML or ``json`` (a date that does not exist, an integer of 5,000
  digits, a lone surrogate) is one :class:`~helix_ops.errors.ConfigError` too.

Every refusal is a :class:`~helix_ops.errors.ConfigError` (``str()`` is one line; the CLI exits 2).

    >>> text = read_text("deployments/local.yaml", what="descriptor", limit=DESCRIPTOR_LIMIT)  # doctest: +SKIP
    >>> data = load_yaml(text, "deployments/local.yaml")                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from helix_ops.errors import ConfigError

try:  # libyaml's scanner and parser (fast); the composer and constructor below stay in Python (bounded)
    from yaml.cyaml import CParser as _Parser

    _C_PARSER = True
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

    _C_PARSER = False

MiB = 1024 * 1024
DESCRIPTOR_LIMIT = 1 * MiB
"""The largest descriptor accepted (the real ones are a few KiB)."""
HELIX_CONFIG_LIMIT = 1 * MiB
"""The largest ``helix.config.yaml`` accepted."""
PREFECT_FILE_LIMIT = 1 * MiB
"""The largest ``prefect.yaml`` accepted (``helix-ops schedules``)."""
YAML_TEXT_LIMIT = 1 * MiB
"""The largest YAML text (in characters) :func:`load_yaml` accepts when it is given text, not a file."""
STATE_LIMIT = 16 * MiB
"""The largest ``plan --state`` JSON file accepted."""
MANIFEST_LIMIT = 4 * MiB
"""The largest backup manifest accepted (a manifest lists a backup's objects; the real ones are a few KiB)."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and lists accepted (a descriptor nests about 6 levels)."""
MAX_NODES = 50_000
"""The most YAML nodes (mappings, lists and scalars) a document may hold, aliases counted as their expansion
(a descriptor holds a few hundred; PyYAML builds about 100,000 a second, so this bounds the time to ~0.5 s)."""

_MERGE_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


def size_words(limit: int) -> str:
    """``1048576`` → ``1 MiB``; other sizes in bytes."""
    return f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"


# ---------------------------------------------------------------------------------------------- bytes and text


def read_bytes(path: str | Path, *, what: str, limit: int) -> bytes:
    """The bytes of the file at ``path``, refusing more than ``limit`` bytes (reads at most ``limit + 1``).

    ``what`` names the file in messages (``descriptor``, ``state``...). An unreadable file is a
    :class:`ConfigError` ``cannot read <what>: <reason>``; a FIFO without a writer reads as empty instead of
    blocking the open.
    """
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError("(file)", f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}", source) from None
    try:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        if regular and info.st_size > limit:
            raise _too_large(what, limit, info.st_size, source)
        if not regular and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a pipe or device: read it normally, still bounded below
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read {what}: {exc.strerror or exc}", source) from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > limit:
        raise _too_large(what, limit, None, source)
    return data


def _too_large(what: str, limit: int, size: int | None, source: str | None) -> ConfigError:
    got = f"is {size} bytes, over" if size is not None else "is over"
    return ConfigError("(file)", f"{what} {got} the {size_words(limit)} limit", source)


def decode_utf8(data: bytes, source: str | None = None) -> str:
    """``data`` as text; invalid UTF-8 is a :class:`ConfigError` naming the first bad byte's offset and line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            "(file)", f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line})", source
        ) from None


def read_text(path: str | Path, *, what: str, limit: int) -> str:
    """:func:`read_bytes` then :func:`decode_utf8`."""
    return decode_utf8(read_bytes(path, what=what, limit=limit), str(path))


def _check_text(text: str, limit: int, source: str | None) -> None:
    if len(text) > limit:
        raise ConfigError("(file)", f"text is {len(text)} characters, over the {size_words(limit)} limit", source)


# ---------------------------------------------------------------------------------------------------- YAML


def load_yaml(
    text: str,
    source: str | None = None,
    *,
    aliases: bool = False,
    limit: int = YAML_TEXT_LIMIT,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Any:
    """Parse one YAML document safely (see the module docstring); every failure is a :class:`ConfigError`.

    ``aliases=False`` (the default) refuses anchors and aliases; ``aliases=True`` accepts them but bounds their
    expansion to ``max_nodes`` nodes and refuses a recursive one.
    """
    if not isinstance(text, str):
        raise ConfigError("(file)", f"expected YAML text, got {type(text).__name__}", source)
    _check_text(text, limit, source)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError("(file)", f"not valid text: character {exc.start} is a lone surrogate", source) from None
    loader = _SafeLoader(text, source=source, aliases=aliases, max_depth=max_depth, max_nodes=max_nodes)
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, max_depth) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:  # belt and braces
        raise ConfigError("document", f"not readable YAML: {_first_line(exc)}", source) from None
    finally:
        loader.dispose()


def load_yaml_file(
    path: str | Path, *, what: str, limit: int, aliases: bool = False, max_depth: int = MAX_DEPTH
) -> Any:
    """Read (bounded) and parse the YAML file at ``path``."""
    return load_yaml(read_text(path, what=what, limit=limit), str(path), aliases=aliases, limit=limit,
                     max_depth=max_depth)


def _yaml_error(exc: yaml.YAMLError, source: str | None, max_depth: int) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        what = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        return ConfigError(f"offset {exc.position}", f"malformed YAML: character {what}: {exc.reason}", source)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
    problem = getattr(exc, "problem", None) or "not valid YAML"
    if "maximum nesting depth" in problem:  # libyaml's own limit on flow collections ([[[[...), met first
        return ConfigError(where, f"nested deeper than {max_depth} levels", source)
    return ConfigError(where, f"malformed YAML: {problem}", source)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "an unknown place"


def format_path(loc: Sequence[str | int]) -> str:
    """``("services", "nginx", 0)`` → ``services.nginx[0]`` (the same form as the validation errors)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class _SafeLoader(_Parser, Composer, SafeConstructor, Resolver):  # type: ignore[misc]
    """PyYAML's safe loader with a composer that bounds depth and aliases and refuses duplicate keys.

    The scanner and parser (libyaml's when present) turn the text into a stream of events without recursion;
    the composer below builds nodes from them, checking each limit on the event before descending, so nothing
    deep or large is ever built.
    """

    def __init__(self, text: str, *, source: str | None, aliases: bool, max_depth: int, max_nodes: int) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.source = source
        self.allow_aliases = aliases
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.path: list[str | int] = []
        self.nodes = 0  # nodes composed so far, aliases counted as their expansion
        self.deepest = 0  # the deepest level reached so far, aliases counted as their expansion
        self.expansion: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (nodes, height), once composed

    # The composer's own entry points (Composer's, not CParser's, which would compose in C without limits).
    check_node = Composer.check_node
    get_node = Composer.get_node
    get_single_node = Composer.get_single_node

    def refuse(self, message: str, path: Sequence[str | int] | None = None) -> ConfigError:
        return ConfigError(format_path(self.path if path is None else path), message, self.source)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        depth = len(self.path)
        if isinstance(event, AliasEvent):
            return self._alias(self.get_event(), depth)
        anchor = event.anchor
        if anchor is not None:
            if not self.allow_aliases:
                raise self.refuse(f"YAML anchor &{anchor} at {_at(event.start_mark)}: anchors and aliases are "
                                  "not accepted (write the value out)")
            if anchor in self.anchors:
                raise self.refuse(f"YAML anchor &{anchor} at {_at(event.start_mark)} is defined twice")
        collection = isinstance(event, (SequenceStartEvent, MappingStartEvent))
        if collection and depth >= self.max_depth:
            raise ConfigError(_at(event.start_mark), f"nested deeper than {self.max_depth} levels", self.source)
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise self.refuse(f"more than {self.max_nodes} values (mappings, lists and scalars) at "
                              f"{_at(event.start_mark)}")
        start_nodes, outer_deepest = self.nodes, self.deepest
        self.deepest = depth
        self.descend_resolver(parent, index)
        if isinstance(event, ScalarEvent):
            node = self.compose_scalar_node(anchor)
        elif isinstance(event, SequenceStartEvent):
            node = self.compose_sequence_node(anchor)
        else:
            node = self.compose_mapping_node(anchor)
        self.ascend_resolver()
        if anchor is not None:
            self.expansion[id(node)] = (self.nodes - start_nodes + 1, self.deepest - depth)
        self.deepest = max(outer_deepest, self.deepest)
        return node

    def _alias(self, event: Any, depth: int) -> Any:
        if not self.allow_aliases:
            raise self.refuse(f"YAML alias *{event.anchor} at {_at(event.start_mark)}: anchors and aliases are "
                              "not accepted (write the value out)")
        if event.anchor not in self.anchors:
            raise self.refuse(f"YAML alias *{event.anchor} at {_at(event.start_mark)} names no anchor before it")
        node = self.anchors[event.anchor]
        if id(node) not in self.expansion:
            raise self.refuse(f"YAML alias *{event.anchor} at {_at(event.start_mark)} is inside its own anchor "
                              "(a recursive structure)")
        nodes, height = self.expansion[id(node)]
        self.nodes += nodes
        if self.nodes > self.max_nodes:
            raise self.refuse(f"YAML aliases expand to more than {self.max_nodes} nodes "
                              f"(at *{event.anchor}, {_at(event.start_mark)})")
        if depth + height > self.max_depth:
            raise ConfigError(_at(event.start_mark), f"nested deeper than {self.max_depth} levels "
                              f"once alias *{event.anchor} is expanded", self.source)
        self.deepest = max(self.deepest, depth + height)
        return node

    def compose_sequence_node(self, anchor: str | None) -> SequenceNode:
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start.implicit)
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(SequenceEndEvent):
            self.path.append(index)
            node.value.append(self.compose_node(node, index))
            self.path.pop()
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start.implicit)
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        seen: dict[Any, Any] = {}
        while not self.check_event(MappingEndEvent):
            self.path.append("(key)")
            key_node = self.compose_node(node, None)
            self.path.pop()
            segment, key = self._key(key_node)
            self.path.append(segment)
            if key is not _NO_KEY:
                try:
                    first = seen.get(key)
                    if first is not None:
                        raise self.refuse(f"duplicate key at {_at(key_node.start_mark)} (first at line "
                                          f"{first.line + 1})")
                    seen[key] = key_node.start_mark
                except TypeError:  # an unhashable key: the constructor reports it
                    pass
            value_node = self.compose_node(node, key_node)
            self.path.pop()
            node.value.append((key_node, value_node))
        node.end_mark = self.get_event().end_mark
        return node

    def _key(self, key_node: Any) -> tuple[str, Any]:
        """The path segment of a mapping key and the value compared for duplicates (``_NO_KEY``: not compared)."""
        if not isinstance(key_node, ScalarNode) or key_node.tag in _MERGE_TAGS:
            return ("(key)" if not isinstance(key_node, ScalarNode) else key_node.value), _NO_KEY
        key = self.construct_object(key_node)
        return (key if isinstance(key, str) else str(key)), key

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, ConfigError):
            raise
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. 2024-13-45, or an integer of 5000 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {_short(getattr(node, 'value', ''))}: {_first_line(exc)}",
                node.start_mark,
            ) from None


_NO_KEY = object()


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else "(a collection)"
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------------------- JSON


def load_json(
    data: bytes | str, source: str | None = None, *, limit: int, what: str = "file", max_depth: int = MAX_DEPTH
) -> Any:
    """Parse JSON safely: at most ``limit`` bytes, UTF-8, at most ``max_depth`` levels, no duplicate keys."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if len(data) > limit:
            raise _too_large(what, limit, len(data), source)
        text = decode_utf8(data, source)
    elif isinstance(data, str):
        _check_text(data, limit, source)
        text = data
    else:
        raise ConfigError("(file)", f"expected JSON text, got {type(data).__name__}", source)
    try:
        value = json.loads(text, object_pairs_hook=_pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"line {exc.lineno}", f"malformed JSON: {exc.msg}", source) from None
    except RecursionError:
        raise ConfigError("document", f"nested deeper than {max_depth} levels", source) from None
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # e.g. an integer of 5000 digits
        raise ConfigError("document", f"malformed JSON: {_first_line(exc)}", source) from None
    _check_tree(value, max_depth, source)
    return value


def load_json_file(path: str | Path, *, what: str, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """Read (bounded) and parse the JSON file at ``path``."""
    return load_json(read_bytes(path, what=what, limit=limit), str(path), limit=limit, what=what,
                     max_depth=max_depth)


class _Duplicates(dict):
    """A JSON object that repeated a key (``json`` keeps the last; the check below refuses it)."""

    repeated: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            dup = _Duplicates(out)
            dup.repeated = key
            return dup
        seen.add(key)
    return out  # pragma: no cover


def _check_tree(value: Any, max_depth: int, source: str | None) -> None:
    """Refuse nesting deeper than ``max_depth`` and repeated keys, walking the tree without recursion."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if len(path) >= max_depth:
                raise ConfigError(format_path(path), f"nested deeper than {max_depth} levels", source)
            if isinstance(node, _Duplicates):
                raise ConfigError(format_path((*path, node.repeated)), "duplicate key", source)
            stack.extend((v, (*path, k)) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            if len(path) >= max_depth:
                raise ConfigError(format_path(path), f"nested deeper than {max_depth} levels", source)
            stack.extend((v, (*path, i)) for i, v in enumerate(node) if isinstance(v, (dict, list)))
