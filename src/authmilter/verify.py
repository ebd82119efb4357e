"""`authmilter verify FILE`: the inbound pipeline, offline, on a stored message.

Answers "why was this message rejected?": prints the Authentication-Results authmilter
would add, the decision and the reasons, and with ``[dns] dnssec`` set to report or
require-for-keys whether the SPF, DKIM key and DMARC answers were DNSSEC-validated
(``--json`` for scripts). DNS and policy come
from the config (-c); a missing config file means built-in defaults and the system resolver.
Nothing is written: the store stays closed even when the config enables it.

Exit status says the decision, for scripts: 0 accept, 3 quarantine (hold queue or marker
header), 4 reject, 5 tempfail; 2 a usage, file or configuration error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from types import MappingProxyType

from .cliinput import read_message_arg
from .config.schema import Settings, load_settings, validate
from .errors import AuthmilterError
from .model import Client, Envelope, Message, Session
from .outcome import Action, Direction, Outcome
from .pipeline import process
from .runtime import Runtime


def _return_path(msg: Message) -> str:
    for value in msg.get_all("Return-Path"):
        text = value.decode("utf-8", "replace").strip()
        return text.strip("<>").strip()
    return ""


def verify_bytes(raw: bytes, settings: Settings, *, client_ip: str, helo: str,
                 mail_from: str | None) -> tuple[Session, Outcome]:
    msg = Message.from_bytes(raw)
    sender = _return_path(msg) if mail_from is None else mail_from
    session = Session(client=Client(ip=client_ip or None, hostname="", helo=helo),
                      envelope=Envelope(mail_from=sender), message=msg,
                      macros=MappingProxyType({}), queue_id="verify")
    # Offline: no state is read or written, whatever [store]/[reports] say.
    offline = dataclasses.replace(settings, store=dataclasses.replace(settings.store, enabled=False),
                                  reports=dataclasses.replace(settings.reports, enabled=False))
    runtime = Runtime.load(offline)
    return session, process(session, runtime, direction=Direction.INBOUND)


_DNSSEC_WHAT = {"spf": "SPF answers", "dkim": "DKIM keys", "dmarc": "DMARC answers"}

EXIT_FOR = {Action.ACCEPT: 0, Action.QUARANTINE: 3, Action.REJECT: 4, Action.TEMPFAIL: 5}


def exit_status(outcome: Outcome) -> int:
    """The decision as an exit status (a quarantine marker header counts as quarantine)."""
    if outcome.action is Action.ACCEPT and outcome.quarantine_reason:
        return EXIT_FOR[Action.QUARANTINE]
    return EXIT_FOR[outcome.action]


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        if os.path.exists(args.config):
            settings = load_settings(args.config)
        else:
            print(f"authmilter: {args.config} not found, using defaults", file=sys.stderr)
            settings = validate(Settings())
        raw = read_message_arg(args.file)
        session, outcome = verify_bytes(raw, settings, client_ip=args.client_ip, helo=args.helo,
                                        mail_from=args.mail_from)
    except AuthmilterError as exc:
        print(f"authmilter: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # a file the config names (e.g. the SRS secret)
        print(f"authmilter: cannot read {exc.filename or 'a file'}: {exc.strerror}", file=sys.stderr)
        return 2
    if not args.client_ip:
        print("authmilter: no --client-ip given: SPF not checked", file=sys.stderr)
    ar = outcome.inserted("Authentication-Results") or ""
    if args.json:
        print(json.dumps({
            "action": outcome.action.value,
            "smtp_reply": " ".join(x for x in (outcome.smtp_code, outcome.smtp_xcode, outcome.smtp_text) if x),
            "quarantine_reason": outcome.quarantine_reason,
            "authentication_results": "Authentication-Results:" + ar.replace("\r\n", "\n"),
            "reasons": list(outcome.reasons),
            "log": dict(outcome.log),
            "mail_from": session.envelope.mail_from,
            # [dns] dnssec report / require-for-keys: per check, whether every answer it
            # read was DNSSEC-validated (a check that read none is absent); null: ignore.
            "dnssec": dict(outcome.dnssec) if settings.dns.dnssec != "ignore" else None,
        }, indent=2))
    else:
        print("Authentication-Results:" + ar.replace("\r\n", "\n"))
        reply = " ".join(x for x in (outcome.smtp_code, outcome.smtp_xcode, outcome.smtp_text) if x)
        print(f"decision: {outcome.action.value}" + (f" ({reply})" if reply else ""))
        if outcome.quarantine_reason:
            print(f"quarantine: {outcome.quarantine_reason}")
        for reason in outcome.reasons:
            print(f"because: {reason}")
        if settings.dns.dnssec != "ignore":
            print("dnssec: " + (", ".join(f"{_DNSSEC_WHAT[check]} {'DNSSEC-validated' if ok else 'NOT validated'}"
                                          for check, ok in outcome.dnssec) or "no answer read"))
    return exit_status(outcome)
