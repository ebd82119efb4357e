"""Generators for the milter fuzzer (tests/fuzz/test_fuzz_milter.py).

Everything is drawn from one `random.Random(seed)`, so a seed and an iteration number
name a case exactly; `Case.describe()` prints what a failing one sent.

The world the cases live in (published by `publish()` on the loopback DNS server):

* ``victim.example`` — the forged identity: SPF ``ip4:198.51.100.7 -all`` (its one real
  server, never the connecting client), DMARC ``p=reject`` with relaxed alignment, and a
  DKIM key at ``sel._domainkey`` whose private half nobody here uses.
* ``attacker.example`` — what the forger controls: SPF ``all`` (anything passes), a DKIM
  key at ``a._domainkey`` that really signs, and no DMARC record.

So no case can legitimately reach ``dmarc=pass``: the only DMARC record is the victim's,
and no identity aligned with the victim can pass SPF or DKIM from the fuzzer's clients.
The attacker's valid SPF pass and DKIM signature make the cases harder, not easier:
they are exactly the unaligned passes a sloppy alignment check would count.
"""
from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519
from miltertest import constants as C

from authmilter import keys
from authmilter.dkim.sign import SigningKey, sign
from authmilter.model import Message

# Budgets (tests/fuzz/conftest.py describes them; `make fuzz` raises them).
SEED = int(os.environ.get("AUTHMILTER_FUZZ_SEED", "20261205"))
ITERATIONS = int(os.environ.get("AUTHMILTER_FUZZ_ITERATIONS", "300"))

AUTHSERV = "mx.test"
VICTIM = "victim.example"
VICTIM_IP = "198.51.100.7"          # the victim's only permitted sender; never a client here
ATTACKER = "attacker.example"
RELAY_IP = "10.1.2.3"               # verify.trusted_relays in the fuzz daemon
CLIENT_IPS = ("203.0.113.9", "203.0.113.200", "192.0.2.66", "2001:db8::5", "2001:db8:ffff::1",
              "::ffff:203.0.113.10", "IPv6:2001:db8::77")


@dataclass
class World:
    attacker_key: SigningKey
    forged_victim_key: SigningKey   # d=victim s=sel, but not the published key


def publish(dns_server) -> World:  # type: ignore[no-untyped-def]
    """Publish the victim's and the attacker's records; return the keys the cases use."""
    dns_server.add_txt(VICTIM, f"v=spf1 ip4:{VICTIM_IP} -all")
    dns_server.add_txt(f"_dmarc.{VICTIM}", "v=DMARC1; p=reject; sp=reject; adkim=r; aspf=r")
    victim_real = ed25519.Ed25519PrivateKey.generate()
    dns_server.add_txt(f"sel._domainkey.{VICTIM}", keys.dns_record(victim_real))
    dns_server.add_txt(ATTACKER, "v=spf1 all")
    attacker = ed25519.Ed25519PrivateKey.generate()
    dns_server.add_txt(f"a._domainkey.{ATTACKER}", keys.dns_record(attacker))
    return World(
        attacker_key=SigningKey(ATTACKER, "a", "ed25519-sha256", attacker, 256, "mem"),
        forged_victim_key=SigningKey(VICTIM, "sel", "ed25519-sha256",
                                              ed25519.Ed25519PrivateKey.generate(), 256, "mem"),
    )


# ---------------------------------------------------------------------------------------
# building blocks: each returns bytes, sometimes hostile

NON_UTF8 = (b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"\xf8\x88\x80\x80\x80")
JUNK = (b"", b" ", b"\t", b"\x00", b"\x01\x02", b"\x7f", b";", b"=", b"\\", b'"', b"(", b")", b"<", b">", b"[",
        b"]", b"@", b",", b":", b"%", b"\r\n", b"\n", b"\n\t", b"\r", b"\xc2\xa0", "é".encode(),
        "\u202e".encode(), b"xn--", b"%{s}", b"$(x)", b"'", b"\\\x00")


def _pick(rng: random.Random, seq):  # type: ignore[no-untyped-def]
    return seq[rng.randrange(len(seq))]


