"""The JSON Schema files of the wire contract, generated from ``worker.models``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.models import Decision, ModerationRequest, Verdict

BASE_ID = "https://schemas.moderation-worker.dev/"
FILES: dict[str, Any] = {
    "moderation-request.v1.json": ModerationRequest,
    "moderation-verdict.v1.json": Verdict,
    "moderation-decision.v1.json": Decision,
}


def render(name: str) -> str:
    model = FILES[name]
    mode = "serialization" if model is Verdict else "validation"
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE_ID + name,
        **model.model_json_schema(mode=mode),
    }
    return json.dumps(schema, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        path = directory / name
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


def check_schemas(directory: Path) -> list[str]:
    """Names of schema files that differ from what the models generate."""
    stale = []
    for name in FILES:
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(name):
            stale.append(name)
    return stale
