"""Test infrastructure shared by tests/ and bench/: one milter client, one process harness.

- ``milter``: the MTA side of the milter protocol (framing, negotiation, macros, the
  end-of-message actions incl. envelope edits) with a step-by-step client for tests and
  pre-encoded steps for load generation (bench/client.py is the load loop on it).
- ``procs``: free ports, bounded waits, a server process in its own session stopped with
  SIGTERM then SIGKILL, and how to start authmilter from the running interpreter.
- ``knot``: knotd serving zones built at run time.

It lives under tests/ (importable as ``infra`` once tests/ is on sys.path, as conftest.py
and bench/ arrange) rather than as a top-level ``testinfra`` package: that name belongs to
pytest-testinfra on PyPI, and nothing here is part of what authmilter ships.
"""
