"""The JSON Schemas are generated from the models and must not drift from them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from worker.schemas import FILES, check_schemas, render
from worker.validate import Envelope

from ..conftest import ROOT

SCHEMAS = ROOT / "schemas"


def test_committed_schemas_match_the_models():
    assert check_schemas(SCHEMAS) == [], "run: python -m worker schemas"


def test_drift_is_detected(tmp_path: Path):
    for name in FILES:
        (tmp_path / name).write_text(render(name).replace('"id"', '"identifier"', 1))
    assert sorted(check_schemas(tmp_path)) == sorted(FILES)


def test_a_real_verdict_validates_against_the_verdict_schema(pipeline_without_llm):
    schema = json.loads((SCHEMAS / "moderation-verdict.v1.json").read_text())
    [verdict] = pipeline_without_llm.run([Envelope(b'{"id": "s1", "text": "k y s"}')])
    jsonschema.validate(json.loads(verdict.model_dump_json()), schema)


def test_request_schema_accepts_good_and_rejects_bad():
    schema = json.loads((SCHEMAS / "moderation-request.v1.json").read_text())
    jsonschema.validate({"id": "1", "text": "hi", "tenant": "t", "metadata": {"a": 1}}, schema)
    for bad in ({"id": "1"}, {"id": 1, "text": "x"}, {"id": "1", "text": "x", "extra": 1}):
        try:
            jsonschema.validate(bad, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")
