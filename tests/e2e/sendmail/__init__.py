"""End-to-end suite against a real Sendmail 8.17 (Debian's packages, unpacked, isolated)."""
