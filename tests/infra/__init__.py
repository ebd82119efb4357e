"""Test infrastructure shared by tests/ and bench/: one milter client, one process harness.

- ``milter``: the MTA side of the milter protocol (framing, negotiation, macros, the
  end-of-message actions incl. envelope edits) with a step-by-step client for tests and
  pre-encoded steps for load generation (bench/client.py is the load loop on it).
- ``procs``: free ports, bounded waits, a server process in its own session stopped with
  SIGTERM then SIGKILL, and how to start authmilter from the running interpreter.
- ``knot``: knotd serving zones built at run time (e2e, bench).
- ``unbound``: a validating unbound on loopback in front of a knotd that signs zones (DNSSEC).
- ``dnsserver``: the suite's own loopback DNS server, records and faults set per test.
- ``dnsproxy``: a DNS proxy holding every answer a set latency, no cache (bench/cold.py).
- ``pgserver``: a throw-away PostgreSQL (initdb + pg_ctl in a temporary directory).

tests/milterclient.py, tests/dnsserver.py and tests/pgserver.py re-export the old names.

It lives under tests/ (importable as ``infra`` once tests/ is on sys.path, as conftest.py
and bench/ arrange) rather than as a top-level ``testinfra`` package: that name belongs to
pytest-testinfra on PyPI, and nothing here is part of what authmilter ships.
"""
