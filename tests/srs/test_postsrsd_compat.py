"""Compatibility with Debian's postsrsd (1.x) given the same secret file and domain.

The real postsrsd binary runs on loopback and answers Postfix's tcp_table protocol
(``get ADDRESS`` -> ``200 VALUE`` / ``500 REASON``) on its forward and reverse ports. An
admin migrating from postsrsd keeps the bounces in flight working only if our addresses
are the same as its addresses and each side reverses the other's.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from milterd import free_port
from support import require

from authmilter.srs import Reversal, SrsCodec, read_secrets

DOMAIN = "srs.example.net"
SECRETS = "first secret, signs\nsecond-secret-verifies\n"
WAIT_S = 30.0   # anti-hang bound only


class PostSrsd:
    def __init__(self, forward: int, reverse: int) -> None:
        self.ports = {"forward": forward, "reverse": reverse}
        self.conns: dict[str, tuple[socket.socket, object]] = {}

    def get(self, table: str, key: str) -> tuple[int, str]:
        if table not in self.conns:
            s = socket.create_connection(("127.0.0.1", self.ports[table]), timeout=WAIT_S)
            self.conns[table] = (s, s.makefile("rwb"))
        f = self.conns[table][1]
        f.write(f"get {urllib.parse.quote(key, safe='@=+-.')}\n".encode())  # type: ignore[attr-defined]
        f.flush()  # type: ignore[attr-defined]
        line = f.readline().decode().rstrip("\n")  # type: ignore[attr-defined]
        code, _, value = line.partition(" ")
        return int(code), urllib.parse.unquote(value)

    def close(self) -> None:
        for s, f in self.conns.values():
            f.close()  # type: ignore[attr-defined]
            s.close()


@pytest.fixture
def postsrsd(tmp_path: Path) -> Iterator[PostSrsd]:
    binary = shutil.which("postsrsd") or ("/usr/sbin/postsrsd" if Path("/usr/sbin/postsrsd").exists() else None)
    require(binary is not None, "postsrsd not installed (apt-get install postsrsd)")
    assert binary is not None
    secret = tmp_path / "postsrsd.secret"
    secret.write_text(SECRETS)
    secret.chmod(0o600)
    fwd, rev = free_port(), free_port()
    proc = subprocess.Popen([binary, f"-s{secret}", f"-d{DOMAIN}", "-l127.0.0.1", f"-f{fwd}", f"-r{rev}", "-4"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", rev), timeout=1.0).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                proc.kill()
                pytest.fail(f"postsrsd did not start: {out}")
            time.sleep(0.05)
    client = PostSrsd(fwd, rev)
    try:
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=WAIT_S)
        if proc.stdout:
            proc.stdout.close()


def ours() -> SrsCodec:
    return SrsCodec(DOMAIN, read_secrets(SECRETS))


SENDERS = ["alice@orig.example", "Bob.Smith@Orig.Example", "x+tag@sub.orig.example", "a=b@orig.example",
           # another forwarder's SRS0 and SRS1 (SRS1 from us)
           "SRS0=abcd=RA=orig.example=carol@fwd.example",
           "SRS1=wxyz=first.example==abcd=RA=orig.example=dave@fwd.example"]


@pytest.mark.parametrize("sender", SENDERS)
def test_our_forward_is_postsrsd_forward(postsrsd: PostSrsd, sender: str) -> None:
    before = time.time()
    code, theirs = postsrsd.get("forward", sender)
    after = time.time()
    assert code == 200, theirs
    # Same day on both sides (a run across midnight UTC may see either day).
    assert theirs in {ours().forward(sender, before), ours().forward(sender, after)}


@pytest.mark.parametrize("sender", SENDERS)
def test_each_side_reverses_the_other(postsrsd: PostSrsd, sender: str) -> None:
    codec = ours()
    code, theirs = postsrsd.get("forward", sender)
    assert code == 200
    mine = codec.forward(sender)
    back = codec.reverse(theirs)
    assert back.status is Reversal.RESTORED
    code, their_back = postsrsd.get("reverse", mine)
    assert code == 200, their_back
    assert their_back == back.address
    # SRS0 addresses come back to the sender; SRS1 to the previous forwarder's SRS0.
    if theirs.startswith("SRS0="):
        assert back.address == sender


def test_rotation_postsrsd_signed_with_an_old_secret_still_reverses(postsrsd: PostSrsd) -> None:
    """postsrsd signs with its first line; our file has a new first line and the old one after."""
    code, theirs = postsrsd.get("forward", "erin@orig.example")
    assert code == 200
    rotated = SrsCodec(DOMAIN, (b"brand new",) + read_secrets(SECRETS))
    assert rotated.reverse(theirs).address == "erin@orig.example"
    mine = rotated.forward("erin@orig.example")
    assert postsrsd.get("reverse", mine)[0] == 500      # postsrsd does not know the new secret


def test_both_refuse_a_forged_hash_and_accept_any_case(postsrsd: PostSrsd) -> None:
    mine = ours().forward("frank@orig.example")
    tag, hash_, rest = mine.split("=", 2)
    forged = f"{tag}={'AAAA' if hash_.upper() != 'AAAA' else 'BBBB'}={rest}"
    assert postsrsd.get("reverse", forged)[0] == 500
    assert ours().reverse(forged).status is Reversal.FORGED
    assert postsrsd.get("reverse", mine.upper()) == (200, "FRANK@ORIG.EXAMPLE")
    assert ours().reverse(mine.upper()).address == "FRANK@ORIG.EXAMPLE"


def test_both_refuse_an_expired_address(postsrsd: PostSrsd) -> None:
    old = ours().forward("gina@orig.example", time.time() - 30 * 86400)   # postsrsd's max age is 21 days
    assert postsrsd.get("reverse", old)[0] == 500
    assert ours().reverse(old).status is Reversal.EXPIRED
