"""bench/client.py (on tests/infra/milter.py) speaks the milter protocol as an MTA does.

A tiny milter server inside the test records every packet and answers only where the
negotiated flags say it must; if the client waited for a reply the milter promised not
to send, the session would hang until the client's I/O timeout and count as an error.
"""
from __future__ import annotations

import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from infra import milter as proto  # the shared protocol pieces (tests/ is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import client as mc

ALL_NR = 0
for _flag in proto.NR_BIT.values():
    ALL_NR |= _flag

MESSAGE = (b"From: Alice <alice@example.com>\r\nSubject: hi\r\nX-Folded: one\r\n\ttwo\r\n\r\n"
           + b"line\r\n" * 20000)          # 120 KB: two body chunks


class FakeMilter:
    """Answers OPTNEG with `protocol` (+ optional macro list), then per command only
    when no NR flag covers it; at EOM inserts `insert` at index 0 and continues."""

    def __init__(self, path: Path, protocol: int, insert: tuple[bytes, bytes] = (b"X-Seen", b"yes"),
                 skip_body: bool = False, symlists: bytes = b"", journal: list | None = None) -> None:
        self.path, self.protocol, self.insert = str(path), protocol, insert
        self.journal = journal          # shared by several milters: (this milter's path, command) in order
        self.skip_body, self.symlists = skip_body, symlists
        self.sessions: list[list[tuple[bytes, bytes]]] = []
        self.workers: list[threading.Thread] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def close(self) -> None:
        """Stop accepting and wait for every session to end (so its record is complete)."""
        self.sock.shutdown(socket.SHUT_RDWR)     # wakes the blocked accept()
        self.sock.close()
        self.thread.join(5)
        for t in self.workers:
            t.join(5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._session, args=(conn,), daemon=True)
            self.workers.append(t)
            t.start()

    def _session(self, conn: socket.socket) -> None:
        got: list[tuple[bytes, bytes]] = []
        self.sessions.append(got)
        buf = bytearray()
        with conn:
            while True:
                try:
                    pkt = proto.read_packet(conn, buf)
                except (proto.MilterProtocolError, OSError):
                    return
                cmd, data = pkt[:1], pkt[1:]
                got.append((cmd, data))
                if self.journal is not None:
                    self.journal.append((self.path, cmd))
                if cmd == b"O":
                    conn.sendall(proto.packet(b"O", struct.pack("!III", 6, 0x1FF, self.protocol) + self.symlists))
                elif cmd == b"Q":
                    return
                elif cmd == b"E":
                    name, value = self.insert
                    conn.sendall(proto.packet(b"i", struct.pack("!I", 0) + proto.cstr(name, value))
                                 + proto.packet(b"c"))
                elif cmd == b"B" and self.skip_body:
                    conn.sendall(proto.packet(b"s"))
                elif cmd.decode() in proto.NR_BIT and not self.protocol & proto.NR_BIT[cmd.decode()]:
                    conn.sendall(proto.packet(b"c"))