def garble(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """Insert, delete, duplicate or replace bytes and runs of *data*."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4) if rounds is None else rounds):
        op = rng.randrange(6)
        pos = rng.randint(0, len(out))
        if op == 0:
            out[pos:pos] = _pick(rng, JUNK)
        elif op == 1:
            out[pos:pos] = _pick(rng, NON_UTF8)
        elif op == 2 and out:
            del out[pos:pos + rng.randint(1, 8)]
        elif op == 3 and out:
            end = min(len(out), pos + rng.randint(1, 16))
            out[pos:pos] = out[pos:end] * rng.randint(1, 3)
        elif op == 4:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif op == 5 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
    return bytes(out)


def hostile_ip(rng: random.Random) -> str:
    """Addresses a forger writes into Received/HELO text: mostly the victim's server."""
    return _pick(rng, (VICTIM_IP, VICTIM_IP, f"IPv6:::ffff:{VICTIM_IP}", f"::ffff:{VICTIM_IP}", "198.51.100.0",
                       "10.1.2.3", "127.0.0.1", "2001:db8::7", f"{VICTIM_IP}%eth0", "0x7f.1", "999.1.1.1"))


def helo_name(rng: random.Random) -> bytes:
    v = rng.randrange(14)
    if v == 0:
        return f"[{hostile_ip(rng)}]".encode()
    if v == 1:
        return hostile_ip(rng).encode()
    if v == 2:
        return VICTIM.encode()
    if v == 3:
        return f"mail.{VICTIM}".encode()
    if v == 4:
        return b"h" + _pick(rng, NON_UTF8) + b".example"
    if v == 5:
        return b"a" * rng.choice((63, 64, 254, 300, 2000))
    if v == 6:
        return b"(" + VICTIM_IP.encode() + b")"
    if v == 7:
        return f"x helo={VICTIM_IP} [{VICTIM_IP}]".encode()
    if v == 8:
        return garble(rng, b"mail.attacker.example")
    if v == 9:
        return b"[IPv6:::ffff:" + VICTIM_IP.encode() + b"]"
    return _pick(rng, (b"mail.attacker.example", b"localhost", b"unknown", b"client.example", b"x"))


def connect_hostname(rng: random.Random) -> bytes:
    v = rng.randrange(10)
    if v == 0:
        return b"h" + _pick(rng, NON_UTF8) + b".attacker.example"
    if v == 1:
        return f"[{hostile_ip(rng)}]".encode()
    if v == 2:
        return b""
    if v == 3:
        return garble(rng, b"mail.attacker.example")
    if v == 4:
        return b"x" * rng.choice((255, 1000, 4000))
    if v == 5:
        return f"mail.{VICTIM}".encode()
    return _pick(rng, (b"mail.attacker.example", b"unknown", b"localhost"))


def mail_from(rng: random.Random) -> tuple[bytes, list[bytes]]:
    """The MAIL FROM argument list: the address (usually in <>) and ESMTP parameters."""
    v = rng.randrange(16)
    params: list[bytes] = []
    if rng.random() < 0.2:
        params = [_pick(rng, (b"SIZE=1000", b"BODY=8BITMIME", b"SMTPUTF8", b"AUTH=<>", b"RET=HDRS", b"X=\xff",
                              b"", b"=", b"ENVID=" + b"A" * 500))]
    if v == 0:
        return b"<>", params
    if v == 1:
        return f"<x@{VICTIM}>".encode(), params
    if v == 2:
        return f"<x@{ATTACKER}>".encode(), params
    if v == 3:
        return f"x@{VICTIM}".encode(), params
    if v == 4:
        return b"<x" + _pick(rng, NON_UTF8) + b"@" + VICTIM.encode() + b">", params
    if v == 5:
        return b"<x@" + ATTACKER.encode() + _pick(rng, NON_UTF8) + b">", params
    if v == 6:
        return f'<"a@{VICTIM}"@{ATTACKER}>'.encode(), params
    if v == 7:
        return f"<@{ATTACKER}:x@{VICTIM}>".encode(), params
    if v == 8:
        return garble(rng, f"<bounce@{VICTIM}>".encode()), params
    if v == 9:
        return b"<" + b"a" * rng.choice((64, 300, 5000)) + b"@" + ATTACKER.encode() + b">", params
    if v == 10:
        return f"<x@[{VICTIM_IP}]>".encode(), params
    if v == 11:
        return b"", params
    if v == 12:
        return f"<x@{VICTIM.upper()}.>".encode(), params
    return f"<bounce@{_pick(rng, (VICTIM, ATTACKER, 'sub.' + VICTIM))}>".encode(), params


# -- headers --------------------------------------------------------------------------------

# From values that name exactly one mailbox in the victim's domain, unambiguously.
CLEAN_VICTIM_FROM = (
    f"a@{VICTIM}", f"Alice <alice@{VICTIM}>", f'"Bob, Inc." <b@{VICTIM.upper()}>',
    f"=?utf-8?q?Caf=C3=A9?= <c@{VICTIM}>", f"<d@{VICTIM}> (the boss)", f"e@{VICTIM}.",
    f"Mallory (attacker.example) <m@{VICTIM}>", f'"m@{ATTACKER}" <m@{VICTIM}>',
    f"a@{VICTIM}, b@{VICTIM}",
)
# From values a forger hopes some reader takes for the victim (or that confuse parsers).
MURKY_FROM = (
    f"a@{VICTIM}, b@{ATTACKER}", f"b@{ATTACKER}, a@{VICTIM}", f"<a@{VICTIM}> <b@{ATTACKER}>",
    f"a@{VICTIM} <b@{ATTACKER}>", f"Team: a@{VICTIM};", f"a@{VICTIM}@{ATTACKER}", f"a@[{VICTIM_IP}]",
    f'"a@{VICTIM}" <b@{ATTACKER}>', f"a@{VICTIM}.{ATTACKER}", f"a@{ATTACKER}.{VICTIM}", f"a@x{VICTIM}",
    f"a@{VICTIM}\x00@{ATTACKER}", f"<a@{VICTIM}", f"a@{VICTIM}>", f"(a@{VICTIM}) b@{ATTACKER}",
    f"a@{VICTIM} (unterminated", f'"unterminated <a@{VICTIM}>', "a@victim\u2024example",
    "a@vıctim.example", "a@ＶＩＣＴＩＭ.example", "a@xn--victim.example", f"a@{VICTIM}..",
    f"a@.{VICTIM}", f"<@{ATTACKER}:a@{VICTIM}>", f"a@{VICTIM} ,", ",,a@" + VICTIM, f"a @ {VICTIM}",
    f"a@{VICTIM};b@{ATTACKER}", "undisclosed-recipients:;", "", " ", f"a@{'x.' * 130}{VICTIM}",
)


def from_headers(rng: random.Random) -> tuple[list[tuple[bytes, bytes]], bool]:
    """From header(s) and whether they name exactly one victim mailbox, cleanly."""
    v = rng.randrange(10)
    if v < 4:
        value = _pick(rng, CLEAN_VICTIM_FROM)
        name = _pick(rng, (b"From", b"From", b"FROM", b"from", b"fRoM"))
        folded = rng.random() < 0.2
        text = (" " + value) if not folded else ("\n\t" + value.replace(" ", "\n ", 1))
        return [(name, text.encode())], True
    if v < 7:
        value = _pick(rng, MURKY_FROM).encode()
        if rng.random() < 0.3:
            value = garble(rng, value)
        return [(b"From", b" " + value)], False
    if v == 7:   # two From headers
        first = _pick(rng, CLEAN_VICTIM_FROM).encode()
        second = _pick(rng, (f"x@{ATTACKER}", f"y@{VICTIM}")).encode()
        pair = [(b"From", b" " + first), (_pick(rng, (b"From", b"from", b"From ")), b" " + second)]
        rng.shuffle(pair)
        return pair, False
    if v == 8:   # odd names that are not From
        return [(_pick(rng, (b"From ", b" From", b"Fr\x00om", b"From\xff", b"Resent-From", b"Sender")),
                 f" a@{VICTIM}".encode())], False
    return [], False   # no From at all


def received_written_by_relay(rng: random.Random, client_ip: str) -> bytes:
    """The Received header our trusted relay adds: the client address is true, the HELO is
    what the client said (after the MTA's own syntax checks)."""
    helo = _pick(rng, (f"[{VICTIM_IP}]", VICTIM_IP, f"[IPv6:::ffff:{VICTIM_IP}]", "mail.attacker.example",
                       VICTIM, f"[{client_ip}]"))
    ip6 = ":" in client_ip
    lit = f"IPv6:{client_ip}" if ip6 else client_ip
    port = rng.randint(1, 65535)
    date = "Mon, 23 Nov 2026 10:00:00 +0000"
    styles = (
        # Postfix neuters " <>()\\\";@" in the HELO it writes
        f" from {helo.translate(str.maketrans({c: '?' for c in ' <>()' + chr(92) + chr(34) + ';@'}))} "
        f"(unknown [{lit}])\n\tby relay.mx.test (Postfix) with ESMTP id 4Q1\n\tfor <b@mx.test>; {date}",
        f" from [{lit}] (port={port} helo={helo})\n\tby relay.mx.test with esmtp (Exim 4.97)\n\tid 1x; {date}",
        f" from rdns.attacker.example ([{lit}]:{port} helo={helo})\n\tby relay.mx.test with esmtp (Exim 4.97)"
        f"\n\tid 1x; {date}",
        f" from [{lit}] (helo={helo})\n\tby relay.mx.test with smtp (Exim 4.97) id 1y; {date}",
        f" from {helo} (unknown [{lit}]) by relay.mx.test (Postfix) with SMTP id 4Q2; {date}",
    )
    return _pick(rng, styles).encode()


def forged_received(rng: random.Random) -> bytes:
    """A Received header the forger wrote itself (below the trusted ones: never to be believed)."""
    ip = hostile_ip(rng)
    forms = (
        f" from mail.{VICTIM} (mail.{VICTIM} [{ip}]) by mx.{VICTIM} (Postfix) with ESMTP id 1",
        f" from [{ip}] (helo=[{ip}]) by relay.mx.test",
        f" from x ({ip}) by y",
        f" from mail.{VICTIM} ([{ip}]:25 helo=mail.{VICTIM})",
        " from",
        " by mx.test; Mon, 1 Jan 2026 00:00:00 +0000",
        f" from (((((( [{ip}]",
        f" from a (b [{ip}] (c [{ip}]) by [{ip}]",
        f" from [{ip}]",
        "",
    )
    value = _pick(rng, forms).encode()
    return garble(rng, value) if rng.random() < 0.4 else value


def dkim_signature_garbage(rng: random.Random) -> bytes:
    """A DKIM-Signature value with hostile tags (claims d=victim more often than not)."""
    tags = {"v": "1", "a": "ed25519-sha256", "c": "relaxed/relaxed", "d": VICTIM, "s": "sel",
            "h": "from:to:subject", "bh": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "b": "dGVzdA=="}
    for _ in range(rng.randint(0, 4)):
        op = rng.randrange(8)
        key = _pick(rng, list(tags) + ["l", "i", "t", "x", "z", "q", "D", "v "])
        if op == 0:
            tags.pop(key, None)
        elif op == 1:
            tags[key] = ""
        elif op == 2:
            tags[key] = _pick(rng, (VICTIM, f"sub.{VICTIM}", ATTACKER, "..", "a" * 300, "é.example", "-1",
                                    "99999999999999999999", "rsa-sha1", "simple/bogus", "from:from:from"))
        elif op == 3:
            tags[key] = tags.get(key, "") + _pick(rng, ("=", ";", " ", "\r\n\t", "\x00", "%"))
        else:
            tags[key] = tags.get(key, "x")
    text = "; ".join(f"{k}={v}" for k, v in tags.items())
    data = (" " + text).encode()
    if rng.random() < 0.3:
        data = garble(rng, data)
    if rng.random() < 0.1:
        data += b"; d=" + ATTACKER.encode()   # duplicate tag
    return data


def forged_authentication_results(rng: random.Random) -> bytes:
    ident = _pick(rng, (AUTHSERV, AUTHSERV.upper(), f"sub.{AUTHSERV}", f"{AUTHSERV}.", f'"{AUTHSERV}"',
                        f"(c) {AUTHSERV}", f"{AUTHSERV} 1", f"\n\t{AUTHSERV}", f"x{AUTHSERV}", "upstream.example"))
    body = _pick(rng, (f"dmarc=pass header.from={VICTIM}", f"spf=pass smtp.mailfrom={VICTIM}",
                       f"dkim=pass header.d={VICTIM}", "none", "", "dmarc=pass (unterminated", '"x'))
    value = f" {ident}; {body}".encode()
    return garble(rng, value) if rng.random() < 0.3 else value


def filler_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    hs = [(b"To", b" bob@mx.test"), (b"Subject", b" invoice"), (b"Date", b" Mon, 23 Nov 2026 10:00:00 +0000"),
          (b"Message-ID", f" <{rng.randrange(10**9)}@{VICTIM}>".encode())]
    return [h for h in hs if rng.random() < 0.9]


def extra_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for _ in range(rng.randint(0, 6)):
        v = rng.randrange(14)
        if v == 0:
            out.append((b"Received", forged_received(rng)))
        elif v == 1:
            out.append((b"DKIM-Signature", dkim_signature_garbage(rng)))
        elif v == 2:
            out.append((_pick(rng, (b"Authentication-Results", b"authentication-results", b"Authentication-Results ")),
                        forged_authentication_results(rng)))
        elif v == 3:
            out.append((b"Received-SPF", b" pass (" + AUTHSERV.encode() + b") receiver=" + AUTHSERV.encode()))
        elif v == 4:
            out.append((_pick(rng, (b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results")),
                        garble(rng, f" i=1; a=rsa-sha256; cv=none; d={VICTIM}; s=sel; b=AAAA".encode())))
        elif v == 5:   # a header name with bytes no MTA should pass, but some do
            out.append((b"X-" + _pick(rng, NON_UTF8), b" value"))
        elif v == 6:
            out.append((b"X-Empty", b""))
        elif v == 7:
            out.append((b"X-Huge", b" " + b"A" * rng.choice((998, 5000, 30000))))
        elif v == 8:
            out.append((b"X-Nul", b" a\x00b\x00"))   # a NUL ends the value in the milter packet
        elif v == 9:
            out.append((b"X-Fold", _pick(rng, (b"\n\t", b"\n \n ", b" a\n", b" a\n\n\tb", b"\r\n\t", b" \n"))))
        elif v == 10:
            out.append((b"X-Many", b" x"))
            out.extend([(b"X-Many", b" %d" % i) for i in range(rng.choice((50, 300)))])
        elif v == 11:
            out.append((garble(rng, b"X-Odd-Name"), garble(rng, b" odd value")))
        elif v == 12:
            out.append((b"Subject", b" " + _pick(rng, NON_UTF8) + b" =?utf-8?b?" + b"!!" * 5 + b"?="))
        else:
            out.append((b"X-Utf8", " ünïcødé ✉".encode()))
    return out


def body(rng: random.Random) -> bytes:
    v = rng.randrange(6)
    if v == 0:
        return b""
    if v == 1:
        return b"\r\n" * rng.randint(1, 50)
    if v == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000)))
    if v == 3:
        return b"line\r\n" * rng.randint(1, 20000)   # up to ~120 kB, several BODY chunks
    return b"Please pay the attached invoice.\r\n"


