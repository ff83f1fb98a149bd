"""The README's configuration table, generated from ``Settings`` so the two cannot drift.

``python -m worker._settings_table`` prints it; ``--write README.md`` puts it between the
``<!-- settings-table:start -->`` and ``<!-- settings-table:end -->`` markers of that file
(``tests/unit/test_settings_table.py`` checks that the README's copy is current).
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any, get_args, get_origin

from pydantic import Secret, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from worker._settings_files import variables as env_names
from worker.settings import Settings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"

UNSET = "unset"
HIDDEN = "hidden"  # what a secret's default shows: never its value

ROOT = Path(__file__).resolve().parent.parent  # the repository (paths inside it: relative)

_SECRETS = (SecretStr, SecretBytes, Secret)


def settings_table(settings: type[BaseSettings] = Settings) -> str:
    """The markdown table of every field: its variables, default and description."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        variables = " / ".join(_code(v) for v in env_names(settings, name, field))
        rows.append(
            f"| {_cell(variables)} | {_cell(render_default(field))} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def render_default(field: FieldInfo) -> str:
    """The default as a person reads it (markdown); a secret's value is never shown."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return UNSET
    if _is_secret(field.annotation) or isinstance(value, _SECRETS):
        return HIDDEN
    return _code(_plain(value))


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, PurePath):
        return _path(value)
    if isinstance(value, dict | list | tuple | set | frozenset):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    text = str(value)
    return text if text else '""'


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=repr)  # deterministic
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, PurePath):
        return _path(value)
    if isinstance(value, _SECRETS):
        return HIDDEN
    return value


def _path(path: PurePath) -> str:
    """Inside the repository: relative to it; inside the home directory: ``~/...``; so the
    table reads the same whoever generated it."""
    resolved = Path(path).resolve() if path.is_absolute() else None
    if resolved is not None and resolved.is_relative_to(ROOT):
        return resolved.relative_to(ROOT).as_posix()
    if resolved is not None and resolved.is_relative_to(Path.home().resolve()):
        return "~/" + resolved.relative_to(Path.home().resolve()).as_posix()
    return path.as_posix()


def _is_secret(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, _SECRETS):
        return True
    origin = get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, _SECRETS):
        return True
    if origin is not None:  # Optional[...], X | None, list[...]: any part a secret
        return any(_is_secret(arg) for arg in get_args(annotation))
    return False


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    """One table cell: on one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def replace_table(text: str, table: str) -> str:
    """``text`` with what lies between the markers replaced by ``table`` (nothing else)."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"expected one {START} and one {END}")
    start = text.index(START) + len(START)
    end = text.index(END)
    if end < start:
        raise ValueError(f"{END} comes before {START}")
    return text[:start] + "\n" + table + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker._settings_table",
        description="Print the configuration table generated from worker.settings.Settings.",
    )
    parser.add_argument(
        "--write",
        metavar="FILE",
        type=Path,
        help=f"replace the text between {START} and {END} in FILE instead of printing",
    )
    args = parser.parse_args(argv)
    table = settings_table()
    if args.write is None:
        sys.stdout.write(table)
        return 0
    try:
        old = args.write.read_text(encoding="utf-8")
        new = replace_table(old, table)
    except (OSError, ValueError) as exc:
        print(f"{args.write}: {exc}", file=sys.stderr)
        return 1
    if new != old:
        args.write.write_text(new, encoding="utf-8")
        print(f"{args.write}: configuration table updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
