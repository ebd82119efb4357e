"""End-to-end suite: a real Postfix and a real DNS server (knot) around authmilter.

A package so that its conftest does not shadow tests/conftest.py (both would be
imported as the module `conftest` otherwise).
"""