# ---------------------------------------------------------------------------------------
# a whole session


@dataclass
class Case:
    seed: int
    iteration: int
    hostname: bytes
    ip: str
    helo: bytes | None              # None: no HELO command
    mail_from: bytes
    mail_params: list[bytes]
    headers: list[tuple[bytes, bytes]]
    body: bytes
    clean_victim: bool              # exactly one From naming only victim mailboxes
    decoy: str = ""                 # "", "abort" (a message aborted before this one) or "message"
    notes: list[str] = field(default_factory=list)

    def describe(self, limit: int = 160) -> str:
        def short(b: bytes) -> str:
            r = repr(b)
            return r if len(r) <= limit else r[:limit] + f"...({len(b)} bytes)"
        lines = [f"seed={self.seed} iteration={self.iteration} ip={self.ip} hostname={short(self.hostname)} "
                 f"helo={short(self.helo) if self.helo is not None else None} "
                 f"mail_from={short(self.mail_from)} params={self.mail_params} decoy={self.decoy!r} "
                 f"clean_victim={self.clean_victim}"]
        shown = self.headers if len(self.headers) <= 30 else self.headers[:30]
        lines += [f"  {short(n)}: {short(v)}" for n, v in shown]
        if len(self.headers) > 30:
            lines.append(f"  ... {len(self.headers) - 30} more headers")
        lines.append(f"  body: {short(self.body[:200])} ({len(self.body)} bytes)")
        return "\n".join(lines)


