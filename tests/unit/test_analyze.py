"""`authmilter analyze`: the path, the verdicts and the findings, on real-shaped samples
(tests/data/samples/, see its README) and on hostile input."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authmilter.analyze import Scope, address_scope, analyze
from authmilter.analyze.render import as_json, as_text
from authmilter.analyze.software import exchange_release, software_of
from authmilter.checks.received import parse_received

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
AUTHMILTER = Path(sys.executable).with_name("authmilter")


def _sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture(scope="module")
def bt():
    return analyze(_sample("bt-delivery-receipt.eml"))


# --- the BT delivery receipt (the case) -------------------------------------

def test_bt_six_hops_oldest_first_from_the_origin(bt):
    assert [h.index for h in bt.hops] == [1, 2, 3, 4, 5, 6]
    assert [h.from_ip for h in bt.hops] == ["82.70.154.45", "10.187.98.11", "10.36.3.103", "62.239.224.235",
                                           "2a01:111:f400:7e06::204", "10.169.114.34"]
    assert [h.by_name for h in bt.hops][:4] == ["smtpe1.intersmtp.com", "EVMHT66-UKRD.domain1.systemhost.net",
                                                "RDW083A006ED62.bt.com", "VE1EUR02FT011.mail.protection.outlook.com"]
    assert bt.origin_ip == "82.70.154.45"
    assert bt.hops[0].from_name == "tbhext01.m0noc.net" and bt.hops[0].by_ip == "62.239.224.235"


def test_bt_internal_addresses_are_private(bt):
    assert bt.hops[0].scope is Scope.PUBLIC
    assert bt.hops[1].scope is Scope.PRIVATE and bt.hops[2].scope is Scope.PRIVATE
    assert bt.hops[2].by_scope is Scope.PRIVATE       # 10.187.98.11 as the receiver of hop 3
    assert bt.hops[3].scope is Scope.PUBLIC


def test_bt_relay_with_two_sides_is_one_host(bt):
    relay = bt.hosts[bt.hops[0].by_host - 1]
    assert {"62.239.224.235", "10.187.98.11"} <= set(relay.ips)
    assert {"smtpe1.intersmtp.com", "RDW083A006ED62.bt.com"} <= set(relay.names)
    # received hop 1 and hop 3 (came back), sent hops 2 and 4
    assert bt.hops[0].by_host == bt.hops[1].from_host == bt.hops[2].by_host == bt.hops[3].from_host
    sides = [t for t in bt.hints if t.kind == "two-addresses" and set(t.ips) == {"62.239.224.235", "10.187.98.11"}]
    assert [t.hop for t in sides] == [1, 3] and "NAT or dual-homed" in sides[0].text
    assert any(t.kind == "relay-revisited" for t in bt.hints)
    assert any(t.kind == "dmz-transit" and t.ips == ("10.187.98.11", "10.36.3.103") for t in bt.hints)


def test_bt_exchange_builds_are_named(bt):
    sw = [h.software or "" for h in bt.hops]
    assert "Exchange 2010 SP3 UR5" in sw[0] and "14.3.181.6" in sw[0]
    assert "Exchange 2007 SP3 UR12" in sw[1] and "8.3.342.0" in sw[1]
    assert "Exchange 2010 SP3 UR5" in sw[2]
    assert sw[3].startswith("Microsoft 365 Exchange Online front end") and "Exchange 2016" in sw[3]


def test_bt_verdicts_are_attributed_to_the_hop_that_wrote_them(bt):
    spf = [(r.hop, r.source, r.result, r.client_ip) for r in bt.results if r.method == "spf"]
    assert spf == [(1, "Received-SPF", "pass", "82.70.154.45"),
                   (4, "Authentication-Results", "fail", "62.239.224.235"),
                   (4, "Received-SPF", "fail", "62.239.224.235")]
    assert {(r.method, r.result) for r in bt.results if r.hop == 4} >= {("dkim", "fail"), ("dmarc", "fail")}


def test_bt_spf_checked_at_relay_names_the_relay_and_the_origin(bt):
    found = [f for f in bt.findings if f.kind == "spf-checked-at-relay"]
    assert len(found) == 1
    f = found[0]
    assert (f.hop, f.client_ip, f.origin_ip) == (4, "62.239.224.235", "82.70.154.45")
    assert "intermediate relay" in f.text and "pass" in f.text    # BT's own first hop had passed it
    assert set(bt.trusted_relays_proposal) == {"62.239.224.235", "10.187.98.11", "10.36.3.103"}


def test_bt_internal_layout_leaks_are_reported(bt):
    leak = next(f for f in bt.findings if f.kind == "internal-leak")
    assert leak.hop == 2 and "10.36.3.103" in leak.evidence and "EVMHT66-UKRD.domain1.systemhost.net" in leak.evidence
    assert "Exchange 2007 SP3 UR12" in leak.text


# --- samples written for the repository -------------------------------------------

def test_forwarder_rechecking_spf_at_its_second_relay():
    a = analyze(_sample("forwarder-relay-recheck.eml"))     # starts with an mbox From line
    assert [h.from_ip for h in a.hops] == ["198.51.100.25", "192.0.2.10", "192.0.2.11"]
    relay = [f for f in a.findings if f.kind == "spf-checked-at-relay"]
    assert [(f.hop, f.client_ip, f.origin_ip) for f in relay] == [(2, "192.0.2.10", "198.51.100.25")]
    fwd = [f for f in a.findings if f.kind == "forwarding-without-srs"]
    assert [(f.hop, f.client_ip) for f in fwd] == [(3, "192.0.2.11")]
    assert a.trusted_relays_proposal == ("192.0.2.10",)


def test_clean_gmail_to_postfix_path_has_no_findings():
    raw = _sample("gmail-to-postfix.eml")
    assert b"\r\n" in raw                                 # CRLF sample
    a = analyze(raw)
    assert len(a.hops) == 2 and a.hops[0].from_ip is None and a.hops[1].from_ip == "209.85.221.41"
    assert a.hops[1].software == "Postfix" and a.hops[0].software == "Google (Gmail)"
    assert a.hops[1].rdns == "mail-wr1-f41.google.com" and a.hops[1].protocol == "ESMTPS"
    assert [(r.method, r.result) for r in a.results] == [("dkim", "pass"), ("dmarc", "pass"), ("spf", "pass")]
    assert a.findings == () and a.trusted_relays_proposal == ()


def test_arc_sealed_list_forwarding():
    a = analyze(_sample("arc-forwarding.eml"))
    assert [h.from_ip for h in a.hops] == ["198.51.100.25", "127.0.0.1", "192.0.2.80"]
    arc = [r for r in a.results if r.source == "ARC-Authentication-Results"]
    assert {(r.instance, r.hop) for r in arc} == {(1, 2), (2, 3)}
    kinds = {f.kind: f for f in a.findings}
    assert set(kinds) == {"dkim-broken-in-transit", "subject-tagged"}
    assert kinds["dkim-broken-in-transit"].hop == 3
    assert "[example-list]" in kinds["subject-tagged"].text


def test_gateway_cloud_roundtrip():
    """Issue 14, Deliver 1, item by item on one path: an Exim gateway, Exchange 2019 on the
    inside, out to Exchange Online through the gateway, back in, Sendmail delivery."""
    a = analyze(_sample("gateway-cloud-roundtrip.eml"))
    assert [h.from_ip for h in a.hops] == ["198.51.100.25", "10.20.0.5", "10.20.0.10", "203.0.113.5",
                                           "2603:10a6:208:1::11", "2a01:111:f400:fe0c::100", "10.20.0.5"]
    assert a.origin_ip == "198.51.100.25"
    assert [h.software for h in a.hops] == [
        "Exim 4.96", "Microsoft Exchange 2019 CU14 (15.2.1544.4)", "Exim 4.96",
        "Microsoft 365 Exchange Online front end (15.20.7452.28)", "Microsoft 365 Exchange Online (15.20.7452.28)",
        "Exim 4.96", "Sendmail 8.17.1"]
    # X-...-Spam headers that name SPF are verdicts of the hop that wrote them
    spam = [(r.hop, r.source, r.result) for r in a.results if r.source.lower().startswith("x-")]
    assert spam == [(1, "X-Spam-Status", "pass"), (6, "X-Barracuda-Spam-Report", "fail")]
    kinds = {t.kind for t in a.hints}
    assert {"dmz-transit", "relay-revisited", "leaves-and-reenters"} <= kinds
    reenter = next(t for t in a.hints if t.kind == "leaves-and-reenters")
    assert reenter.hop == 6 and "gw.corp.example" in reenter.text
    found = {f.kind: f for f in a.findings}
    assert set(found) == {"spf-checked-at-relay", "dkim-broken-in-transit", "subject-tagged", "body-tagged",
                          "internal-leak"}
    relay = found["spf-checked-at-relay"]
    assert (relay.hop, relay.client_ip, relay.origin_ip) == (4, "203.0.113.5", "198.51.100.25")
    assert found["dkim-broken-in-transit"].hop == 4
    assert "[EXTERNAL]" in found["subject-tagged"].text
    assert found["body-tagged"].hop == 4 and found["body-tagged"].evidence[0].startswith("CAUTION")
    assert set(a.trusted_relays_proposal) == {"10.20.0.5", "10.20.0.10", "203.0.113.5"}
    leak = [f for f in a.findings if f.kind == "internal-leak"][0]
    assert {"10.20.0.5", "10.20.0.10", "hub01.corp.local", "mbx01.corp.local"} <= set(leak.evidence)


def test_srs_rewritten_envelope_is_not_forwarding_without_srs():
    raw = _sample("forwarder-relay-recheck.eml").replace(
        b"smtp.mailfrom=bob@sender.example;\n       dmarc",
        b"smtp.mailfrom=SRS0=AbCd=XY=sender.example=bob@forwarder.example;\n       dmarc")
    assert b"SRS0=" in raw
    a = analyze(raw)
    assert not [f for f in a.findings if f.kind == "forwarding-without-srs"]
    # the unchanged sample has the finding: the SRS address is what removes it
    assert [f for f in analyze(_sample("forwarder-relay-recheck.eml")).findings if f.kind == "forwarding-without-srs"]


@pytest.mark.parametrize("received, software", [
    (b" from a.example (a.example [192.0.2.1]) by mx.example.org (Postfix) with ESMTPS id 4Zy", "Postfix"),
    (b" from a.example ([192.0.2.1]) by mail.example.org with hMailServer", "hMailServer"),
    (b" from a.example (a.example [192.0.2.1]) by mx.example.org (8.17.1/8.17.1) with ESMTP id 5AB", "Sendmail 8.17.1"),
    (b" from a.example ([192.0.2.1]) by mx.example.org with esmtp (Exim 4.97.1) id 1x", "Exim 4.97.1"),
    (b" from mail-wr1-f41.google.com (mail-wr1-f41.google.com. [209.85.221.41]) by mx.google.com with ESMTPS id a1",
     "Google (Gmail)"),
    (b" from ex1.corp.local (10.0.0.1) by ex2.corp.local (10.0.0.2) with Microsoft SMTP Server id 15.0.1497.2",
     "Microsoft Exchange 2013 CU23 (15.0.1497.2)"),
    # a build missing from the table: the product and the raw build, nothing guessed
    (b" from ex1.corp.local (10.0.0.1) by ex2.corp.local (10.0.0.2) with Microsoft SMTP Server (TLS) id 15.2.9999.1",
     "Microsoft Exchange 2019 (build 9999, update not in our table) (15.2.9999.1)"),
    (b" from ex1.corp.local (10.0.0.1) by ex2.corp.local (10.0.0.2) with Microsoft SMTP Server id 16.0.1.1",
     "Microsoft Exchange (16.0.1.1)"),
])
def test_software_read_from_the_received_header(received, software):
    assert software_of(parse_received(received + b"; Mon, 1 Jun 2026 10:00:00 +0000")) == software


def test_lf_and_crlf_and_mbox_read_alike():
    raw = _sample("bt-delivery-receipt.eml").replace(b"\r\n", b"\n")
    variants = [raw, raw.replace(b"\n", b"\r\n"), b"From MAILER-DAEMON Mon Jul 18 11:12:00 2016\n" + raw]
    assert len({json.dumps(as_json(analyze(v))) for v in variants}) == 1


@pytest.mark.parametrize("ip,scope", [
    ("8.8.8.8", Scope.PUBLIC), ("10.1.2.3", Scope.PRIVATE), ("172.31.0.1", Scope.PRIVATE),
    ("192.168.1.1", Scope.PRIVATE), ("100.64.0.1", Scope.SHARED), ("127.0.0.1", Scope.LOOPBACK),
    ("::1", Scope.LOOPBACK), ("169.254.1.1", Scope.LINK_LOCAL), ("fe80::1", Scope.LINK_LOCAL),
    ("fd00::1", Scope.ULA), ("192.0.2.1", Scope.DOCUMENTATION), ("2001:db8::1", Scope.DOCUMENTATION),
    ("2a01:111:f400::1", Scope.PUBLIC), ("240.0.0.1", Scope.RESERVED), ("not-an-ip", None), (None, None),
])
def test_address_scopes(ip, scope):
    assert address_scope(ip) == scope


@pytest.mark.parametrize("build,name", [
    ("15.1.587.13", "Exchange 2016 (build 587, update not in our table)"), ("15.1.2507.6", "Exchange 2016 CU23"),
    ("14.3.181.6", "Exchange 2010 SP3 UR5"), ("8.3.342.0", "Exchange 2007 SP3 UR12"),
    ("15.20.7452.28", "Exchange Online"), ("15.2.1544.4", "Exchange 2019 CU14"), ("1.2.3", None), ("99.1.1.1", None),
    # from Microsoft's published list: CUs of 2013/2016/2019 (security updates keep the CU's
    # third component), Exchange SE, rollups of the 2007/2010 service packs
    ("15.00.1497.002", "Exchange 2013 CU23"), ("15.0.847.32", "Exchange 2013 SP1"), ("15.0.516.32", "Exchange 2013"),
    ("15.1.2507.37", "Exchange 2016 CU23"), ("15.1.1415.2", "Exchange 2016 CU8"), ("15.2.1748.10", "Exchange 2019 CU15"),
    ("15.2.1118.7", "Exchange 2019 CU12"), ("15.2.2562.17", "Exchange Server SE"), ("14.3.339.0", "Exchange 2010 SP3 UR16"),
    ("14.1.218.15", "Exchange 2010 SP1"), ("14.2.390.3", "Exchange 2010 SP2 UR8"), ("8.1.436.0", "Exchange 2007 SP1 UR10"),
    ("15.2.9999.1", "Exchange 2019 (build 9999, update not in our table)"),
])
def test_exchange_builds(build, name):
    assert exchange_release(build) == name


def test_config_marks_own_relays_and_keeps_listed_entries_in_the_proposal():
    a = analyze(_sample("bt-delivery-receipt.eml"), own_relay=lambda ip: ip == "62.239.224.235",
                trusted_relays=("62.239.224.235",))
    assert [h.own_relay for h in a.hops] == [False, False, False, True, False, False]
    f = next(f for f in a.findings if f.kind == "spf-checked-at-relay")
    assert (f.client_ip, f.origin_ip) == ("62.239.224.235", "82.70.154.45")
    assert a.trusted_relays_proposal[0] == "62.239.224.235"
    assert set(a.trusted_relays_proposal) == {"62.239.224.235", "10.187.98.11", "10.36.3.103"}


# --- hostile input --------------------------------------------------------------------

_GARBAGE = ["from", "by", "with", "id", "for", "via", ";", "(", ")", "((((", "))", "[", "]", "[IPv6:", "::ffff:",
            "10.0.0.1", "999.1.1.1", "[192.0.2.1]", "(unknown [198.51.100.7])", "helo=[192.0.2.99]", "\x1b[31m",
            "\x07", "\xff\xfe", "=?utf-8?b?AAAA?=", "a" * 90, "Microsoft SMTP Server id 15.1.1.1", "(Postfix)",
            "(Exim 4.96)", '"', "\\", "2001:db8::1", "Mon, 99 Foo 2016 99:99:99 +9999", "Mon, 1 Jun 2026 10:00:00 +0000",
            "spf=fail", "client-ip=10.0.0.1", "(sender IP is 62.239.224.235)", "dkim=pass", "i=1;", "\r", "\t"]


def make_hostile(seed: int = 14) -> bytes:
    """500 Received headers of garbage with garbage verdicts between them (the sample file)."""
    rnd = random.Random(seed)
    lines = []
    for k in range(500):
        words = [rnd.choice(_GARBAGE) for _ in range(rnd.randint(0, 30))]
        value = ""
        for i, w in enumerate(words):
            value += ("\n\t" if i and rnd.random() < 0.1 else " ") + w
        lines.append("Received:" + value)
        if k % 10 == 0:
            name = rnd.choice(["Authentication-Results", "Received-SPF", "ARC-Authentication-Results",
                               "X-Spam-Status"])
            lines.append(name + ":" + " ".join(rnd.choice(_GARBAGE) for _ in range(rnd.randint(0, 20))))
    head = "\n".join(lines).encode("utf-8", "surrogateescape")
    return head + b"\nSubject: [x] \xff\n\n[EXTERNAL] body\n"


def test_hostile_sample_file_is_the_generated_one():
    assert _sample("hostile-500.eml") == make_hostile()


def test_hostile_chain_of_500_hops_gives_a_defined_answer():
    a = analyze(_sample("hostile-500.eml"))
    assert len(a.hops) == 500 and [h.index for h in a.hops] == list(range(1, 501))
    doc = json.loads(json.dumps(as_json(a)))
    assert {"hops", "results", "findings"} <= set(doc)
    text = as_text(a)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text


def test_chain_longer_than_the_limit_is_cut_with_a_note():
    raw = b"".join(b"Received: from h%d (h [192.0.2.%d]) by x%d\n" % (i, i % 250, i) for i in range(1200))
    a = analyze(raw + b"\nbody\n")
    assert len(a.hops) == 1000 and a.notes and "1200" in a.notes[0]


_NAMES = st.sampled_from(["Received", "Authentication-Results", "ARC-Authentication-Results", "Received-SPF",
                          "X-Spam-Status", "X-Forefront-Antispam-Report", "Subject", "received", "From"])
_VALUES = st.one_of(st.text(max_size=200),
                    st.lists(st.sampled_from(_GARBAGE), max_size=25).map(" ".join))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=25), st.binary(max_size=200))
def test_analyze_never_raises_on_arbitrary_headers(headers, body):
    raw = b"".join(n.encode() + b":" + v.encode("utf-8", "surrogatepass") + b"\n" for n, v in headers)
    a = analyze(raw + b"\n" + body)
    json.dumps(as_json(a))
    as_text(a)


# --- the command line, through the installed console script ----------------------------

def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(AUTHMILTER), "analyze", *args], input=stdin, capture_output=True, timeout=60)


def test_cli_json_has_the_public_keys():
    out = _run("--json", str(SAMPLES / "bt-delivery-receipt.eml"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["hops"]) == 6
    for hop in doc["hops"]:
        assert {"index", "from_name", "from_ip", "by_name", "by_ip", "scope", "software", "with", "timestamp",
                "delay_s", "rdns"} <= set(hop)
    assert doc["hops"][0]["from_ip"] == "82.70.154.45" and doc["hops"][1]["scope"] == "private"
    for r in doc["results"]:
        assert {"hop", "source", "method", "result", "client_ip"} <= set(r)
    f = next(f for f in doc["findings"] if f["kind"] == "spf-checked-at-relay")
    assert (f["hop"], f["client_ip"], f["origin_ip"]) == (4, "62.239.224.235", "82.70.154.45")
    assert all({"kind", "hop"} <= set(x) for x in doc["findings"])


def test_cli_text_explains_the_finding_in_words():
    out = _run(str(SAMPLES / "bt-delivery-receipt.eml"))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "evaluated SPF for 62.239.224.235" in text and "the message came from 82.70.154.45" in text
    assert "Exchange 2007 SP3 UR12" in text
    assert 'trusted_relays = ["10.187.98.11", "10.36.3.103", "62.239.224.235"]' in text


def test_cli_reads_stdin():
    out = _run("--json", "-", stdin=_sample("forwarder-relay-recheck.eml"))
    assert out.returncode == 0, out.stderr
    assert [h["from_ip"] for h in json.loads(out.stdout)["hops"]] == ["198.51.100.25", "192.0.2.10", "192.0.2.11"]


def test_cli_with_config_recognises_own_relays(tmp_path):
    conf = tmp_path / "authmilter.toml"
    conf.write_text('[verify]\ntrusted_relays = ["62.239.224.235"]\n')
    out = _run("--json", "-c", str(conf), str(SAMPLES / "bt-delivery-receipt.eml"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [h["own_relay"] for h in doc["hops"]] == [False, False, False, True, False, False]
    assert doc["trusted_relays_proposal"][0] == "62.239.224.235"


def test_cli_bad_config_and_missing_file_exit_2(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('[verify]\ntrusted_relays = ["not an address"]\n')
    out = _run("-c", str(conf), str(SAMPLES / "bt-delivery-receipt.eml"))
    assert out.returncode == 2 and b"trusted_relays" in out.stderr
    assert _run(str(tmp_path / "missing.eml")).returncode == 2
