"""A pymilter milter that does nothing: the transport floor for a Python milter.

It negotiates what authmilter negotiates (no reply for any step but end-of-message,
headers as bytes with their leading space), keeps the headers and body like a real
handler would, and answers end-of-message with one inserted header and ACCEPT. Whatever
msg/s and CPU per message it reaches on this machine is the ceiling for any milter built
on pymilter/libmilter in a single process, before it does any work.

    .venv/bin/python bench/null_milter.py unix:/path/to.sock
"""
from __future__ import annotations

import sys

import Milter


@Milter.header_leading_space
class NullMilter(Milter.Base):
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    @Milter.noreply
    def connect(self, hostname, family, hostaddr):  # type: ignore[no-untyped-def]
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, helo):  # type: ignore[no-untyped-def]
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom, *params):  # type: ignore[no-untyped-def]
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to, *params):  # type: ignore[no-untyped-def]
        return Milter.CONTINUE

    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name, value):  # type: ignore[no-untyped-def]
        self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):  # type: ignore[no-untyped-def]
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def eom(self):  # type: ignore[no-untyped-def]
        self.addheader("X-Null", "1", 0)
        return Milter.ACCEPT


def main() -> int:
    Milter.factory = NullMilter
    Milter.set_flags(Milter.ADDHDRS)
    Milter.runmilter("nullmilter", sys.argv[1], 600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
