"""DMARC (RFC 9989, and RFC 7489 compatibility mode) over the loopback DNS server."""
from __future__ import annotations

import pytest

from authmilter.checks.dmarc import check_dmarc
from authmilter.checks.fromhdr import parse_from
from authmilter.checks.orgdomain import (
    OrgTempError,
    discover_policy_rfc9989,
    org_domain_psl,
    org_domain_rfc9989,
    walk_targets,
)
from authmilter.errors import AuthmilterError
from authmilter.model import Message
from authmilter.resolver import Resolver
from authmilter.results import DkimResult, FromResult, Result, SpfResult


def author(domain: str) -> FromResult:
    return FromResult(ok=True, domain=domain, address=f"someone@{domain}")


def spf_pass(domain: str, scope: str = "mailfrom") -> SpfResult:
    identity = f"bounce@{domain}" if scope == "mailfrom" else domain
    return SpfResult(Result.PASS, scope, identity, domain, client_ip="192.0.2.1")


def dkim(domain: str, result: Result = Result.PASS, length_tag: bool = False) -> DkimResult:
    return DkimResult(result, domain=domain, selector="s", algorithm="rsa-sha256", has_length_tag=length_tag)


def dmarc_queries(dns_server) -> list[str]:
    return [name for name, rtype in dns_server.queries if name.startswith("_dmarc.") and rtype == "TXT"]


# -- policy tags --------------------------------------------------------------------


