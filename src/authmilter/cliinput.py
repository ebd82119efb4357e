"""A message named on the command line (`verify`, `analyze`): a file, or standard input for "-"."""
from __future__ import annotations

import sys

from .errors import InputError


def read_message_arg(path: str) -> bytes:
    """The bytes of *path*, or of standard input for "-"; InputError ("cannot read PATH:
    why") when the file cannot be read."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
