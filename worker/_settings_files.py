"""``<VARIABLE>_FILE``: a setting read from a file, the way Kubernetes and Docker mount
secrets (``OPENAI_API_KEY_FILE=/var/run/secrets/openai/key``), so a secret need not sit
in the environment, where ``/proc/<pid>/environ`` and crash reports can show it.

Every variable of ``Settings`` has one. The file's content is the value, without its
trailing newline; the plain variable, when also set, wins (it is the explicit one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import AliasChoices, AliasPath
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource


def variables(settings: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment variables that set ``field``, in the order they are accepted."""
    alias = field.validation_alias if field.validation_alias is not None else field.alias
    if alias is None:
        variable = f"{settings.model_config.get('env_prefix', '')}{name}"
        return [variable if settings.model_config.get("case_sensitive") else variable.upper()]
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    names = []
    for choice in choices:
        # an AliasPath: a variable holding JSON, read at that path
        first = choice.path[0] if isinstance(choice, AliasPath) else choice
        if not isinstance(first, str):
            raise TypeError(f"{name}: cannot name the variable of alias {choice!r}")
        names.append(first)
    return names


class FileVariables(EnvSettingsSource):
    """The settings source for ``<VARIABLE>_FILE``: the environment as if each such
    variable were set to its file's content, parsed as the variable would be (JSON for
    the structured ones)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found: dict[str, str | None] = {}
        for name, field in self.settings_cls.model_fields.items():
            for variable in variables(self.settings_cls, name, field):
                path = os.environ.get(f"{variable}_FILE")
                if not path:
                    continue
                try:
                    text = Path(path).read_text(encoding="utf-8")
                except OSError as exc:
                    raise ValueError(f"{variable}_FILE={path}: {exc.strerror}") from None
                key = variable if self.case_sensitive else variable.lower()
                found[key] = text.removesuffix("\n").removesuffix("\r")
        return found
