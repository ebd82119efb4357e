"""`authmilter analyze --dns`: SPF for the origin, the DKIM keys and DMARC looked up now,
each with its DNSSEC status, against a real validating unbound in front of a knotd that
signs the zones (tests/infra/unbound.py), and a hostile message against the suite's
recording DNS server to show the lookups stay capped.

Zones under ``lan.`` (unsigned): ``signed.lan`` signed and anchored (secure),
``plain.lan`` unsigned (insecure), ``broken.lan`` signed with a wrong anchor (bogus),
``island.lan`` signed without an anchor (RRSIGs but no AD). Each publishes the same SPF
(198.51.100.0/24), DKIM key and DMARC p=reject records.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from infra.unbound import BROKEN, ISLAND, PLAIN, SELECTOR, SIGNED, lan_resolver, write_dkim_key

from authmilter import keys
from authmilter.analyze import analyze
from authmilter.analyze.command import cmd_analyze
from authmilter.analyze.core import read_message
from authmilter.analyze.dnscheck import MAX_LOOKUPS, lookup_all
from authmilter.analyze.render import as_json, as_text
from authmilter.cli import build_parser
from authmilter.dkim.sign import sign
from authmilter.model import Message
from authmilter.resolver import Resolver

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
AUTHMILTER = Path(sys.executable).with_name("authmilter")
ORIGIN, RELAY = "198.51.100.25", "192.0.2.10"


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory):
    return write_dkim_key(tmp_path_factory.mktemp("analyze-dns-keys"))


@pytest.fixture(scope="module")
def unbound(tmp_path_factory, keyfile):
    with lan_resolver(tmp_path_factory.mktemp("analyze-dns"), keyfile, spf="v=spf1 ip4:198.51.100.0/24 -all") as server:
        yield server


def message(keyfile: str, domain: str) -> bytes:
    """The forwarder sample's path (SPF passed for the origin at mx1, re-checked for mx1 at
    mx2) for *domain*, with a real DKIM signature of *domain* over From/To/Subject/Date."""
    sample = (SAMPLES / "forwarder-relay-recheck.eml").read_bytes()
    trace = sample.split(b"\n", 1)[1].split(b"DKIM-Signature:", 1)[0].replace(b"sender.example", domain.encode())
    body = (b"From: Bob <bob@" + domain.encode() + b">\nTo: Alice <alice@forwarder.example>\nSubject: lunch\n"
            b"Date: Mon, 1 Jun 2026 10:00:00 +0000\nMessage-ID: <fwd-1@x>\n\nSee you at noon.\n")
    key = keys.load_signing_key(keyfile, domain, SELECTOR)
    value = sign(Message.from_bytes(body.replace(b"\n", b"\r\n")), key, sign_headers=("From", "To", "Subject", "Date"))
    return trace + b"DKIM-Signature:" + value.encode() + b"\n" + body


def report_for(raw: bytes, server: str, *, require_dnssec: bool = False):
    host, _, port = server.rpartition(":")
    res = Resolver(servers=[(host, int(port))], timeout_s=3.0, dnssec=True)
    return lookup_all(read_message(raw), analyze(raw), res.budget(30.0), resolver_label=server,
                      require_dnssec=require_dnssec, timeout_s=3.0)


def test_validated_zone_spf_at_the_origin_passes_and_every_answer_is_secure(unbound, keyfile):
    raw = message(keyfile, SIGNED)
    d = report_for(raw, unbound.server)
    assert d.spf is not None and d.spf.domain == SIGNED and d.spf.domain_source == "Return-Path"
    assert d.spf.record == "v=spf1 ip4:198.51.100.0/24 -all"
    # the right hop passes; the relay the verdict was written for fails, as it did then
    assert [(c.ip, c.role, c.result) for c in d.spf.checks] == [(ORIGIN, "origin", "pass"), (RELAY, "relay", "fail")]
    assert (d.spf.ip, d.spf.result, d.spf.dnssec) == (ORIGIN, "pass", "secure")
    ((k),) = d.dkim
    assert (k.domain, k.selector, k.result, k.dnssec) == (SIGNED, SELECTOR, "pass", "secure")
    assert k.record and k.record.startswith("v=DKIM1")
    assert d.dmarc is not None
    assert (d.dmarc.result, d.dmarc.policy, d.dmarc.record, d.dmarc.dnssec) == ("pass", "reject", "v=DMARC1; p=reject",
                                                                              "secure")
    assert not d.capped and 0 < len(d.lookups) < MAX_LOOKUPS
    assert all(q.dnssec == "secure" and q.signed for q in d.lookups), d.lookups


def test_unsigned_zone_is_insecure(unbound, keyfile):
    d = report_for(message(keyfile, PLAIN), unbound.server)
    assert (d.spf.result, d.spf.dnssec) == ("pass", "insecure")
    assert [(k.result, k.dnssec) for k in d.dkim] == [("pass", "insecure")]
    assert (d.dmarc.result, d.dmarc.dnssec) == ("pass", "insecure")
    assert not any(q.signed for q in d.lookups)


def test_zone_failing_validation_is_bogus_and_its_checks_temperror(unbound, keyfile):
    d = report_for(message(keyfile, BROKEN), unbound.server)
    assert d.spf.record is None and (d.spf.result, d.spf.dnssec) == ("temperror", "bogus")
    assert [(k.result, k.dnssec) for k in d.dkim] == [("temperror", "bogus")]
    assert (d.dmarc.result, d.dmarc.dnssec) == ("temperror", "bogus")
    assert {q.dnssec for q in d.lookups} == {"bogus"}


def test_signed_zone_without_chain_of_trust_is_insecure_and_require_for_keys_refuses_its_key(unbound, keyfile):
    raw = message(keyfile, ISLAND)
    report = report_for(raw, unbound.server)
    assert [(k.result, k.dnssec) for k in report.dkim] == [("pass", "insecure")]
    assert all(q.signed for q in report.lookups if q.status == "ok")
    required = report_for(raw, unbound.server, require_dnssec=True)
    assert [(k.result, k.reason) for k in required.dkim] == [("permerror", "key signed but not DNSSEC-validated")]


def test_text_says_it_in_words(unbound, keyfile):
    raw = message(keyfile, SIGNED)
    text = as_text(analyze(raw), report_for(raw, unbound.server))
    assert f"the origin {ORIGIN} (first hop from outside) is authorised" in text
    assert f"the relay {RELAY}, where a verdict was written, is NOT authorised (fail)" in text
    assert f"DKIM d={SIGNED} s={SELECTOR}: key" in text and "The signature verifies now" in text
    assert text.count("DNSSEC-validated;") + text.count("DNSSEC-validated.") == 3, text


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(AUTHMILTER), "analyze", *args], input=stdin, capture_output=True, timeout=120)


def test_cli_dns_json_through_the_config_resolver(unbound, keyfile, tmp_path):
    conf = tmp_path / "authmilter.toml"
    conf.write_text(f'[dns]\nservers = ["{unbound.server}"]\ntimeout_s = 3.0\ndnssec = "require-for-keys"\n')
    out = _cli("--json", "--dns", "-c", str(conf), "-", stdin=message(keyfile, ISLAND))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    offline = as_json(analyze(message(keyfile, ISLAND)))
    # the offline keys are there, unchanged in shape; dns is added
    assert set(doc) == set(offline) and offline["dns"] is None
    assert doc["hops"] == offline["hops"] and doc["findings"] == offline["findings"]
    dns = doc["dns"]
    assert dns["resolver"] == unbound.server
    assert {"spf", "dkim", "dmarc", "lookups", "lookup_cap", "capped", "notes"} <= set(dns)
    assert dns["spf"]["result"] == "pass" and dns["spf"]["dnssec"] == "insecure" and dns["spf"]["ip"] == ORIGIN
    assert [(k["result"], k["dnssec"]) for k in dns["dkim"]] == [("permerror", "insecure")]   # require-for-keys
    assert dns["dmarc"]["record"] == "v=DMARC1; p=reject" and dns["dmarc"]["dnssec"] == "insecure"
    assert all({"name", "type", "status", "dnssec", "signed"} <= set(q) for q in dns["lookups"])


def test_cli_dns_server_flag_and_text(unbound, keyfile, tmp_path):
    path = tmp_path / "m.eml"
    path.write_bytes(message(keyfile, SIGNED))
    out = _cli("--dns-server", unbound.server, str(path))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert f"DNS, looked up now through {unbound.server}" in text and "is authorised" in text
    assert "DNSSEC-validated" in text


def test_offline_by_default_no_dns_section(keyfile):
    out = _cli("--json", "-", stdin=message(keyfile, SIGNED))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["dns"] is None


def test_command_function_with_dns(unbound, keyfile, tmp_path, capsys):
    path = tmp_path / "m.eml"
    path.write_bytes(message(keyfile, BROKEN))
    args = build_parser().parse_args(["analyze", "--json", "--dns-server", unbound.server, str(path)])
    assert cmd_analyze(args) == 0
    dns = json.loads(capsys.readouterr().out)["dns"]
    assert dns["spf"]["dnssec"] == dns["dmarc"]["dnssec"] == "bogus"
    assert dns["dkim"][0]["result"] == "temperror"


def test_bad_dns_server_is_a_usage_error():
    out = _cli("--dns-server", "not a server", str(SAMPLES / "gmail-to-postfix.eml"))
    assert out.returncode == 2 and b"--dns-server" in out.stderr


# --- hostile input: the lookups stay capped ----------------------------------------------

def hostile(n_signatures: int = 50) -> bytes:
    """The 500-hop garbage sample, with 50 DKIM signatures, an SPF relay verdict and a
    Return-Path whose SPF record makes ~100 lookups on its own (9 mx: terms, 10 MX each)."""
    sigs = b"".join(b"DKIM-Signature: v=1; a=rsa-sha256; d=hostile.test; s=s%d; h=from; bh=eA==; b=eA==\n" % i
                    for i in range(n_signatures))
    return (b"Return-Path: <x@hostile.test>\nFrom: <x@hostile.test>\n" + sigs
            + (SAMPLES / "hostile-500.eml").read_bytes())


def test_hostile_message_makes_at_most_the_capped_number_of_lookups(dns_server):
    dns_server.add_txt("hostile.test", "v=spf1 " + " ".join(f"mx:m{i}.hostile.test" for i in range(9)) + " -all")
    for i in range(9):
        for j in range(10):
            dns_server.add(f"m{i}.hostile.test", "MX", f"10 h{i}-{j}.hostile.test.")
            dns_server.add(f"h{i}-{j}.hostile.test", "A", "192.0.2.200")
    raw = hostile()
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=1.0, cache_entries=0, dnssec=True)
    d = lookup_all(read_message(raw), analyze(raw), res.budget(60.0), resolver_label="test")
    asked = len(dns_server.queries)
    assert asked <= MAX_LOOKUPS and d.capped
    assert len([q for q in d.lookups if q.error != "analyze lookup cap reached"]) == MAX_LOOKUPS
    assert len(d.dkim) == 8 + 1 and d.dkim[-1].reason == "too many signatures"
    assert any("cap of 100 DNS lookups" in n for n in d.notes)
    json.dumps(as_json(analyze(raw), d))
    text = as_text(analyze(raw), d)
    assert "\x1b" not in text and "\x07" not in text


def test_hostile_message_through_the_cli_is_defined(dns_server, tmp_path):
    path = tmp_path / "h.eml"
    path.write_bytes(hostile())
    out = _cli("--json", "--dns-server", f"127.0.0.1:{dns_server.port}", str(path))
    assert out.returncode == 0, out.stderr
    dns = json.loads(out.stdout)["dns"]
    assert len(dns["lookups"]) <= MAX_LOOKUPS + 50 and len(dns_server.queries) <= MAX_LOOKUPS


_HEADER_NAMES = st.sampled_from(["Received", "Authentication-Results", "Received-SPF", "X-Spam-Status", "From",
                                 "Return-Path", "DKIM-Signature", "Subject"])
_HEADER_VALUES = st.one_of(
    st.text(max_size=120),
    st.sampled_from([" from a.example ([198.51.100.7]) by b.example with esmtp; Mon, 1 Jun 2026 10:00:00 +0000",
                     " <x@hostile.test>", " <@>", " <SRS0=a=b=c=d@e>", " Alice <a@hostile.test>", " a@b@c",
                     " v=1; a=rsa-sha256; d=hostile.test; s=s1; h=from; bh=eA==; b=eA==",
                     " v=1; a=ed25519-sha256; d=..; s=\x00; h=; bh=; b=", " v=1; d=" + "a." * 140 + "test; s=x",
                     " mx.test; spf=fail (sender IP is 192.0.2.1) smtp.mailfrom=x@hostile.test"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=15), st.binary(max_size=100))
def test_lookups_never_raise_and_stay_bounded_on_arbitrary_headers(_shared_dns_server, headers, body):
    raw = b"".join(n.encode() + b":" + v.encode("utf-8", "surrogatepass") + b"\n" for n, v in headers) + b"\n" + body
    res = Resolver(servers=[("127.0.0.1", _shared_dns_server.port)], timeout_s=1.0, cache_entries=0, dnssec=True)
    d = lookup_all(read_message(raw), analyze(raw), res.budget(30.0), resolver_label="test", max_lookups=20)
    assert len([q for q in d.lookups if q.error != "analyze lookup cap reached"]) <= 20
    json.dumps(as_json(analyze(raw), d))
    assert "\x1b" not in as_text(analyze(raw), d)
