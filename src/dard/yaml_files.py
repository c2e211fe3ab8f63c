"""YAML files a user writes (configs, experiment files, ``--set`` values), read strictly: bounded in size and
aliases, a key given twice refused, numbers read as YAML 1.2 reads them (``1e-3`` a number; base 60 and old octal
refused), every failure one line naming the file and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dard.errors import DardError, shown
from dard.reading import read_file_bytes

MAX_YAML_BYTES = 1 << 20  # a config or experiment file is a few KB; larger is not one
MAX_YAML_ALIASES = 64  # a few anchors are handy; thousands expand to gigabytes (an alias bomb)


#: the floats YAML 1.2 reads and PyYAML's YAML 1.1 reads as text: an exponent without a dot or without a sign
#: (``1e-3``, ``5e-4``, ``1.0e3``), as the field writes learning rates and weight decays
_FLOAT_WITH_EXPONENT = r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"


def _yaml_loader(where: str | Path) -> type:
    """yaml.SafeLoader that reads ``1e-3`` as a number (:data:`_FLOAT_WITH_EXPONENT`), and refuses a key given twice
    in one mapping (PyYAML keeps the last silently) and more than :data:`MAX_YAML_ALIASES` aliases, each a
    one-line DardError naming ``where`` and the line."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    line = self.peek_event().start_mark.line + 1
                    raise DardError(f"{where}: more than {MAX_YAML_ALIASES} YAML aliases (line {line})")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    k = (key.tag, key.value)
                    if k in seen:
                        raise DardError(
                            f"{where}: key {shown(key.value, 80)} given twice in one mapping "
                            f"(line {key.start_mark.line + 1})"
                        )
                    seen.add(k)
            return super().construct_mapping(node, deep=deep)

        def flatten_mapping(self, node: Any) -> None:
            # PyYAML tells merged keys apart by the identity of their text: of two merged mappings that share a key,
            # the first wins for a one-letter key and the last for any other (YAML: the first), so refuse the clash
            merged: dict[Any, int] = {}
            for key, value in node.value:
                if key.tag != "tag:yaml.org,2002:merge":
                    continue
                for source in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    if not isinstance(source, yaml.MappingNode):
                        continue  # PyYAML's own error names it
                    self.flatten_mapping(source)
                    for k, v in source.value:
                        ident = (k.tag, k.value) if isinstance(k, yaml.ScalarNode) else id(k)
                        if merged.get(ident, id(v)) != id(v):  # one value merged twice (`[*a, *a]`) is no clash
                            raise DardError(
                                f"{where}: key {shown(k.value, 80)} comes from two of the mappings merged with '<<' "
                                f"(line {key.start_mark.line + 1}); YAML readers differ on which wins: set it once"
                            )
                        merged[ident] = id(v)
            super().flatten_mapping(node)

    def checked(read: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return lambda loader, node: _plain_number(node, read(loader, node), where)

    # on this class only (PyYAML copies its tables on the first addition): yaml.safe_load is unchanged
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_FLOAT_WITH_EXPONENT), list("-+0123456789."))
    Loader.add_constructor("tag:yaml.org,2002:int", checked(yaml.SafeLoader.construct_yaml_int))
    Loader.add_constructor("tag:yaml.org,2002:float", checked(yaml.SafeLoader.construct_yaml_float))
    return Loader


def _plain_number(node: Any, value: Any, where: str | Path) -> Any:
    """``value``, unless the number was written in base 60 (``1:30``) or as a YAML 1.1 octal (``010``): PyYAML reads
    them as 90 and 8, YAML 1.2 and every other reader of the file as text and 10 (``val_size: 1:10`` held out 70
    images, ``seed: 010`` ran seed 8, in silence)."""
    import re

    text = str(node.value).replace("_", "")
    if ":" in text or re.fullmatch(r"[-+]?0[0-7]+", text):
        raise DardError(
            f"{where}: {shown(node.value, 40)} (line {node.start_mark.line + 1}) is a YAML 1.1 base-60 or octal "
            f"number ({value}); write it without ':' or leading zeros, or quote it as text"
        )
    return value


def parse_yaml(text: str, where: str) -> Any:
    """``text`` read as YAML as dard reads its files (:func:`_yaml_loader`: ``1e-3`` is a number, a key given twice
    is a DardError naming ``where``); a YAML error is PyYAML's."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader(where))


def read_yaml_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; a missing file, a file over :data:`MAX_YAML_BYTES`, bad YAML, a key
    given twice, an alias bomb or another top-level type is a one-line DardError naming the file (and the line of a
    YAML error)."""
    return read_yaml_file(path, what)[0]


def read_yaml_file(path: str | Path, what: str = "file") -> tuple[dict[str, Any], str]:
    """:func:`read_yaml_mapping`'s mapping and the text it was read from, for a caller that keeps a copy of the file
    (an experiment's results): read once, so the copy is what was read, and bounded."""
    import yaml

    p = Path(path)
    # a FIFO or a folder is said as what it is (it was "not found"), a file over the limit is not read past it
    raw = read_file_bytes(p, what, MAX_YAML_BYTES, f" (a {what} may have {MAX_YAML_BYTES} bytes)")
    try:
        text = raw.decode("utf-8")
        data = yaml.load(text, Loader=_yaml_loader(p)) or {}
    except UnicodeDecodeError as e:
        raise DardError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except RecursionError:  # deeply nested flow collections
        raise DardError(f"{p}: nested too deeply to read as YAML") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        # what PyYAML found, so the line says what to change: a tab indenting a key, a second document after `---`
        found = ", ".join(str(part) for part in (getattr(e, "context", None), getattr(e, "problem", None)) if part)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DardError(f"{p}: not valid YAML{where}{f' ({found[:160]})' if found else ''}") from None
    if not isinstance(data, dict):
        raise DardError(f"{p}: a {what} must hold a mapping of keys to values")
    return data, text