@pytest.fixture
def sockdir(tmp_path_factory):
    # unix socket paths must stay short
    d = Path(tempfile.mkdtemp(prefix="bc-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _prep(addresses: list[str]) -> list[mc.Prepared]:
    env = mc.default_envelope("192.0.2.10", "<sender@example.net>", ("<user@example.com>",))
    return mc.prepare(addresses, [MESSAGE], env)


def test_no_reply_flags_are_honoured_and_every_step_is_sent(sockdir):
    m = FakeMilter(sockdir / "m.sock", ALL_NR | proto.SMFIP_HDR_LEADSPC)
    try:
        res = mc.run_load(_prep([m.address]), concurrency=2, count=4, duration_s=60, io_timeout_s=10)
    finally:
        m.close()
    assert res.errors == 0 and res.completed == 4, res.error_texts
    assert res.actions == {"c": 4}
    session = m.sessions[-1]
    cmds = b"".join(c for c, _ in session)
    # probe sessions are OPTNEG+QUIT; a message session is the full MTA sequence
    assert cmds == b"ODCHDMDRDTLLLDNBBDEQ"  # no HELO macros configured: no D packet
    headers = [d for c, d in session if c == b"L"]
    # HDR_LEADSPC: the space after the colon is kept; a fold travels as LF
    assert headers[0] == b"From\0 Alice <alice@example.com>\0"
    assert headers[2] == b"X-Folded\0 one\n\ttwo\0"
    body = b"".join(d for c, d in session if c == b"B")
    assert body == b"line\r\n" * 20000
    assert max(len(d) for c, d in session if c == b"B") <= proto.CHUNK
    connect = next(d for c, d in session if c == b"C")
    assert connect == b"mail.sender.example\x004" + struct.pack("!H", 40000) + b"192.0.2.10\0"


def test_replies_awaited_without_nr_flags_and_leading_space_stripped(sockdir):
    m = FakeMilter(sockdir / "m.sock", 0)
    try:
        one = mc.run_one(_prep([m.address])[0], timeout=10)
    finally:
        m.close()
    assert one.action == "c"
    assert one.headers_added() == [("X-Seen", "yes")]
    headers = [d for c, d in m.sessions[-1] if c == b"L"]
    assert headers[0] == b"From\0Alice <alice@example.com>\0"


def test_skipped_steps_and_their_macros_are_not_sent(sockdir):
    flags = ALL_NR | proto.SMFIP_NOHELO | proto.SMFIP_NORCPT | proto.SMFIP_NODATA | proto.SMFIP_NOBODY
    m = FakeMilter(sockdir / "m.sock", flags)
    try:
        res = mc.run_load(_prep([m.address]), concurrency=1, count=2, duration_s=60, io_timeout_s=10)
    finally:
        m.close()
    assert res.errors == 0 and res.completed == 2, res.error_texts
    macro_stages = [d[:1] for c, d in m.sessions[-1] if c == b"D"]
    assert b"".join(c for c, _ in m.sessions[-1]) == b"ODCDMLLLDNDEQ"
    assert macro_stages == [b"C", b"M", b"N", b"E"]


def test_symlist_restricts_macros(sockdir):
    # SMFIR_SETSYMLIST data in the OPTNEG reply: only {i} at end of message
    m = FakeMilter(sockdir / "m.sock", ALL_NR, symlists=struct.pack("!I", 5) + b"{i}\0")
    try:
        mc.run_one(_prep([m.address])[0], timeout=10)
    finally:
        m.close()
    eom_macros = next(d for c, d in m.sessions[-1] if c == b"D" and d[:1] == b"E")
    assert eom_macros == b"Ei\x004BENCH0QID\0"


def test_skip_reply_jumps_to_end_of_message(sockdir):
    m = FakeMilter(sockdir / "m.sock", proto.SMFIP_SKIP, skip_body=True)
    try:
        one = mc.run_one(_prep([m.address])[0], timeout=10)
        res = mc.run_load(_prep([m.address]), concurrency=1, count=1, duration_s=60, io_timeout_s=10)
    finally:
        m.close()
    assert one.action == "c" and res.completed == 1 and res.errors == 0
    cmds = b"".join(c for c, _ in m.sessions[-1])
    assert cmds.count(b"B") == 1 and cmds.endswith(b"BDEQ")


def test_chain_presents_headers_inserted_by_the_first_milter(sockdir):
    first = FakeMilter(sockdir / "a.sock", ALL_NR | proto.SMFIP_HDR_LEADSPC,
                       insert=(b"Authentication-Results", b"mx; dkim=pass"))
    second = FakeMilter(sockdir / "b.sock", ALL_NR | proto.SMFIP_HDR_LEADSPC, insert=(b"X-Second", b"1"))
    try:
        res = mc.run_load(_prep([first.address, second.address]), concurrency=2, count=3, duration_s=60,
                          io_timeout_s=10, check=lambda r: len(r.hops) == 2)
    finally:
        first.close()
        second.close()
    assert res.errors == 0 and res.completed == 3 and res.check_failures == 0
    headers = [d for c, d in second.sessions[-1] if c == b"L"]
    assert headers[0] == b"Authentication-Results\0 mx; dkim=pass\0"
    assert next(d for c, d in first.sessions[-1] if c == b"L").startswith(b"From\0")


def test_parse_optneg_rejects_flags_not_offered():
    with pytest.raises(proto.MilterProtocolError):
        proto.parse_optneg(struct.pack("!III", 6, 0, 0x10000000))


def _paced(addresses: list[str], n: int) -> list[mc.PacedMessage]:
    hops = [mc.Hop(a, mc.negotiate(a)) for a in addresses]
    env = mc.default_envelope("192.0.2.10", "<sender@example.net>", ("<user@example.com>",))
    return [mc.paced_message(hops, env, MESSAGE, tag=i) for i in range(n)]


def test_paced_chain_gets_the_envelope_as_sent_and_the_content_after_end_of_data(sockdir):
    # Postfix's order for smtpd_milters = A, B: each SMTP command to A then B as the client
    # sends it; after end-of-data the whole content to A, then to B with A's header edits
    journal: list = []
    first = FakeMilter(sockdir / "a.sock", 0, insert=(b"Authentication-Results", b"mx; dkim=pass"),
                       journal=journal)
    second = FakeMilter(sockdir / "b.sock", ALL_NR | proto.SMFIP_HDR_LEADSPC, insert=(b"X-Second", b"1"),
                        journal=journal)
    try:
        msgs = _paced([first.address, second.address], 1)
        # forget the probes, once their sessions have ended (a probe's QUIT can reach a
        # milter after the next session started elsewhere); the bound is anti-hang only
        deadline = time.monotonic() + 30
        while any(t.is_alive() for m in (first, second) for t in m.workers) and time.monotonic() < deadline:
            time.sleep(0.01)
        journal.clear()
        res = mc.run_paced(msgs, concurrency=1, duration_s=60, rtt_s=0.001, io_timeout_s=10,
                           check=lambda r: r.headers_added() == [("Authentication-Results", "mx; dkim=pass"),
                                                                 ("X-Second", "1")])
    finally:
        first.close()
        second.close()
    assert res.errors == 0 and res.completed == 1 and res.check_failures == 0, res.error_texts
    assert len(res.eom_latencies_s) == len(res.latencies_s) == 1
    order = [("A" if path == first.path else "B") + cmd.decode() for path, cmd in journal if cmd != b"D"]
    assert order[:12] == ["AO", "BO", "AC", "BC", "AH", "BH", "AM", "BM", "AR", "BR", "AT", "BT"]
    content = order[12:]
    last_a = max(i for i, x in enumerate(content) if x[0] == "A" and x != "AQ")
    first_b = min(i for i, x in enumerate(content) if x[0] == "B")
    assert content[last_a] == "AE" and last_a < first_b    # A's EOM answered before B sees content
    assert [d for c, d in second.sessions[-1] if c == b"L"][0] == b"Authentication-Results\0 mx; dkim=pass\0"
    # every message is used once: a run never sends more than it was given
    assert res.sent == 1


def test_paced_skip_reply_and_each_message_once(sockdir):
    m = FakeMilter(sockdir / "m.sock", proto.SMFIP_SKIP, skip_body=True)
    try:
        res = mc.run_paced(_paced([m.address], 5), concurrency=3, duration_s=60, rtt_s=0.0, io_timeout_s=10)
    finally:
        m.close()
    assert res.errors == 0 and res.completed == 5 and res.sent == 5, res.error_texts
    cmds = b"".join(c for c, _ in m.sessions[-1])
    assert cmds.count(b"B") == 1 and cmds.endswith(b"BDEQ")
