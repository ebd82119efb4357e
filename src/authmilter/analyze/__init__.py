"""``authmilter analyze``: the path a message took, the verdicts on the way, and where
authentication went wrong. `core` is pure (bytes in, `Analysis` out); `render` turns an
`Analysis` into JSON-ready data or text; `command` is the CLI entry."""
from __future__ import annotations

from .core import Analysis, Finding, Hint, Hop, Host, Result, Scope, address_scope, analyze

__all__ = ["Analysis", "Finding", "Hint", "Hop", "Host", "Result", "Scope", "address_scope", "analyze"]
