"""Make remote values safe for one-line logs (aiosmtpd's sanitized_log idea)."""
from __future__ import annotations

import re
from collections.abc import Iterable

_CTRL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def sanitize(value: object, limit: int = 256) -> str:
    """Strip control characters (and lone surrogates from undecodable bytes), quote values with spaces, cap the length."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():  # printable text has no C0/C1 control character
        text = _CTRL.sub("?", text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if not text or " " in text or '"' in text:
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def log_line(queue_id: str, pairs: Iterable[tuple[str, str]]) -> str:
    """The one line per message: ``QID: key=value ...`` with every value sanitised."""
    return f"{queue_id or 'NOQUEUE'}: " + " ".join(f"{k}={sanitize(v)}" for k, v in pairs)