def make_case(seed: int, iteration: int, world: World) -> Case:
    rng = random.Random(f"{seed}:{iteration}")
    via_relay = rng.random() < 0.25
    client_ip = _pick(rng, CLIENT_IPS)
    from_hs, clean = from_headers(rng)
    headers: list[tuple[bytes, bytes]] = []
    extras = extra_headers(rng)
    headers += [h for h in extras if h[0] == b"Received"]
    if via_relay:
        # The relay's header is on top; below it whatever the client sent.
        headers.insert(0, (b"Received", received_written_by_relay(rng, client_ip.removeprefix("IPv6:"))))
    rest = from_hs + filler_headers(rng) + [h for h in extras if h[0] != b"Received"]
    rng.shuffle(rest)
    headers += rest
    msg_body = body(rng)
    if rng.random() < 0.3:
        # A signature that really verifies: the attacker's own (unaligned), or a victim-claiming
        # one made with a key the victim never published.
        key = world.attacker_key if rng.random() < 0.6 else world.forged_victim_key
        m = Message(headers=tuple((n, v.replace(b"\n", b"\r\n")) for n, v in headers), body=msg_body)
        try:
            sig = sign(m, key, sign_headers=("From", "To", "Subject", "Date"))
            headers.insert(rng.randint(0, len(headers)), (b"DKIM-Signature", sig.replace("\r\n", "\n").encode()))
        except Exception:  # noqa: BLE001 - the signer refusing odd input is not what is tested here
            pass
    if rng.random() < 0.05:
        # Many headers: the milter must still answer.
        headers += [(b"Received", forged_received(rng)) for _ in range(rng.choice((100, 400)))]
    mf, params = mail_from(rng)
    # Valid framing: libmilter drops a connection whose header name is empty (or starts
    # with the NUL that ends it) or whose connect hostname holds a NUL. No MTA sends
    # those; the protocol fuzzer covers them.
    headers = [(n.lstrip(b"\0") or b"X", v) for n, v in headers]
    hostname = connect_hostname(rng).replace(b"\0", b"")
    helo = None if rng.random() < 0.1 else helo_name(rng)
    if rng.random() < 0.8:
        # Most cases keep the strings pymilter decodes (names, envelope) valid UTF-8, so
        # they reach the checks; header values and bodies stay raw bytes in every case.
        hostname, mf = _utf8(hostname), _utf8(mf)
        helo = None if helo is None else _utf8(helo)
        params = [_utf8(p) for p in params]
        headers = [(_utf8(n), v) for n, v in headers]
    return Case(
        seed=seed, iteration=iteration, hostname=hostname,
        ip=RELAY_IP if via_relay else client_ip, helo=helo,
        mail_from=mf, mail_params=params, headers=headers, body=msg_body, clean_victim=clean,
        decoy=_pick(rng, ("", "", "", "", "abort", "message")),
    )


