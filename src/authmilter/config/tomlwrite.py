"""Writing the small TOML subset our configs use (tomllib only reads).

Used by `authmilter import-opendkim` and by the test harnesses that write configs.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def value(v: Any) -> str:
    """A TOML value: booleans, numbers, strings (JSON escapes are valid TOML), lists."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dumps(data: Mapping[str, Any], comments: Mapping[str, str] | None = None) -> str:
    """Top-level keys first, then one ``[table]`` per nested mapping. *comments* maps a
    dotted key to a line written above it."""
    lines: list[str] = []
    notes = comments or {}

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        for key, v in table.items():
            if not isinstance(v, Mapping):
                if notes.get(prefix + key):
                    lines.append(f"# {notes[prefix + key]}")
                lines.append(f"{key} = {value(v)}")
        for key, v in table.items():
            if isinstance(v, Mapping):
                lines.extend(["", f"[{prefix}{key}]"])
                emit(v, f"{prefix}{key}.")

    emit(data, "")
    return "\n".join(lines) + "\n"


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """*extra* over *base*, tables merged key by key (recursively)."""
    out = dict(base)
    for key, v in extra.items():
        old = out.get(key)
        out[key] = merge(old, v) if isinstance(v, Mapping) and isinstance(old, Mapping) else v
    return out
