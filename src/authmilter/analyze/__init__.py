"""``authmilter analyze``: the path a message took, the verdicts on the way, and where
authentication went wrong. `core` is pure (bytes in, `Analysis` out); `dnscheck` looks
up, with ``--dns`` only, what the verdicts depend on (the project's SPF, DKIM and DMARC
checks with a resolver passed in); `render` turns both into JSON-ready data or text;
`command` is the CLI entry.

JSON (``--json``), top level: ``hops``, ``hosts``, ``results``, ``topology``,
``findings``, ``origin_ip``, ``subject``, ``trusted_relays_proposal``, ``notes`` and
``dns`` — null offline; with ``--dns`` an object:

* ``resolver``: the servers asked ("the system's resolver" without any);
* ``spf``: null when no MAIL FROM domain is known, else ``domain``, ``domain_source``
  ("Return-Path" or the verdict header it came from), ``record`` (the v=spf1 text or
  null), ``record_status`` (ok / nxdomain / nodata / temperror / badname), ``ip`` (the
  origin address), ``result`` (check_host() for it: the verdict at the right hop),
  ``reason``, ``dnssec``, and ``checks``: one ``{ip, role, result, reason}`` per address
  evaluated, role "origin" or "relay" (a relay an SPF verdict was wrongly written for);
* ``dkim``: one object per DKIM-Signature verified now: ``domain``, ``selector``,
  ``record`` (the key record or null), ``result``, ``reason``, ``dnssec`` (of the key);
* ``dmarc``: ``domain`` (From), ``policy_domain``, ``record``, ``result`` (RFC 9989, with
  the origin's SPF result and the DKIM results above), ``policy``, ``reason``, ``dnssec``;
* ``lookups``: every question asked, in order: ``check``, ``name``, ``type``,
  ``status``, ``dnssec``, ``signed`` (RRSIGs came back), ``error``;
* ``lookup_cap``, ``capped`` (the cap was reached), ``notes``.

``dnssec`` is "secure" (the resolver set AD), "insecure" (no AD), "bogus" (the
validating resolver refused the answer) or "unknown"; a check's value is its worst
answer's.
"""
from __future__ import annotations

from .core import Analysis, Finding, Hint, Hop, Host, Result, Scope, address_scope, analyze

__all__ = ["Analysis", "Finding", "Hint", "Hop", "Host", "Result", "Scope", "address_scope", "analyze"]
