"""SRS through the real daemon: the milter path (smfi_chgfrom, smfi_delrcpt/addrcpt, 550
5.1.1) and the Postfix socketmap on its second socket."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from miltertest import constants as C

from authmilter.srs import SrsCodec

DOMAIN = "srs.example.net"
SECRETS = "current secret\nold secret\n"
MSG = b"From: Bob <bob@orig.example>\r\nTo: friend@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
BOUNCE = b"From: MAILER-DAEMON@elsewhere.example\r\nTo: x@srs.example.net\r\nSubject: Undelivered\r\n\r\nbounce\r\n"


def srs_config(tmp_path: Path, **extra: object) -> dict[str, object]:
    secret = tmp_path / "srs.secret"
    secret.write_text(SECRETS)
    secret.chmod(0o600)
    local = tmp_path / "local_domains"
    local.write_text("# our domains\nexample.com\n.example.com\n")
    return {"enabled": True, "domain": DOMAIN, "secret_file": str(secret),
            "local_domains": [f"file:{local}"], "exclude_domains": ["partner.example"], **extra}


def codec() -> SrsCodec:
    return SrsCodec(DOMAIN, (b"current secret", b"old secret"))


def forwarded(address: str, before: float, after: float) -> set[str]:
    return {codec().forward(address, before), codec().forward(address, after)}


def test_rcpt_and_envelope_actions_are_negotiated_only_when_srs_is_on(milterd, tmp_path):
    off = milterd()
    with off.client() as c:
        neg = c.negotiate()
    assert neg.protocol & C.SMFIP_NORCPT
    assert not neg.actions & (C.SMFIF_CHGFROM | C.SMFIF_ADDRCPT | C.SMFIF_DELRCPT)
    on = milterd(socket=f"unix:{tmp_path}/srs-on.sock", srs=srs_config(tmp_path))
    with on.client() as c:
        neg = c.negotiate()
    assert not neg.protocol & C.SMFIP_NORCPT
    assert neg.actions & C.SMFIF_CHGFROM and neg.actions & C.SMFIF_ADDRCPT and neg.actions & C.SMFIF_DELRCPT


def test_relayed_mail_gets_an_srs_envelope_sender(milterd, tmp_path):
    d = milterd(srs=srs_config(tmp_path))
    before = time.time()
    with d.client() as c:
        r = c.session(mail_from="bob@orig.example", rcpts=["local@example.com", "friend@elsewhere.example"],
                      message=MSG, macros={"i": "SRS1"})
    after = time.time()
    assert r.action == "accept"
    assert len(r.envelope) == 1 and r.envelope[0][0] == "chgfrom"
    assert r.envelope[0][1].strip("<>") in forwarded("bob@orig.example", before, after)
    assert d.wait_log(r"SRS1: action=accept .*srs_from=SRS0=")


def test_no_rewrite_for_a_local_sender_local_recipients_or_an_excluded_domain(milterd, tmp_path):
    d = milterd(srs=srs_config(tmp_path))
    cases = [("me@example.com", ["friend@elsewhere.example"]),          # our own sender: SPF allows us
             ("me@sub.example.com", ["friend@elsewhere.example"]),      # ".example.com" in the file
             ("bob@orig.example", ["local@example.com"]),               # delivered here, not relayed
             ("x@partner.example", ["friend@elsewhere.example"]),       # exclude_domains
             ("", ["friend@elsewhere.example"])]                        # the null sender
    for sender, rcpts in cases:
        with d.client() as c:
            r = c.session(mail_from=sender, rcpts=rcpts, message=MSG)
        assert r.action == "accept", (sender, r.reply)
        assert r.envelope == [], (sender, rcpts, r.envelope)


def test_bounce_to_an_srs_address_gets_its_recipient_restored(milterd, tmp_path):
    d = milterd(srs=srs_config(tmp_path))
    srs_addr = codec().forward("bob@orig.example")
    with d.client() as c:
        r = c.session(mail_from="", rcpts=[srs_addr], message=BOUNCE, macros={"i": "SRS2"})
    assert r.action == "accept", r.reply
    assert [kind for kind, _ in r.envelope] == ["delrcpt", "addrcpt"]
    assert r.envelope[0][1].strip("<>") == srs_addr
    assert r.envelope[1][1].strip("<>") == "bob@orig.example"


def test_an_old_secret_still_restores(milterd, tmp_path):
    d = milterd(srs=srs_config(tmp_path))
    srs_addr = SrsCodec(DOMAIN, (b"old secret",)).forward("carol@orig.example")
    with d.client() as c:
        r = c.session(mail_from="", rcpts=[srs_addr], message=BOUNCE)
    assert r.envelope[-1] == ("addrcpt", "carol@orig.example") or r.envelope[-1][1].strip("<>") == "carol@orig.example"


def test_forged_or_expired_srs_address_is_refused_550_5_1_1(milterd, tmp_path):
    d = milterd(srs=srs_config(tmp_path, max_age_days=10))
    good = codec().forward("bob@orig.example")
    tag, hash_, rest = good.split("=", 2)
    forged = f"{tag}={'AAAA' if hash_ != 'AAAA' else 'BBBB'}={rest}"
    expired = codec().forward("bob@orig.example", time.time() - 11 * 86400)
    for rcpt in (forged, expired):
        with d.client() as c:
            r = c.session(mail_from="", rcpts=[rcpt], message=BOUNCE, macros={"i": "SRSBAD"})
        assert r.action == "reject", rcpt
        assert r.reply is not None and r.reply.startswith("550 5.1.1"), r.reply
        assert r.envelope == []
    assert d.wait_log(r"SRSBAD: action=reject .*srs=\"?SRS address forged", count=1)
    assert d.wait_log(r"SRSBAD: action=reject .*srs=\"?SRS address expired", count=1)


# -- the socketmap ----------------------------------------------------------------------

def netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


def ask(sock: socket.socket, request: str) -> str:
    sock.sendall(netstring(request.encode()))
    buf = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, "socketmap closed the connection"
        buf += chunk
        head, colon, rest = buf.partition(b":")
        if colon and len(rest) >= int(head) + 1:
            assert rest[int(head):int(head) + 1] == b","
            return rest[: int(head)].decode()


def test_socketmap_answers_forward_and_reverse_like_the_milter(milterd, tmp_path):
    path = tmp_path / "srs.sock"
    d = milterd(srs=srs_config(tmp_path, socketmap=f"unix:{path}"))
    assert d.wait_log(r"srs socketmap pid=\d+ started")
    assert oct(os.stat(path).st_mode & 0o777) == "0o660"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        before = time.time()
        reply = ask(s, "forward bob@orig.example")
        after = time.time()
        assert reply.startswith("OK ") and reply[3:] in forwarded("bob@orig.example", before, after)
        # same connection, more requests (Postfix keeps it open)
        assert ask(s, "forward me@example.com") == "NOTFOUND "
        assert ask(s, "forward x@partner.example") == "NOTFOUND "
        assert ask(s, "forward @orig.example") == "NOTFOUND "     # Postfix's partial-key lookups
        assert ask(s, f"reverse {reply[3:]}") == "OK bob@orig.example"
        assert ask(s, "reverse bob@orig.example") == "NOTFOUND "
        tag, hash_, rest = reply[3:].split("=", 2)
        assert ask(s, f"reverse {tag}={'AAAA' if hash_ != 'AAAA' else 'BBBB'}={rest}") == "NOTFOUND "
        assert ask(s, "nosuchmap x").startswith("PERM ")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(b"99999999:")                  # too long: answered PERM, then closed
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert b":PERM " in data and data.endswith(b",")
    d.stop()
    assert not path.exists(), "the master removes the socketmap socket at stop"


def test_socketmap_on_inet_and_check_config_prints_the_postfix_lines(milterd, tmp_path):
    from milterd import free_port

    port = free_port()
    d = milterd(srs=srs_config(tmp_path, socketmap=f"inet:{port}@127.0.0.1"))
    assert d.wait_log(r"srs socketmap pid=\d+ started")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        assert ask(s, "reverse " + codec().forward("dan@orig.example")) == "OK dan@orig.example"
    import subprocess
    import sys

    out = subprocess.run([str(Path(sys.executable).with_name("authmilter")), "check-config", "-c",
                          str(d.config_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"sender_canonical_maps = socketmap:inet:127.0.0.1:{port}:forward" in out.stdout
    assert f"recipient_canonical_maps = socketmap:inet:127.0.0.1:{port}:reverse" in out.stdout


def test_postfix_postmap_queries_the_socketmap(milterd, tmp_path):
    """Postfix's own client (postmap -q) against our socketmap: what sender_canonical_maps
    and recipient_canonical_maps will ask."""
    import shutil
    import subprocess

    from support import require

    postmap = shutil.which("postmap") or "/usr/sbin/postmap"
    require(Path(postmap).exists(), "postmap not installed (apt-get install postfix)")
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("")          # postmap reads a main.cf; the defaults do
    path = tmp_path / "srs.sock"
    d = milterd(srs=srs_config(tmp_path, socketmap=f"unix:{path}"))
    assert d.wait_log(r"srs socketmap pid=\d+ started")

    def postmap_q(key: str, table: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([postmap, "-c", str(conf), "-q", key, f"socketmap:unix:{path}:{table}"],
                              capture_output=True, text=True, timeout=60)

    before = time.time()
    fwd = postmap_q("bob@orig.example", "forward")
    after = time.time()
    assert fwd.returncode == 0, fwd.stderr
    assert fwd.stdout.strip() in forwarded("bob@orig.example", before, after)
    rev = postmap_q(fwd.stdout.strip(), "reverse")
    assert (rev.returncode, rev.stdout.strip()) == (0, "bob@orig.example"), rev.stderr
    # not found: exit status 1, nothing printed
    for key, table in (("me@example.com", "forward"), ("nobody@srs.example.net", "reverse")):
        miss = postmap_q(key, table)
        assert (miss.returncode, miss.stdout) == (1, ""), (key, miss.stderr)
