"""Logging set-up: one logger tree ``authmilter``, three targets.

* stderr, plain ``time LEVEL [pid] message`` lines, when run by hand;
* stderr with syslog priority prefixes (``<6>message``, sd-daemon(3)) when started by
  systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` set), so journald keeps the level and
  adds its own timestamp;
* syslog, facility mail (``log_target = "syslog"``), like OpenDKIM; without a syslog
  socket (no /dev/log: no syslog daemon, a container) stderr with a warning instead of
  lines sent nowhere.

The per-message line (``QID: action=... spf=...``) is INFO and comes from
``logsafe.log_line`` over ``Outcome.log``; values from the network are sanitized there (ops/logsafe.py).
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

LOGGER_NAME = "authmilter"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# syslog(3) priorities for the sd-daemon prefixes
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

SYSLOG_SOCKET = "/dev/log"

_handler: logging.Handler | None = None


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


class _PrefixFormatter(logging.Formatter):
    """``<N>`` prefix on every line (a traceback's continuation lines too)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


class _StampFormatter(logging.Formatter):
    """The standard ``asctime`` text, its date and time formatted once per second (the
    per-message line is on the hot path; strftime is most of a line's cost)."""

    _cached: tuple[int, str] = (-1, "")     # (second, its text), replaced as one object

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or self.default_msec_format is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._cached
        if cached[0] != second:
            cached = self._cached = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return self.default_msec_format % (cached[1], record.msecs)


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def setup(level: str = "info", target: str = "stderr", *, stream=None) -> logging.Logger:  # type: ignore[no-untyped-def]
    """(Re)configure the ``authmilter`` logger; safe to call again on reload."""
    global _handler
    # No record needs its caller's file/line, thread name or multiprocessing name; the
    # logging HOWTO's "Optimization" switches skip collecting them for every line (the
    # per-message line is on the hot path of every message).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    logger = logging.getLogger(LOGGER_NAME)
    handler: logging.Handler | None = None
    fallback = ""
    if target == "syslog" and not os.path.exists(SYSLOG_SOCKET):
        # SysLogHandler would accept the missing socket and drop every line unseen.
        fallback = (f'log_target = "syslog" but {SYSLOG_SOCKET} cannot be used (it does not exist: '
                    "no syslog daemon?): logging to stderr instead")
    elif target == "syslog":
        # A socket that exists but refuses now is retried on each line, as openlog(3) does.
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET,
                                                 facility=logging.handlers.SysLogHandler.LOG_MAIL)
        handler.setFormatter(logging.Formatter("authmilter[%(process)d]: %(message)s"))
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(_PrefixFormatter("%(message)s") if under_systemd() else
                             _StampFormatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    if _handler is not None:
        logger.removeHandler(_handler)
        _handler.close()
    _handler = handler
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    logger.propagate = False
    if fallback:
        logger.warning(fallback)
    return logger


def set_level(level: str) -> None:
    logging.getLogger(LOGGER_NAME).setLevel(_LEVELS.get(level, logging.INFO))
