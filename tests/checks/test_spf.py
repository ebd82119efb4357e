"""SPF (RFC 7208) through the production resolver against the loopback DNS server."""
from __future__ import annotations

import re

import pytest

from authmilter.checks.spf import check_helo, check_spf, received_spf_value
from authmilter.resolver import Resolver
from authmilter.results import Result, SpfResult


@pytest.mark.parametrize("record,result", [
    ("v=spf1 ip4:192.0.2.0/24 -all", Result.PASS),
    ("v=spf1 ip4:198.51.100.1 -all", Result.FAIL),
    ("v=spf1 ip4:198.51.100.1 ~all", Result.SOFTFAIL),
    ("v=spf1 ?all", Result.NEUTRAL),
    ("v=spf1 ip4:192.0.2.0/24 moo", Result.PERMERROR),
])
def test_rfc7208_results_for_mail_from(dns_server, resolver, record, result):
    dns_server.add_txt("example.com", record)
    got = check_spf("192.0.2.10", "alice@example.com", "mail.example.net", resolver)
    assert got.result is result
    assert (got.scope, got.identity, got.domain, got.client_ip) == (
        "mailfrom", "alice@example.com", "example.com", "192.0.2.10")


def test_rfc7208_no_record_is_none(dns_server, resolver):
    dns_server.add_txt("example.com", "google-site-verification=abc")
    got = check_spf("192.0.2.10", "alice@example.com", "mail.example.net", resolver)
    assert got.result is Result.NONE


def test_rfc7208_2_4_null_sender_is_postmaster_at_helo(dns_server, resolver):
    dns_server.add_txt("mail.example.net", "v=spf1 a -all")
    dns_server.add("mail.example.net", "A", "192.0.2.10")
    got = check_spf("192.0.2.10", "", "mail.example.net", resolver)
    assert got.result is Result.PASS
    assert (got.scope, got.identity, got.domain) == ("mailfrom", "postmaster@mail.example.net", "mail.example.net")


