"""Validate messages against the JSON Schemas of the line contract (inspector/contract/)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema

CONTRACT = Path(__file__).resolve().parents[1] / "inspector" / "contract"


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CONTRACT / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(name: str, message: dict) -> None:
    errors = sorted(validator(name).iter_errors(message), key=str)
    assert not errors, f"{name} message breaks the contract: {errors[0].message} in {message}"
