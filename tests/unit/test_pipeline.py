"""pipeline.process end to end without the milter: real DNS on loopback, real keys."""
import os
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authmilter import keys
from authmilter.checks.dkim import verify_dkim
from authmilter.config.schema import settings_from_dict
from authmilter.dkim.sign import sign
from authmilter.model import Client, Envelope, Message, Session
from authmilter.outcome import Action, Direction
from authmilter.pipeline import process
from authmilter.results import Result
from authmilter.runtime import Runtime

AUTHSERV = "mx.test.example"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    d.chmod(0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = d / "test-sel.private"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.close(fd)
    (d / "KeyTable").write_text(f"sel._domainkey.example.com example.com:sel:{path}\n")
    (d / "SigningTable").write_text("*@example.com sel._domainkey.example.com\n")
    return d


def runtime_for(dns_server, keydir, **sections):
    data = {"authserv_id": AUTHSERV,
            "dns": {"servers": [dns_server.address], "timeout_s": 0.5, "cache_entries": 0},
            "signing": {"key_table": str(keydir / "KeyTable"),
                        "signing_table": "refile:" + str(keydir / "SigningTable"),
                        "internal_hosts": ["10.9.0.0/16"]}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return Runtime.load(settings_from_dict(data, "test"))


def publish_key(dns_server, keydir):
    key = keys.load_signing_key(str(keydir / "test-sel.private"), "example.com", "sel")
    dns_server.add_txt("sel._domainkey.example.com", keys.dns_record(key.private_key))


RAW = (b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
       b"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n")


def session(raw=RAW, ip="192.0.2.10", helo="mail.example.com", mail_from="alice@example.com", port=40000,
            **macros):
    return Session(client=Client(ip=ip, hostname="mail.example.com", helo=helo, port=port),
                   envelope=Envelope(mail_from=mail_from, rcpts=("bob@example.org",)),
                   message=Message.from_bytes(raw), macros=MappingProxyType(macros), queue_id="QID1")


def signed(raw, keydir):
    key = keys.load_signing_key(str(keydir / "test-sel.private"), "example.com", "sel")
    msg = Message.from_bytes(raw)
    value = sign(msg, key, sign_headers=("From", "To", "Subject", "Date"))
    return b"DKIM-Signature:" + value.encode() + b"\r\n" + raw


def ar_header(outcome):
    (edit,) = [e for e in outcome.insertions if e.name == "Authentication-Results"]
    assert edit.index == 0
    return edit.value


def test_inbound_spf_and_dkim_pass_gives_dmarc_pass(dns_server, keydir):
    publish_key(dns_server, keydir)
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    rt = runtime_for(dns_server, keydir, policy={"reject_own_domain_spoof": False})
    out = process(session(signed(RAW, keydir)), rt)
    assert out.action is Action.ACCEPT and out.direction is Direction.INBOUND
    ar = ar_header(out)
    assert ar.startswith(" " + AUTHSERV + ";")
    for part in ("spf=pass", "smtp.mailfrom=alice@example.com", "dkim=pass", "header.d=example.com",
                 "dmarc=pass", "header.from=example.com"):
        assert part in ar, ar
    assert out.log[0] == ("action", "accept")


def test_inbound_dmarc_reject_fails_with_550(dns_server, keydir):
    dns_server.add_txt("example.org", "v=spf1 -all")
    dns_server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    rt = runtime_for(dns_server, keydir)
    raw = RAW.replace(b"alice@example.com", b"alice@example.org")
    out = process(session(raw, mail_from="alice@example.org"), rt)
    assert out.action is Action.REJECT and out.smtp_code == "550" and "example.org" in out.smtp_text
    assert "dmarc=fail" in out.inserted("Authentication-Results") and "spf=fail" in out.inserted("Authentication-Results")


def test_forged_authentication_results_are_deleted_highest_index_first(dns_server, keydir):
    forged = (b"Authentication-Results: " + AUTHSERV.upper().encode() + b"; dkim=pass\r\n"
              b"Authentication-Results: other.example; spf=pass\r\n"
              b"Authentication-Results: (c) " + AUTHSERV.encode() + b" 1; dmarc=pass\r\n"
              b"Authentication-Results: " + AUTHSERV.encode() + b"; spf=pass\r\n")
    rt = runtime_for(dns_server, keydir)
    out = process(session(forged + RAW.replace(b"example.com", b"example.net")), rt)
    deletes = sorted((e.index for e in out.deletions if e.name == "Authentication-Results"), reverse=True)
    assert deletes == [4, 3, 1]


def test_outbound_from_internal_host_is_signed_and_verifies(dns_server, keydir):
    publish_key(dns_server, keydir)
    rt = runtime_for(dns_server, keydir)
    out = process(session(ip="10.9.1.2"), rt)
    assert out.direction is Direction.OUTBOUND and out.action is Action.ACCEPT
    (sig,) = [e for e in out.insertions if e.name == "DKIM-Signature"]
    msg = Message.from_bytes(b"DKIM-Signature:" + sig.value.encode() + b"\r\n" + RAW)
    (result,) = verify_dkim(msg, rt.resolver)
    assert result.result is Result.PASS and result.domain == "example.com"


@pytest.mark.parametrize("macros,ip,why", [
    ({"auth_authen": "alice@example.com"}, "198.51.100.7", "authenticated"),
    ({"daemon_name": "ORIGINATING"}, "198.51.100.7", "daemon ORIGINATING"),
    ({}, None, "local submission"),
    ({"port": 0}, "127.0.0.1", "local submission"),  # Postfix non_smtpd_milters: sendmail(1)
])
def test_outbound_classification(dns_server, keydir, macros, ip, why):
    rt = runtime_for(dns_server, keydir, signing={"internal_hosts": []})
    out = process(session(ip=ip, **macros), rt)
    assert out.direction is Direction.OUTBOUND and ("via", why) in out.log
    assert any(e.name == "DKIM-Signature" for e in out.insertions)


def test_sasl_user_not_authorised_for_from_domain_is_not_signed(dns_server, keydir):
    rt = runtime_for(dns_server, keydir)
    out = process(session(auth_authen="mallory@example.net"), rt)
    assert not any(e.name == "DKIM-Signature" for e in out.insertions)
    assert dict(out.log)["signed"].startswith("no")


def test_dns_timeout_on_dmarc_tempfails(dns_server, keydir):
    dns_server.add_txt("example.net", "v=spf1 -all")
    dns_server.set_fault("_dmarc.example.net", "timeout")
    rt = runtime_for(dns_server, keydir)
    raw = RAW.replace(b"example.com", b"example.net")
    out = process(session(raw, mail_from="a@example.net"), rt)
    assert out.action is Action.TEMPFAIL and out.smtp_code == "451"


def test_trusted_relay_checks_spf_for_the_real_sender(dns_server, keydir):
    dns_server.add_txt("example.org", "v=spf1 ip4:203.0.113.5 -all")
    relayed = (b"Received: from mail.example.org (mail.example.org [203.0.113.5])\r\n"
               b"\tby relay.test.example (Postfix) with ESMTPS id ABC\r\n\tfor <bob@example.org>; "
               b"Sun, 22 Nov 2026 10:00:00 +0000\r\n" + RAW.replace(b"example.com", b"example.org"))
    rt = runtime_for(dns_server, keydir, verify={"trusted_relays": ["10.1.2.3"]})
    out = process(session(relayed, ip="10.1.2.3", helo="relay.test.example", mail_from="a@example.org"), rt)
    assert "spf=pass" in out.inserted("Authentication-Results") and "203.0.113.5" in out.inserted("Authentication-Results")


def test_received_spf_option_replaces_untrusted_upstream_ones(dns_server, keydir):
    dns_server.add_txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all")
    raw = b"Received-SPF: pass (forged) receiver=evil.example;\r\n" + RAW.replace(b"example.com", b"example.org")
    rt = runtime_for(dns_server, keydir, verify={"add_received_spf": True})
    out = process(session(raw, mail_from="a@example.org"), rt)
    assert [e.index for e in out.deletions if e.name == "Received-SPF"] == [1]
    (ours,) = [e for e in out.insertions if e.name == "Received-SPF"]
    assert ours.value.lstrip().startswith("pass")


def test_missing_per_domain_key_tempfails_or_goes_unsigned(dns_server, tmp_path):
    # "%" keys: the key file for this From domain does not exist.
    kdir = tmp_path / "k"
    kdir.mkdir(mode=0o700)
    (kdir / "KeyTable").write_text(f"shared %:sel:{kdir}/%.private\n")
    (kdir / "SigningTable").write_text("*@* shared\n")
    base = {"authserv_id": AUTHSERV, "dns": {"servers": [dns_server.address], "cache_entries": 0},
            "signing": {"key_table": str(kdir / "KeyTable"), "signing_table": "refile:" + str(kdir / "SigningTable")}}
    rt = Runtime.load(settings_from_dict(base, "test"))
    out = process(session(ip=None), rt)
    assert out.action is Action.TEMPFAIL and out.smtp_code == "451"
    base["signing"]["on_missing_key"] = "accept"
    rt = Runtime.load(settings_from_dict(base, "test"))
    out = process(session(ip=None), rt)
    assert out.action is Action.ACCEPT and not any(e.name == "DKIM-Signature" for e in out.insertions)
    assert "key unavailable" in dict(out.log)["signed"]


def test_verify_disabled_accepts_without_lookups_but_still_removes_forgeries(dns_server, keydir):
    rt = runtime_for(dns_server, keydir, verify={"enabled": False})
    raw = b"Authentication-Results: " + AUTHSERV.encode() + b"; dmarc=pass\r\n" + RAW
    out = process(session(raw), rt)
    assert out.action is Action.ACCEPT and dns_server.queries == []
    assert [("delete", e.index) for e in out.deletions] == [("delete", 1)] and not out.insertions


def test_trusted_forwarder_by_domain_is_not_rejected_on_dmarc(dns_server, keydir):
    # ".example.com" is OpenDKIM host-list grammar (what import-opendkim writes for an
    # ExternalIgnoreList); the client's verified name mail.example.com lies under it.
    dns_server.add_txt("example.org", "v=spf1 -all")
    dns_server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    rt = runtime_for(dns_server, keydir, policy={"trusted_forwarders": [".example.com"]})
    raw = RAW.replace(b"alice@example.com", b"alice@example.org")
    out = process(session(raw, mail_from="alice@example.org"), rt)
    assert out.action is Action.ACCEPT and "trusted forwarder" in out.reasons[0]
    rt = runtime_for(dns_server, keydir, policy={"trusted_forwarders": ["192.0.2.0/24"]})
    assert process(session(raw, mail_from="alice@example.org"), rt).action is Action.ACCEPT
    rt = runtime_for(dns_server, keydir)
    assert process(session(raw, mail_from="alice@example.org"), rt).action is Action.REJECT


# -- typed outcome: results, keys used, report records ------------------------------------


def test_inbound_outcome_carries_typed_results_and_one_report_record(dns_server, keydir):
    dns_server.add_txt("example.org", "v=spf1 -all")
    dns_server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine; adkim=s; "
                                             "rua=mailto:agg@example.org; ruf=mailto:f@example.org; fo=1")
    rt = runtime_for(dns_server, keydir)
    raw = RAW.replace(b"alice@example.com", b"alice@example.org")
    out = process(session(raw, mail_from="bounce@example.org"), rt, now=1_790_000_000.0)
    assert [(r.method, r.result) for r in out.results] == [
        ("spf", Result.FAIL), ("spf", Result.NONE), ("dkim", Result.NONE), ("dmarc", Result.FAIL),
        ("arc", Result.NONE)]   # MAIL FROM, then HELO (no record for mail.example.com)
    (rec,) = out.records
    assert (rec.source_ip, rec.header_from, rec.envelope_from_domain) == ("192.0.2.10", "example.org", "example.org")
    assert (rec.spf_result, rec.spf_domain, rec.spf_scope, rec.dmarc_result) == ("fail", "example.org", "mfrom", "fail")
    assert rec.disposition == "reject" and rec.overrides == () and rec.time == 1_790_000_000.0
    assert rec.reporter == AUTHSERV and rec.queue_id == "QID1" and rec.helo == "mail.example.com"
    p = rec.policy
    assert (p.domain, p.p, p.sp, p.adkim, p.discovery) == ("example.org", "reject", "quarantine", "s", "treewalk")
    assert p.rua == ("mailto:agg@example.org",) and p.ruf == ("mailto:f@example.org",) and p.fo == "1"


def test_dry_run_records_delivery_with_a_local_policy_override(dns_server, keydir):
    dns_server.add_txt("example.org", "v=spf1 -all")
    dns_server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    rt = runtime_for(dns_server, keydir, policy={"dry_run": True})
    raw = RAW.replace(b"alice@example.com", b"alice@example.org")
    out = process(session(raw, mail_from="bounce@example.org"), rt)
    (rec,) = out.records
    assert out.action is Action.ACCEPT and rec.disposition == "none"
    assert ("local_policy", "dry_run") in rec.overrides


def test_no_record_without_dmarc_evaluation_or_for_a_tempfail(dns_server, keydir):
    rt = runtime_for(dns_server, keydir)
    raw = RAW.replace(b"alice@example.com", b"alice@nodmarc.example")
    assert process(session(raw, mail_from="a@nodmarc.example"), rt).records == ()
    dns_server.set_fault("_dmarc.tempfail.example", "servfail")
    raw = RAW.replace(b"alice@example.com", b"alice@tempfail.example")
    out = process(session(raw, mail_from="a@tempfail.example"), rt)
    assert out.action is Action.TEMPFAIL and out.records == ()


def test_outbound_outcome_names_the_keys_it_signed_with(dns_server, keydir):
    rt = runtime_for(dns_server, keydir)
    out = process(session(ip="10.9.1.1"), rt)
    assert [(k.domain, k.selector, k.algorithm) for k in out.signed] == [("example.com", "sel", "rsa-sha256")]
    assert [i.name for i in out.insertions] == ["DKIM-Signature"] and out.records == ()
