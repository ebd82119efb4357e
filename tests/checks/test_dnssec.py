"""[dns] dnssec: DNSSEC-aware results against a real validating resolver on loopback.

One knotd serves four zones under ``lan.`` (itself unsigned): ``signed.lan`` signed by
knotd with its key as unbound's trust anchor (answers validate: AD), ``plain.lan``
unsigned (no AD), ``broken.lan`` signed but anchored to a DS of another zone's key
(validation fails: unbound answers SERVFAIL with an RFC 8914 DNSSEC error) and
``island.lan`` signed without any anchor (RRSIGs come back, AD does not). One unbound,
started from its own configuration, validates in front of it; both serve the module.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
from infra.unbound import BROKEN, ISLAND, PLAIN, SELECTOR, SIGNED, lan_resolver, write_dkim_key

from authmilter import authresults, keys
from authmilter.checks.dkim import verify_dkim
from authmilter.config.schema import settings_from_dict
from authmilter.dkim.sign import sign
from authmilter.model import Client, Envelope, Message, Session
from authmilter.pipeline import process
from authmilter.resolver import DnsStatus, Resolver
from authmilter.results import Result
from authmilter.runtime import Runtime

RAW = (b"From: Alice <alice@{d}>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
       b"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@{d}>\r\n\r\nHello.\r\n")


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory):
    return write_dkim_key(tmp_path_factory.mktemp("dnssec-keys"))


@pytest.fixture(scope="module")
def unbound(tmp_path_factory, keyfile):
    with lan_resolver(tmp_path_factory.mktemp("dnssec"), keyfile, spf="v=spf1 ip4:192.0.2.0/24 -all",
                      a="192.0.2.1") as server:
        yield server


def resolver(unbound, dnssec=True):
    return Resolver(servers=[(unbound.host, unbound.port)], timeout_s=3.0, dnssec=dnssec)


def signed_message(keyfile, domain):
    key = keys.load_signing_key(keyfile, domain, SELECTOR)
    raw = RAW.replace(b"{d}", domain.encode())
    value = sign(Message.from_bytes(raw), key, sign_headers=("From", "To", "Subject", "Date"))
    return Message.from_bytes(b"DKIM-Signature:" + value.encode() + b"\r\n" + raw)


def test_answers_record_the_ad_flag_and_the_cache_keeps_it(unbound):
    res = resolver(unbound)
    secure = res.query(f"{SELECTOR}._domainkey.{SIGNED}", "TXT")
    assert secure.status is DnsStatus.OK and secure.authenticated is True and secure.signed
    cached, expires = res.lookup(f"{SELECTOR}._domainkey.{SIGNED}", "TXT")
    assert expires > 0 and cached.authenticated is True
    plain = res.query(f"{SELECTOR}._domainkey.{PLAIN}", "TXT")
    assert plain.status is DnsStatus.OK and plain.authenticated is False and not plain.signed
    island = res.query(f"{SELECTOR}._domainkey.{ISLAND}", "TXT")
    assert island.status is DnsStatus.OK and island.authenticated is False and island.signed
    # An authenticated denial of existence (NSEC) is flagged too.
    missing = res.query(f"nokey._domainkey.{SIGNED}", "TXT")
    assert missing.status is DnsStatus.NXDOMAIN and missing.authenticated is True


def test_a_zone_that_fails_validation_is_a_servfail_named_by_its_extended_error(unbound):
    answer = resolver(unbound).query(f"{SELECTOR}._domainkey.{BROKEN}", "TXT")
    # No DNSKEY of broken.lan matches the anchored DS: RFC 8914 code 9, "DNSKEY Missing".
    assert answer.status is DnsStatus.TEMPERROR and answer.bogus
    assert "EDE 9 DNSKEY MISSING" in answer.error


def test_ignore_asks_for_nothing_and_flags_nothing(unbound):
    answer = resolver(unbound, dnssec=False).query(f"{SELECTOR}._domainkey.{SIGNED}", "TXT")
    assert answer.status is DnsStatus.OK and answer.authenticated is None and not answer.signed


@pytest.mark.parametrize("domain, dnssec, comment", [
    (SIGNED, True, "(key DNSSEC-validated)"),
    (PLAIN, False, "(unprotected key)"),
    (ISLAND, False, "(unprotected key)"),
])
def test_report_puts_the_key_status_in_authentication_results(unbound, keyfile, domain, dnssec, comment):
    (result,) = verify_dkim(signed_message(keyfile, domain), resolver(unbound))
    assert result.result is Result.PASS and result.dnssec is dnssec
    header = authresults.render("mx.lan", [result.resinfo()])
    assert f"dkim=pass {comment}" in header, header


def test_without_dnssec_the_dkim_result_has_no_key_comment(unbound, keyfile):
    (result,) = verify_dkim(signed_message(keyfile, SIGNED), resolver(unbound, dnssec=False))
    assert result.result is Result.PASS and result.dnssec is None
    header = authresults.render("mx.lan", [result.resinfo()])
    assert "DNSSEC" not in header and "unprotected" not in header, header


def test_require_for_keys_validated_and_unsigned_keys_pass(unbound, keyfile):
    res = resolver(unbound)
    (secure,) = verify_dkim(signed_message(keyfile, SIGNED), res, require_dnssec=True)
    (plain,) = verify_dkim(signed_message(keyfile, PLAIN), res, require_dnssec=True)
    assert (secure.result, secure.dnssec) == (Result.PASS, True)
    assert (plain.result, plain.dnssec) == (Result.PASS, False)


def test_require_for_keys_bogus_key_is_temperror(unbound, keyfile):
    (result,) = verify_dkim(signed_message(keyfile, BROKEN), resolver(unbound), require_dnssec=True)
    assert result.result is Result.TEMPERROR
    assert result.reason.startswith("key failed DNSSEC validation"), result.reason


def test_require_for_keys_signed_but_unvalidated_key_is_permerror(unbound, keyfile):
    (report,) = verify_dkim(signed_message(keyfile, ISLAND), resolver(unbound))
    (required,) = verify_dkim(signed_message(keyfile, ISLAND), resolver(unbound), require_dnssec=True)
    assert report.result is Result.PASS
    assert (required.result, required.reason) == (Result.PERMERROR, "key signed but not DNSSEC-validated")


def runtime(unbound, mode):
    return Runtime.load(settings_from_dict({
        "authserv_id": "mx.lan", "signing": {"enabled": False},
        "dns": {"servers": [unbound.server], "timeout_s": 3.0, "dnssec": mode}}, "test"))


def session(message, domain):
    return Session(client=Client(ip="192.0.2.10", hostname=f"mail.{domain}", helo=f"mail.{domain}", port=40000),
                   envelope=Envelope(mail_from=f"alice@{domain}", rcpts=("bob@example.org",)),
                   message=message, macros=MappingProxyType({}), queue_id="QID1")


def ar_and_log(outcome):
    (edit,) = [e for e in outcome.insertions if e.name == "Authentication-Results"]
    return edit.value, dict(outcome.log)


@pytest.mark.parametrize("domain, dkim, logged", [
    (SIGNED, "dkim=pass (key DNSSEC-validated)", "spf:yes,dkim:yes,dmarc:yes"),
    (PLAIN, "dkim=pass (unprotected key)", "spf:no,dkim:no,dmarc:no"),
])
def test_pipeline_reports_dnssec_in_header_and_log_line(unbound, keyfile, domain, dkim, logged):
    outcome = process(session(signed_message(keyfile, domain), domain), runtime(unbound, "report"))
    header, log = ar_and_log(outcome)
    assert dkim in header and "dmarc=pass" in header, header
    assert log["dnssec"] == logged


def test_pipeline_require_for_keys_bogus_key_is_dkim_temperror(unbound, keyfile):
    outcome = process(session(signed_message(keyfile, BROKEN), BROKEN), runtime(unbound, "require-for-keys"))
    log = dict(outcome.log)
    assert log["dkim"] == f"temperror:{BROKEN}", log


def test_pipeline_ignore_logs_no_dnssec(unbound, keyfile):
    outcome = process(session(signed_message(keyfile, SIGNED), SIGNED), runtime(unbound, "ignore"))
    header, log = ar_and_log(outcome)
    assert "dnssec" not in log and "DNSSEC" not in header and "unprotected" not in header, header


# --- the offline commands: `authmilter verify` and `authmilter testkey` ---------------------

AUTHMILTER = Path(sys.executable).with_name("authmilter")


def command(tmp_path, unbound, mode, *args, stdin=None):
    conf = tmp_path / f"{mode}.toml"
    conf.write_text(f'authserv_id = "mx.lan"\n[dns]\nservers = ["{unbound.server}"]\ntimeout_s = 3.0\n'
                    f'dnssec = "{mode}"\n[signing]\nenabled = false\n')
    return subprocess.run([str(AUTHMILTER), args[0], "-c", str(conf), *args[1:]], input=stdin,
                          capture_output=True, timeout=120)


def raw_message(keyfile, domain):
    msg = signed_message(keyfile, domain)
    return b"".join(n + b":" + v + b"\r\n" for n, v in msg.headers) + b"\r\n" + msg.body.as_bytes()


@pytest.mark.parametrize("domain, words, flags", [
    (SIGNED, "SPF answers DNSSEC-validated, DKIM keys DNSSEC-validated, DMARC answers DNSSEC-validated",
     {"spf": True, "dkim": True, "dmarc": True}),
    (PLAIN, "SPF answers NOT validated, DKIM keys NOT validated, DMARC answers NOT validated",
     {"spf": False, "dkim": False, "dmarc": False}),
])
def test_verify_reports_dnssec_per_check(unbound, keyfile, tmp_path, domain, words, flags):
    args = ("verify", "--client-ip", "192.0.2.10", "--mail-from", f"alice@{domain}", "-")
    raw = raw_message(keyfile, domain)
    text = command(tmp_path, unbound, "report", *args, stdin=raw)
    assert text.returncode == 0, text.stderr
    assert f"dnssec: {words}" in text.stdout.decode(), text.stdout
    doc = json.loads(command(tmp_path, unbound, "report", "verify", "--json", *args[1:], stdin=raw).stdout)
    assert doc["dnssec"] == flags
    ignored = command(tmp_path, unbound, "ignore", *args, stdin=raw)
    assert "dnssec:" not in ignored.stdout.decode()
    assert json.loads(command(tmp_path, unbound, "ignore", "verify", "--json", *args[1:], stdin=raw).stdout)[
        "dnssec"] is None


@pytest.mark.parametrize("domain, code, words", [
    (SIGNED, 0, "key OK (ed25519, 256 bits) (DNSSEC-validated)"),
    (PLAIN, 0, "key OK (ed25519, 256 bits) (unprotected key: not DNSSEC-validated)"),
    (ISLAND, 0, "key OK (ed25519, 256 bits) (unprotected key: not DNSSEC-validated, the zone is signed)"),
    (BROKEN, 7, "(the validating resolver refused it: DNSSEC validation failed)"),
])
def test_testkey_reports_the_key_answers_dnssec_status(unbound, keyfile, tmp_path, domain, code, words):
    proc = command(tmp_path, unbound, "report", "testkey", "-v", "-d", domain, "-s", SELECTOR, "-k", keyfile)
    assert proc.returncode == code, proc.stderr
    assert words in (proc.stdout + proc.stderr).decode()
    plain = command(tmp_path, unbound, "ignore", "testkey", "-v", "-d", domain, "-s", SELECTOR, "-k", keyfile)
    assert b"DNSSEC" not in plain.stdout + plain.stderr and b"unprotected" not in plain.stdout + plain.stderr