def test_rfc7208_2_3_helo_is_checked_on_its_own(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.10 -all")
    dns_server.add_txt("mail.example.net", "v=spf1 -all")
    mail_from = check_spf("192.0.2.10", "alice@example.com", "mail.example.net", resolver)
    helo = check_helo("192.0.2.10", "mail.example.net", resolver)
    assert mail_from.result is Result.PASS
    assert helo.result is Result.FAIL
    assert (helo.scope, helo.identity, helo.domain) == ("helo", "mail.example.net", "mail.example.net")
    assert helo.resinfo().props == (("smtp.helo", "mail.example.net"),)


def test_rfc7208_helo_address_literal_is_none(resolver):
    assert check_helo("192.0.2.10", "[192.0.2.10]", resolver).result is Result.NONE


def test_rfc7208_ipv6_client(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip6:2001:db8::/32 -all")
    assert check_spf("2001:db8::25", "a@example.com", "h.example", resolver).result is Result.PASS
    assert check_spf("2001:db9::25", "a@example.com", "h.example", resolver).result is Result.FAIL


def test_ipv4_mapped_ipv6_client_is_evaluated_as_ipv4(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    got = check_spf("::ffff:192.0.2.7", "a@example.com", "h.example", resolver)
    assert (got.result, got.client_ip) == (Result.PASS, "192.0.2.7")


def test_servfail_is_temperror(dns_server, resolver):
    dns_server.set_fault("example.com", "servfail")
    got = check_spf("192.0.2.10", "alice@example.com", "h.example", resolver)
    assert got.result is Result.TEMPERROR
    assert got.reason


def test_timeout_is_temperror(dns_server):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=0.3, cache_entries=0)
    dns_server.add_txt("example.com", "v=spf1 include:slow.example.org -all")
    dns_server.set_fault("slow.example.org", "timeout")
    assert check_spf("192.0.2.10", "alice@example.com", "h.example", res).result is Result.TEMPERROR


def test_rfc7208_4_6_4_ten_lookup_limit(dns_server, resolver):
    # 11 DNS-querying mechanisms: the 11th exceeds the limit -> permerror.
    mechs = " ".join(f"a:h{i}.example.com" for i in range(11))
    dns_server.add_txt("example.com", f"v=spf1 {mechs} -all")
    for i in range(11):
        dns_server.add(f"h{i}.example.com", "A", "198.51.100.1")
    got = check_spf("192.0.2.10", "a@example.com", "h.example", resolver)
    assert got.result is Result.PERMERROR
    assert "lookup" in got.reason.lower()
    # ten are fine
    dns_server.clear()
    dns_server.add_txt("example.com", "v=spf1 " + " ".join(f"a:h{i}.example.com" for i in range(10)) + " -all")
    for i in range(10):
        dns_server.add(f"h{i}.example.com", "A", "198.51.100.1")
    assert check_spf("192.0.2.10", "a@example.com", "h.example", resolver).result is Result.FAIL


def test_rfc7208_4_6_4_two_void_lookup_limit(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 a:nx1.example.com a:nx2.example.com a:nx3.example.com -all")
    got = check_spf("192.0.2.10", "a@example.com", "h.example", resolver)
    assert got.result is Result.PERMERROR
    assert "void" in got.reason.lower()
    dns_server.clear()
    dns_server.add_txt("example.com", "v=spf1 a:nx1.example.com a:nx2.example.com -all")
    assert check_spf("192.0.2.10", "a@example.com", "h.example", resolver).result is Result.FAIL


def test_rfc7208_6_2_exp_explanation_on_fail(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 -all exp=why.example.com")
    dns_server.add_txt("why.example.com", "%{i} is not one of %{d}'s servers")
    got = check_spf("192.0.2.10", "a@example.com", "h.example", resolver)
    assert got.result is Result.FAIL
    assert got.explanation == "192.0.2.10 is not one of example.com's servers"
    # no exp= -> no explanation (not pyspf's default text)
    dns_server.clear()
    dns_server.add_txt("example.com", "v=spf1 -all")
    assert check_spf("192.0.2.10", "a@example.com", "h.example", resolver).explanation == ""


def test_rfc7208_5_5_ptr_name_whose_address_lookup_fails_is_skipped(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ptr -all")
    dns_server.add("10.2.0.192.in-addr.arpa", "PTR", "broken.example.com.")
    dns_server.add("10.2.0.192.in-addr.arpa", "PTR", "mail.example.com.")
    dns_server.set_fault("broken.example.com", "servfail")
    dns_server.add("mail.example.com", "A", "192.0.2.10")
    assert check_spf("192.0.2.10", "a@example.com", "h.example", resolver).result is Result.PASS


def test_quoted_local_part_with_at_sign_uses_the_last_at(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.10 -all")
    got = check_spf("192.0.2.10", '"a@b"@example.com', "h.example", resolver)
    assert (got.result, got.domain) == (Result.PASS, "example.com")


def test_invalid_client_ip_is_a_result_not_an_exception(resolver):
    got = check_spf("not-an-ip", "a@example.com", "h.example", resolver)
    assert got.result is Result.NONE
    assert "IP" in got.reason


def test_idn_mail_from_domain_is_queried_as_a_label(dns_server, resolver):
    dns_server.add_txt("xn--bcher-kva.example", "v=spf1 ip4:192.0.2.10 -all")
    got = check_spf("192.0.2.10", "a@bücher.example", "h.example", resolver)
    assert (got.result, got.domain) == (Result.PASS, "xn--bcher-kva.example")


def test_received_spf_value_rfc7208_9_1():
    r = SpfResult(Result.PASS, "mailfrom", "alice@example.com", "example.com", client_ip="192.0.2.10",
                  helo="mail.example.net")
    value = received_spf_value(r, "mx.example.org")
    flat = value.replace("\r\n\t", " ")
    assert flat.startswith(" pass (mx.example.org: domain of example.com designates 192.0.2.10 as permitted sender)")
    assert 'client-ip=192.0.2.10;' in flat
    assert 'envelope-from="alice@example.com";' in flat
    assert 'helo=mail.example.net;' in flat
    assert 'receiver=mx.example.org;' in flat
    assert flat.endswith("identity=mailfrom")
    assert all(len(line) <= 78 for line in ("Received-SPF:" + value).split("\r\n"))


def test_received_spf_value_quotes_hostile_remote_values():
    r = SpfResult(Result.PERMERROR, "mailfrom", 'x";evil=1@example.com', "example.com", client_ip="192.0.2.10",
                  helo="bad;helo=(x)\r\nInjected: yes", reason="Unknown mechanism found: moo")
    value = received_spf_value(r, "mx.example.org")
    assert "\r\nInjected" not in value
    assert "\n" not in value.replace("\r\n\t", "")
    assert 'envelope-from="x\\";evil=1@example.com";' in value.replace("\r\n\t", " ")
    assert re.search(r'helo="bad;helo=\(x\) *Injected: yes";', value.replace("\r\n\t", " "))
    assert 'problem="Unknown mechanism found: moo";' in value.replace("\r\n\t", " ")


def test_received_spf_value_for_helo_identity_has_no_envelope_from():
    r = SpfResult(Result.NONE, "helo", "mail.example.net", "mail.example.net", client_ip="192.0.2.10",
                  helo="mail.example.net")
    flat = received_spf_value(r, "").replace("\r\n\t", " ")
    assert "envelope-from" not in flat
    assert flat.endswith("identity=helo")