def test_rfc9989_fail_reports_requested_policy_p(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    r = check_dmarc(author("example.com"), None, [], resolver)
    assert r.result is Result.FAIL
    assert (r.policy, r.policy_domain, r.from_domain, r.testing) == ("reject", "example.com", "example.com", False)
    assert r.resinfo().props == (("header.from", "example.com"), ("policy.dmarc", "reject"))


def test_rfc9989_no_record_is_none(dns_server, resolver):
    r = check_dmarc(author("example.com"), spf_pass("example.com"), [], resolver)
    assert r.result is Result.NONE
    assert r.policy == ""


@pytest.mark.parametrize("p", ["none", "quarantine", "reject", "Reject"])
def test_rfc9989_p_values(dns_server, resolver, p):
    dns_server.add_txt("_dmarc.example.com", f"v=DMARC1; p={p}")
    assert check_dmarc(author("example.com"), None, [], resolver).policy == p.lower()


def test_rfc9989_t_y_is_testing(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; t=y")
    r = check_dmarc(author("example.com"), None, [], resolver)
    assert (r.result, r.policy, r.testing) == (Result.FAIL, "reject", True)
    assert "t=y" in r.resinfo().comment


def test_rfc9989_sp_applies_to_an_existing_subdomain(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine; np=none")
    dns_server.add("news.example.com", "A", "192.0.2.80")
    r = check_dmarc(author("news.example.com"), None, [], resolver)
    assert (r.result, r.policy, r.policy_domain, r.org_domain) == (
        Result.FAIL, "quarantine", "example.com", "example.com")
    # and p still applies to the domain itself
    assert check_dmarc(author("example.com"), None, [], resolver).policy == "reject"


def test_rfc9989_np_applies_to_a_non_existent_subdomain(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=none; sp=quarantine; np=reject")
    r = check_dmarc(author("nx.example.com"), None, [], resolver)
    assert (r.result, r.policy) == (Result.FAIL, "reject")
    assert "does not exist" in r.reason


def test_rfc9989_without_np_a_non_existent_subdomain_gets_sp_then_p(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")
    assert check_dmarc(author("nx.example.com"), None, [], resolver).policy == "quarantine"
    dns_server.clear()
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    assert check_dmarc(author("nx.example.com"), None, [], resolver).policy == "reject"


def test_rfc9989_existence_is_only_asked_when_np_matters(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")
    check_dmarc(author("nx.example.com"), None, [], resolver)
    assert ("nx.example.com", "A") not in dns_server.queries


def test_rfc9989_unknown_tags_ignored_and_bad_values_take_defaults(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; adkim=x; aspf=; foo=bar; pct=7; t=maybe")
    r = check_dmarc(author("example.com"), spf_pass("mail.example.com"), [], resolver)
    # aspf defaults to relaxed, so the subdomain is aligned; pct is not an RFC 9989 tag
    assert (r.result, r.spf_aligned, r.testing, r.sampled_out) == (Result.PASS, True, False, False)


def test_rfc9989_v_must_be_the_first_tag(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "p=reject; v=DMARC1")
    assert check_dmarc(author("example.com"), None, [], resolver).result is Result.NONE


def test_rfc9989_v_value_is_case_sensitive(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=dmarc1; p=reject")
    assert check_dmarc(author("example.com"), None, [], resolver).result is Result.NONE


def test_rfc9989_non_dmarc_txt_records_are_ignored(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=spf1 -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    assert check_dmarc(author("example.com"), None, [], resolver).policy == "quarantine"


def test_rfc9989_record_split_in_character_strings_is_joined(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", ["v=DMARC1; p=rej", "ect"])
    assert check_dmarc(author("example.com"), None, [], resolver).policy == "reject"


def test_rfc9989_multiple_records_are_discarded_and_the_walk_goes_on(dns_server, resolver):
    dns_server.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=none")
    dns_server.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=reject")
    r = check_dmarc(author("mail.example.com"), None, [], resolver)
    assert r.result is Result.NONE
    assert "2 DMARC records" in r.reason
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    r = check_dmarc(author("mail.example.com"), None, [], resolver)
    assert (r.result, r.policy, r.policy_domain) == (Result.FAIL, "quarantine", "example.com")


def test_rfc9989_invalid_p_with_valid_rua_acts_as_p_none(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=rejekt; rua=mailto:agg@example.com")
    r = check_dmarc(author("example.com"), None, [], resolver)
    assert (r.result, r.policy) == (Result.FAIL, "none")


@pytest.mark.parametrize("record", [
    "v=DMARC1; p=rejekt",
    "v=DMARC1; rua=not a uri",
    "v=DMARC1",
    "v=DMARC1; p=reject; sp=bogus",
    "v=DMARC1; p=reject; np=",
])
def test_rfc9989_record_without_usable_policy_is_permerror(dns_server, resolver, record):
    dns_server.add_txt("_dmarc.example.com", record)
    r = check_dmarc(author("example.com"), None, [], resolver)
    assert r.result is Result.PERMERROR
    assert "unusable" in r.reason


def test_malformed_record_bytes_do_not_crash(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", b"v=DMARC1; p=reject; rua=\xff\xfe; adkim=\x00")
    assert check_dmarc(author("example.com"), None, [], resolver).result is Result.FAIL


# -- alignment ------------------------------------------------------------------------


def test_rfc9989_spf_relaxed_alignment_via_organizational_domain(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    r = check_dmarc(author("example.com"), spf_pass("bounce.example.com"), [], resolver)
    assert (r.result, r.spf_aligned, r.dkim_aligned, r.spf_domain) == (
        Result.PASS, True, False, "bounce.example.com")
    assert (r.policy, r.org_domain) == ("reject", "example.com")


def test_rfc9989_spf_strict_alignment_needs_identical_domains(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; aspf=s")
    assert check_dmarc(author("example.com"), spf_pass("bounce.example.com"), [], resolver).result is Result.FAIL
    assert check_dmarc(author("example.com"), spf_pass("example.com"), [], resolver).result is Result.PASS


def test_rfc9989_dkim_relaxed_and_strict_alignment(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    r = check_dmarc(author("news.example.com"), None, [dkim("example.com")], resolver)
    assert (r.result, r.dkim_aligned, r.dkim_domain) == (Result.PASS, True, "example.com")
    dns_server.clear()
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; adkim=s")
    r = check_dmarc(author("news.example.com"), None, [dkim("example.com")], resolver)
    assert (r.result, r.dkim_aligned) == (Result.FAIL, False)
    r = check_dmarc(author("news.example.com"), None, [dkim("News.Example.com")], resolver)
    assert (r.result, r.dkim_domain) == (Result.PASS, "news.example.com")


def test_rfc9989_unrelated_domains_are_not_aligned(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.example.net", "v=DMARC1; p=none")
    r = check_dmarc(author("example.com"), spf_pass("example.net"), [dkim("example.net")], resolver)
    assert (r.result, r.spf_aligned, r.dkim_aligned) == (Result.FAIL, False, False)


def test_rfc9989_failed_dkim_and_spf_do_not_align(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    spf = SpfResult(Result.SOFTFAIL, "mailfrom", "a@example.com", "example.com")
    r = check_dmarc(author("example.com"), spf, [dkim("example.com", Result.FAIL)], resolver)
    assert r.result is Result.FAIL


def test_rfc9989_3_2_4_only_the_mail_from_identity_counts(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    r = check_dmarc(author("example.com"), spf_pass("example.com", scope="helo"), [], resolver)
    assert (r.result, r.spf_aligned) == (Result.FAIL, False)


def test_dkim_pass_with_l_tag_counts_only_when_accepted(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    sig = dkim("example.com", length_tag=True)
    r = check_dmarc(author("example.com"), None, [sig], resolver)
    assert r.result is Result.FAIL
    assert "l=" in r.reason
    assert check_dmarc(author("example.com"), None, [sig], resolver, accept_length_tag=True).result is Result.PASS


def test_any_aligned_signature_among_several_passes(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    sigs = [dkim("example.net"), dkim("example.com", Result.FAIL), dkim("mail.example.com")]
    r = check_dmarc(author("example.com"), None, sigs, resolver)
    assert (r.result, r.dkim_domain) == (Result.PASS, "mail.example.com")


# -- DNS Tree Walk --------------------------------------------------------------------


def test_rfc9989_tree_walk_stops_after_8_queries(dns_server, resolver):
    domain = "a.b.c.d.e.f.g.h.i.j.mail.example.com"
    r = check_dmarc(author(domain), None, [], resolver)
    assert r.result is Result.NONE
    assert dmarc_queries(dns_server) == [
        "_dmarc.a.b.c.d.e.f.g.h.i.j.mail.example.com", "_dmarc.g.h.i.j.mail.example.com",
        "_dmarc.h.i.j.mail.example.com", "_dmarc.i.j.mail.example.com", "_dmarc.j.mail.example.com",
        "_dmarc.mail.example.com", "_dmarc.example.com", "_dmarc.com",
    ]


def test_rfc9989_tree_walk_skips_a_record_between_label_8_and_the_author(dns_server, resolver):
    # RFC 9989 §5.1.8: the record at the 9-label zone cut is never seen.
    dns_server.add_txt("_dmarc.b.c.d.e.f.g.example.com", "v=DMARC1; p=reject; psd=n")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
    r = check_dmarc(author("mail.a.b.c.d.e.f.g.example.com"), None, [], resolver)
    assert (r.policy, r.policy_domain) == ("none", "example.com")
    assert len(dmarc_queries(dns_server)) == 8


def test_rfc9989_walk_targets_never_exceed_8():
    for n in range(1, 40):
        targets = walk_targets(".".join(f"l{i}" for i in range(n)))
        assert len(targets) == min(n, 8)
        assert [t.count(".") + 1 for t in targets[1:]] == list(range(min(n - 1, 7), 0, -1))


def test_rfc9989_policy_from_organizational_domain_not_intermediate_record(dns_server, resolver):
    # §4.10.1: Author Domain, else Organizational Domain, else PSD. mail.example.com's
    # record only takes part in choosing the Organizational Domain (fewest labels wins).
    dns_server.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    r = check_dmarc(author("a.mail.example.com"), None, [], resolver)
    assert (r.policy_domain, r.org_domain, r.policy) == ("example.com", "example.com", "quarantine")


def test_rfc9989_walk_stops_at_psd_n(dns_server, resolver):
    dns_server.add_txt("_dmarc.dept.example.com", "v=DMARC1; p=reject; psd=n")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
    r = check_dmarc(author("a.dept.example.com"), spf_pass("other.example.com"), [], resolver)
    assert (r.policy_domain, r.org_domain, r.policy) == ("dept.example.com", "dept.example.com", "reject")
    # other.example.com belongs to example.com, a different Organizational Domain
    assert (r.result, r.spf_aligned) == (Result.FAIL, False)
    # the policy walk ended at the psd=n record; the next query is the SPF domain's walk
    assert dmarc_queries(dns_server)[:3] == ["_dmarc.a.dept.example.com", "_dmarc.dept.example.com",
                                             "_dmarc.other.example.com"]


def test_rfc9989_tree_walk_with_psd_record_b_4_3(dns_server, resolver):
    # RFC 9989 Appendix B.4.3
    dns_server.add_txt("_dmarc.bank.example", "v=DMARC1; p=reject; psd=y")
    dns_server.add_txt("_dmarc.giant.bank.example", "v=DMARC1; p=quarantine")
    r = check_dmarc(author("giant.bank.example"), spf_pass("mail.giant.bank.example"),
                    [dkim("mail.mega.bank.example")], resolver)
    assert (r.result, r.spf_aligned, r.dkim_aligned) == (Result.PASS, True, False)
    assert (r.policy_domain, r.policy) == ("giant.bank.example", "quarantine")
    assert org_domain_rfc9989("mail.mega.bank.example", resolver) == "mega.bank.example"
    assert org_domain_rfc9989("giant.bank.example", resolver) == "giant.bank.example"
    assert "_dmarc.example" not in dmarc_queries(dns_server)


def test_rfc9989_psd_policy_applies_to_an_organization_without_a_record(dns_server, resolver):
    dns_server.add_txt("_dmarc.bank.example", "v=DMARC1; p=none; sp=quarantine; np=reject; psd=y")
    dns_server.add("newco.bank.example", "MX", "10 mx.newco.bank.example.")
    r = check_dmarc(author("newco.bank.example"), spf_pass("other.bank.example"), [], resolver)
    assert (r.result, r.policy_domain, r.org_domain, r.policy) == (
        Result.FAIL, "bank.example", "newco.bank.example", "quarantine")
    r = check_dmarc(author("ghost.bank.example"), None, [], resolver)
    assert (r.policy_domain, r.policy) == ("bank.example", "reject")   # np: ghost does not exist


def test_rfc9989_psd_record_does_not_replace_an_organizations_own(dns_server, resolver):
    dns_server.add_txt("_dmarc.bank.example", "v=DMARC1; p=reject; psd=y")
    dns_server.add_txt("_dmarc.giant.bank.example", "v=DMARC1; p=none")
    r = check_dmarc(author("www.giant.bank.example"), None, [], resolver)
    assert (r.policy_domain, r.policy) == ("giant.bank.example", "none")


@pytest.mark.parametrize("records,start,org", [
    # RFC 9989 §4.10.2 examples
    ({"mail.example.com": "v=DMARC1; p=none", "example.com": "v=DMARC1; p=none"}, "a.mail.example.com", "example.com"),
    ({"mail.example.com": "v=DMARC1; p=none; psd=n", "example.com": "v=DMARC1; p=none"},
     "a.mail.example.com", "mail.example.com"),
    ({"com": "v=DMARC1; p=none; psd=y"}, "a.mail.example.com", "example.com"),
    ({}, "a.mail.example.com", "a.mail.example.com"),
])
def test_rfc9989_organizational_domain_examples(dns_server, resolver, records, start, org):
    for name, value in records.items():
        dns_server.add_txt(f"_dmarc.{name}", value)
    assert org_domain_rfc9989(start, resolver) == org


def test_rfc9989_walks_share_their_queries(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    check_dmarc(author("a.example.com"), spf_pass("b.example.com"), [dkim("c.example.com")], resolver)
    names = dmarc_queries(dns_server)
    assert len(names) == len(set(names))


def test_discover_policy_rfc9989_reports_what_it_found(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    got = discover_policy_rfc9989("x.example.com", resolver)
    assert (got.status, got.policy_domain, got.org_domain, got.record.p) == ("found", "example.com", "example.com",
                                                                            "reject")


# -- DNS errors -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["timeout", "servfail"])
def test_dns_failure_on_the_policy_record_is_temperror(dns_server, fault):
    res = Resolver(servers=[("127.0.0.1", dns_server.port)], timeout_s=0.3, cache_entries=0)
    dns_server.set_fault("_dmarc.example.com", fault)
    r = check_dmarc(author("example.com"), spf_pass("example.com"), [], res)
    assert r.result is Result.TEMPERROR
    assert "_dmarc.example.com" in r.reason


def test_dns_failure_during_the_walk_is_temperror(dns_server, resolver):
    dns_server.set_fault("_dmarc.example.com", "servfail")
    assert check_dmarc(author("a.example.com"), None, [], resolver).result is Result.TEMPERROR


def test_dns_failure_in_an_alignment_walk_is_temperror_unless_another_identifier_aligns(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.set_fault("_dmarc.bounce.example.com", "servfail")
    r = check_dmarc(author("example.com"), spf_pass("bounce.example.com"), [], resolver)
    assert r.result is Result.TEMPERROR
    r = check_dmarc(author("example.com"), spf_pass("bounce.example.com"), [dkim("example.com")], resolver)
    assert r.result is Result.PASS


def test_org_domain_walk_temperror_marker(dns_server, resolver):
    dns_server.set_fault("_dmarc.example.com", "servfail")
    got = org_domain_rfc9989("a.example.com", resolver)
    assert isinstance(got, OrgTempError) and not got
    assert "_dmarc.example.com" in got.reason


def test_dns_failure_of_the_existence_test_is_temperror(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=none; np=reject")
    dns_server.set_fault("nx.example.com", "servfail")
    assert check_dmarc(author("nx.example.com"), None, [], resolver).result is Result.TEMPERROR


# -- From header ------------------------------------------------------------------------


def test_missing_from_is_none_and_unusable_from_is_permerror(dns_server, resolver):
    missing = parse_from(Message.from_bytes(b"Subject: x\r\n\r\n"))
    assert check_dmarc(missing, None, [], resolver).result is Result.NONE
    multiple = parse_from(Message.from_bytes(b"From: a@example.com\r\nFrom: b@example.com\r\n\r\n"))
    r = check_dmarc(multiple, spf_pass("example.com"), [dkim("example.com")], resolver)
    assert r.result is Result.PERMERROR
    assert "From" in r.reason
    assert dns_server.queries == []


def test_unknown_mode_is_our_error(resolver):
    with pytest.raises(AuthmilterError):
        check_dmarc(author("example.com"), None, [], resolver, mode="rfc1234")


# -- RFC 7489 mode ------------------------------------------------------------------------


def test_rfc7489_pct_0_is_always_sampled_out(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=0")
    r = check_dmarc(author("example.com"), None, [], resolver, mode="rfc7489", sample=lambda: 0.0)
    assert (r.result, r.policy, r.sampled_out, r.mode) == (Result.FAIL, "reject", True, "rfc7489")
    assert "sampled-out" in r.resinfo().comment


def test_rfc7489_pct_100_is_never_sampled_out(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=100")

    def never():  # pct=100 must not even draw
        raise AssertionError("sampled")

    r = check_dmarc(author("example.com"), None, [], resolver, mode="rfc7489", sample=never)
    assert (r.result, r.sampled_out) == (Result.FAIL, False)


@pytest.mark.parametrize("draw,out", [(0.0, False), (0.2999, False), (0.3, True), (0.99, True)])
def test_rfc7489_pct_samples_failing_messages(dns_server, resolver, draw, out):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine; pct=30")
    r = check_dmarc(author("example.com"), None, [], resolver, mode="rfc7489", sample=lambda: draw)
    assert r.sampled_out is out


def test_rfc7489_passing_messages_are_not_sampled(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=0")
    r = check_dmarc(author("example.com"), spf_pass("example.com"), [], resolver, mode="rfc7489")
    assert (r.result, r.sampled_out) == (Result.PASS, False)


def test_rfc7489_organizational_domain_from_the_public_suffix_list(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.co.uk", "v=DMARC1; p=reject; sp=quarantine")
    r = check_dmarc(author("mail.example.co.uk"), spf_pass("bounce.example.co.uk"), [], resolver, mode="rfc7489")
    assert (r.result, r.org_domain, r.policy_domain, r.policy) == (
        Result.PASS, "example.co.uk", "example.co.uk", "quarantine")
    # two queries at most: the From domain and its Organizational Domain; no walk
    assert dmarc_queries(dns_server) == ["_dmarc.mail.example.co.uk", "_dmarc.example.co.uk"]


def test_rfc7489_ignores_np_t_and_psd(dns_server, resolver):
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine; np=none; t=y; psd=y")
    r = check_dmarc(author("nx.example.com"), None, [], resolver, mode="rfc7489")
    assert (r.result, r.policy, r.testing) == (Result.FAIL, "quarantine", False)


def test_rfc7489_multiple_records_end_discovery(dns_server, resolver):
    dns_server.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=none")
    dns_server.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    r = check_dmarc(author("mail.example.com"), None, [], resolver, mode="rfc7489")
    assert r.result is Result.NONE
    assert dmarc_queries(dns_server) == ["_dmarc.mail.example.com"]


def test_rfc7489_custom_psl(dns_server, resolver):
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList(["example\n", "corp.example\n"])
    assert org_domain_psl("a.b.corp.example", psl) == "b.corp.example"
    dns_server.add_txt("_dmarc.b.corp.example", "v=DMARC1; p=reject")
    r = check_dmarc(author("a.b.corp.example"), None, [], resolver, mode="rfc7489", psl=psl)
    assert (r.policy_domain, r.policy) == ("b.corp.example", "reject")


def test_rfc7489_org_domain_psl_defaults():
    assert org_domain_psl("a.b.example.com") == "example.com"
    assert org_domain_psl("com") == "com"