def _utf8(data: bytes) -> bytes:
    return data.decode("utf-8", "replace").encode("utf-8")


# ---------------------------------------------------------------------------------------
# raw framing (the protocol fuzzer)


def frame(cmd: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!L", len(payload) + 1) + cmd + payload


OPTNEG = frame(C.SMFIC_OPTNEG.encode(), struct.pack("!LLL", 6, C.SMFI_V6_ACTS, C.SMFI_V6_PROT))


def connect_payload(ip: str = "203.0.113.9", host: bytes = b"mail.attacker.example") -> bytes:
    fam = b"6" if ":" in ip else b"4"
    return host + b"\0" + fam + struct.pack("!H", 2525) + ip.encode() + b"\0"


def good_prefix(rng: random.Random) -> list[bytes]:
    """Frames of a valid session up to some point (the garbage goes after them)."""
    frames = [OPTNEG, frame(b"C", connect_payload()), frame(b"H", b"mail.attacker.example\0"),
              frame(b"M", f"<x@{VICTIM}>".encode() + b"\0"), frame(b"L", b"From\0 a@" + VICTIM.encode() + b"\0"),
              frame(b"N"), frame(b"B", b"body\r\n")]
    return frames[:rng.randint(0, len(frames))]


def garbage_session(rng: random.Random) -> tuple[str, bytes]:
    """(kind, bytes) of one malformed conversation."""
    kind = _pick(rng, ("truncated", "short_length", "long_length", "oversize", "zero_length", "unknown_cmd",
                       "out_of_order", "bad_optneg", "bad_connect", "bad_macro", "no_nul", "random",
                       "double_optneg", "eom_only", "empty_header_name", "nul_in_hostname"))
    pre = b"".join(good_prefix(rng))
    if kind == "truncated":
        f = frame(b"L", b"From\0 a@" + VICTIM.encode() + b"\0")
        return kind, pre + f[:rng.randint(1, len(f) - 1)]
    if kind == "short_length":
        payload = b"From\0 a@" + VICTIM.encode() + b"\0"
        return kind, pre + struct.pack("!L", rng.randint(1, len(payload))) + b"L" + payload + frame(b"E")
    if kind == "long_length":
        return kind, pre + struct.pack("!L", 200) + b"L" + b"From\0 x\0" + frame(b"E")
    if kind == "oversize":
        return kind, pre + struct.pack("!L", _pick(rng, (0xFFFFFFFF, 0x7FFFFFFF, 0x10000000, 1 << 20, 65536 * 4)))
    if kind == "zero_length":
        return kind, pre + struct.pack("!L", 0) + frame(b"E")
    if kind == "unknown_cmd":
        return kind, pre + frame(_pick(rng, (b"Z", b"\0", b"\xff", b"x", b"q")), b"junk\0") + frame(b"E")
    if kind == "out_of_order":
        order = [frame(b"M", f"<x@{VICTIM}>".encode() + b"\0"), frame(b"L", b"From\0 a@" + VICTIM.encode() + b"\0"),
                 frame(b"E"), frame(b"N"), frame(b"B", b"x"), frame(b"H", b"h\0"), frame(b"R", b"<r@mx.test>\0"),
                 frame(b"A"), frame(b"T"), frame(b"C", connect_payload())]
        rng.shuffle(order)
        return kind, OPTNEG + b"".join(order[:rng.randint(1, len(order))]) + frame(b"E")
    if kind == "bad_optneg":
        return kind, frame(b"O", _pick(rng, (b"", b"\0\0\0\2", struct.pack("!LLL", 0, 0, 0),
                                             struct.pack("!LLL", 99, 0xFFFFFFFF, 0xFFFFFFFF),
                                             struct.pack("!LL", 6, 1)))) + frame(b"E")
    if kind == "bad_connect":
        payload = _pick(rng, (b"", b"host", b"host\0", b"host\0" + b"4", b"host\0" + b"4\x00\x19",
                              b"host\0" + b"9" + struct.pack("!H", 25) + b"1.2.3.4\0",
                              b"host\0" + b"4" + struct.pack("!H", 25) + b"[1.2.3.4]\0",
                              b"host\0" + b"6" + struct.pack("!H", 25) + b"not-an-ip\0",
                              b"host\0" + b"4" + struct.pack("!H", 25) + b"1.2.3.4",
                              b"h\xff\0" + b"L" + b"/tmp/x\0"))
        return kind, OPTNEG + frame(b"C", payload) + frame(b"M", b"<x@" + VICTIM.encode() + b">\0") + frame(b"E")
    if kind == "bad_macro":
        # Name/value pairs, every string NUL-terminated: libmilter reads past its buffers
        # on an unterminated string or a name without a value (a C crash no Python code
        # can catch; test_fuzz_regressions.py has both).
        payload = _pick(rng, (b"", b"C", b"Cj\0mx\0", b"Cj\0mx\0{x}\0v\0", b"Mi\0" + b"Q" * 64000 + b"\0",
                              b"\xffj\0v\0", b"E" + b"\0" * 100, b"Mi\0\xff\xfe\0", b"Ei\0\0j\0\0",
                              b"Ci\0" + b"\xff" * 300 + b"\0{daemon_name}\0ORIGINATING\0"))
        return kind, pre + frame(b"D", payload) + frame(b"E")
    if kind == "no_nul":
        return kind, pre + frame(_pick(rng, (b"H", b"M", b"L", b"R")), b"no-terminator") + frame(b"E")
    if kind == "double_optneg":
        return kind, OPTNEG + OPTNEG + frame(b"C", connect_payload()) + frame(b"E")
    if kind == "empty_header_name":
        return kind, b"".join(good_prefix(rng)[:4]) + frame(b"L", b"\0 value\0") + frame(b"N") + frame(b"E")
    if kind == "nul_in_hostname":
        return kind, OPTNEG + frame(b"C", connect_payload(host=b"a\0b")) + frame(b"E")
    if kind == "eom_only":
        return kind, OPTNEG + frame(b"E")
    return kind, pre + bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
