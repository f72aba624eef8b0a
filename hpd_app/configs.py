"""User input (a JSON object or form values named like the CLI flags) -> a validated RunConfig."""
from __future__ import annotations

import json
from dataclasses import fields

from engine import RunConfig, resolve_device

_FIELDS = {f.name: f for f in fields(RunConfig)}


def _coerce(name: str, value):
    """Form widgets and JSON give strings, floats for ints, '' for unset; make them the field's type."""
    if value is None or value == "":
        return None
    kind = str(_FIELDS[name].type)
    try:
        if kind.startswith("bool"):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind.startswith("int"):
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {kind.split(' ')[0]} number, got {value!r}") from None
    return str(value)


def parse_config(values: dict | str, data_root: str | None = None) -> RunConfig:
    """Missing fields take RunConfig's defaults (device: CUDA when available); raises ValueError with the fix."""
    if isinstance(values, str):
        try:
            values = json.loads(values or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"the config is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(values, dict):
        raise ValueError("the config must be a JSON object of RunConfig fields, e.g. {\"method\": \"hpd\", \"ipc\": 1}")
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown)}; valid fields: {', '.join(_FIELDS)}")
    clean = {k: v for k, v in ((k, _coerce(k, v)) for k, v in values.items()) if v is not None}
    if data_root and "data_root" not in clean:
        clean["data_root"] = data_root
    try:
        clean["device"] = str(resolve_device(clean.get("device")))
    except Exception as exc:  # UserError or torch's "invalid device string": both are the user's input
        raise ValueError(str(exc)) from None
    return RunConfig(**clean)
