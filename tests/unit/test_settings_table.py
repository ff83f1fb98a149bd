"""The README's configuration table is the one generated from ``Settings`` (no drift)."""

from __future__ import annotations

import enum
import subprocess
import sys
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker import _settings_table
from worker._settings_table import END, START, settings_table
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
REGENERATE = "python -m worker._settings_table --write README.md"


def _rows(table: str) -> dict[str, list[str]]:
    """First cell (the variables) -> the row's cells, header and rule left out."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0]] = cells
    return rows


def test_readme_table_is_the_generated_one():
    readme = README.read_text(encoding="utf-8")
    assert readme.count(START) == 1 and readme.count(END) == 1, f"README.md needs {START}/{END}"
    between = readme.split(START, 1)[1].split(END, 1)[0]
    assert between == "\n" + settings_table(), (
        "README.md's configuration table is out of date with worker/settings.py: "
        f"run `{REGENERATE}`"
    )


def test_every_field_is_in_the_table_with_a_description():
    rows = _rows(settings_table())
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description and field.description.strip(), f"{name} has no description"
        names = _settings_table.env_names(Settings, name, field)
        row = rows[" / ".join(f"`{n}`" for n in names)]
        assert row[2], f"{name}: empty meaning"
    assert "`MODERATION_BATCH_SIZE`" in rows
    assert "`OPENAI_API_KEY` / `MODERATION_OPENAI_API_KEY`" in rows  # aliases, as accepted


class _Colour(enum.Enum):
    RED = "red"


class _Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EX_")

    token: SecretStr = Field(default=SecretStr("hunter2"), description="A secret.")
    optional_token: SecretStr | None = Field(
        default=SecretStr("hunter3"),
        validation_alias=AliasChoices("TOKEN", "EX_TOKEN2"),
        description="Another.",
    )
    nothing: int | None = Field(default=None, description="Unset by default.")
    flag: bool = Field(default=True, description="A flag.")
    colour: _Colour = Field(default=_Colour.RED, description="An enum.")
    table: dict[str, tuple[float, int]] = Field(default={"a": (1.5, 2)}, description="JSON.")
    path: Path = Field(default=ROOT / "worker" / "policies" / "x.yaml", description="A path.")
    ratio: float = Field(default=1500.0, description="A float.")
    home: Path = Field(default_factory=lambda: Path.home() / ".cache" / "x", description="Home.")


def test_secrets_are_never_printed_and_none_is_unset():
    table = settings_table(_Example)
    assert "hunter" not in table
    rows = _rows(table)
    assert rows["`EX_TOKEN`"][1] == "hidden"
    assert rows["`TOKEN` / `EX_TOKEN2`"][1] == "hidden"
    assert rows["`EX_NOTHING`"][1] == "unset"
    assert rows["`EX_FLAG`"][1] == "`true`"
    assert rows["`EX_COLOUR`"][1] == "`red`"
    assert rows["`EX_TABLE`"][1] == '`{"a": [1.5, 2]}`'
    assert rows["`EX_PATH`"][1] == "`worker/policies/x.yaml`"  # not this machine's path
    assert rows["`EX_RATIO`"][1] == "`1500`"
    assert rows["`EX_HOME`"][1] == "`~/.cache/x`"  # not whoever generated the table
    assert settings_table(_Example) == table  # deterministic

    real = _rows(settings_table())
    assert real["`OPENAI_API_KEY` / `MODERATION_OPENAI_API_KEY`"][1] == "unset"
    assert real["`MODERATION_POLICY`"][1] == "`worker/policies/default.yaml`"
    assert str(ROOT) not in settings_table()


def test_write_replaces_only_the_text_between_the_markers(tmp_path):
    before = "# Title\n\nintro, and a stray | pipe\n\n"
    after = "\n\n## Next\n\nkept as it is\n"
    doc = tmp_path / "DOC.md"
    doc.write_text(f"{before}{START}\n| old | table |\n{END}{after}", encoding="utf-8")

    assert _settings_table.main(["--write", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == f"{before}{START}\n{settings_table()}{END}{after}"
    assert _settings_table.main(["--write", str(doc)]) == 0  # idempotent
    assert doc.read_text(encoding="utf-8") == f"{before}{START}\n{settings_table()}{END}{after}"

    unmarked = tmp_path / "PLAIN.md"
    unmarked.write_text("no markers here\n", encoding="utf-8")
    assert _settings_table.main(["--write", str(unmarked)]) == 1
    assert unmarked.read_text(encoding="utf-8") == "no markers here\n"


def test_module_entry_point_prints_the_table():
    out = subprocess.run(
        [sys.executable, "-m", "worker._settings_table"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == settings_table()
