"""policy.decide: one function, every rule, in order of precedence."""
from dataclasses import replace

import pytest

from authmilter.config.schema import PolicySettings
from authmilter.outcome import Action
from authmilter.policy import Evidence, decide
from authmilter.results import DkimResult, DmarcResult, FromResult, Result, SpfResult

GOOD_FROM = FromResult(ok=True, domain="example.com", address="a@example.com")


def spf(result, domain="example.com"):
    return SpfResult(result=result, scope="mailfrom", identity=f"b@{domain}", domain=domain, client_ip="192.0.2.1")


def dmarc(result, policy="reject", **kw):
    return DmarcResult(result=result, from_domain="example.com", policy=policy, **kw)


def ev(**kw):
    base = dict(from_=GOOD_FROM, spf=spf(Result.PASS), dmarc=dmarc(Result.PASS))
    base.update(kw)
    return Evidence(**base)


S = PolicySettings()


def test_pass_is_accepted():
    assert decide(ev(), S).action is Action.ACCEPT


def test_dmarc_reject_fail_is_550_with_domain_in_reply():
    d = decide(ev(spf=spf(Result.FAIL), dmarc=dmarc(Result.FAIL)), S)
    assert d.action is Action.REJECT and d.code == "550" and d.xcode == "5.7.1"
    assert "example.com" in d.text


def test_dmarc_quarantine_holds_by_default_and_marks_in_header_mode():
    d = decide(ev(dmarc=dmarc(Result.FAIL, policy="quarantine")), S)
    assert d.action is Action.QUARANTINE and "quarantine" in d.quarantine_reason
    d = decide(ev(dmarc=dmarc(Result.FAIL, policy="quarantine")), replace(S, quarantine="header"))
    assert d.action is Action.ACCEPT and d.marker_header == ("X-Spam-Flag", " YES")


def test_dmarc_none_policy_delivers():
    assert decide(ev(dmarc=dmarc(Result.FAIL, policy="none")), S).action is Action.ACCEPT


@pytest.mark.parametrize("flag", [{"testing": True}, {"sampled_out": True}])
def test_rfc9989_t_y_and_rfc7489_pct_downgrade_one_step(flag):
    assert decide(ev(dmarc=dmarc(Result.FAIL, **flag)), S).action is Action.QUARANTINE
    assert decide(ev(dmarc=dmarc(Result.FAIL, policy="quarantine", **flag)), S).action is Action.ACCEPT


def test_configured_actions_per_outcome():
    s = replace(S, on_dmarc_reject="quarantine", on_dmarc_quarantine="reject")
    assert decide(ev(dmarc=dmarc(Result.FAIL)), s).action is Action.QUARANTINE
    assert decide(ev(dmarc=dmarc(Result.FAIL, policy="quarantine")), s).action is Action.REJECT
    assert decide(ev(dmarc=dmarc(Result.FAIL)), replace(S, on_dmarc_reject="accept")).action is Action.ACCEPT


def test_dry_run_accepts_but_remembers():
    d = decide(ev(dmarc=dmarc(Result.FAIL)), replace(S, dry_run=True))
    assert d.action is Action.ACCEPT and d.would is Action.REJECT


def test_temperror_that_could_change_verdict_tempfails():
    d = decide(ev(spf=spf(Result.TEMPERROR), dmarc=dmarc(Result.FAIL)), S)
    assert d.action is Action.TEMPFAIL and (d.code, d.xcode) == ("451", "4.7.24")
    d = decide(ev(dmarc=dmarc(Result.TEMPERROR, policy="")), S)
    assert d.action is Action.TEMPFAIL and (d.code, d.xcode) == ("451", "4.7.0")
    assert decide(ev(dmarc=dmarc(Result.TEMPERROR, policy="")), replace(S, on_dns_error="accept")).action \
        is Action.ACCEPT


def test_temperror_that_cannot_change_verdict_is_ignored():
    # DMARC passed through DKIM; the SPF temperror changes nothing.
    dk = DkimResult(result=Result.PASS, domain="example.com")
    d = decide(ev(spf=spf(Result.TEMPERROR), dkim=(dk,), dmarc=dmarc(Result.PASS)), S)
    assert d.action is Action.ACCEPT


def test_bad_from_rejected_by_default_and_configurable():
    bad = FromResult(ok=False, error="2 From headers")
    d = decide(ev(from_=bad, dmarc=None), S)
    assert d.action is Action.REJECT and "From" in d.text
    assert decide(ev(from_=bad, dmarc=None), replace(S, on_bad_from="accept")).action is Action.ACCEPT


def test_trusted_forwarder_never_rejected_on_dmarc():
    d = decide(ev(dmarc=dmarc(Result.FAIL), trusted_forwarder=True), S)
    assert d.action is Action.ACCEPT and "trusted forwarder" in d.reasons[0]


def test_reject_spf_fail_is_opt_in():
    e = ev(spf=spf(Result.FAIL), dmarc=dmarc(Result.NONE, policy=""))
    assert decide(e, S).action is Action.ACCEPT
    d = decide(e, replace(S, reject_spf_fail=True))
    assert d.action is Action.REJECT and d.xcode == "5.7.23"


def test_own_domain_spoof_rejected_unless_aligned_pass():
    own = frozenset({"example.com"})
    spoof = ev(spf=spf(Result.FAIL, "attacker.example"), dmarc=dmarc(Result.NONE, policy=""))
    assert decide(spoof, S, own).action is Action.REJECT
    assert decide(spoof, replace(S, reject_own_domain_spoof=False), own).action is Action.ACCEPT
    signed = replace(spoof, dkim=(DkimResult(result=Result.PASS, domain="example.com"),))
    assert decide(signed, S, own).action is Action.ACCEPT
    # A DKIM pass that only covers part of the body (l=) does not count.
    partial = replace(spoof, dkim=(DkimResult(result=Result.PASS, domain="example.com", has_length_tag=True),))
    assert decide(partial, S, own).action is Action.REJECT


def helo(result, name="mail.example.com"):
    return SpfResult(result=result, scope="helo", identity=name, domain=name, client_ip="192.0.2.1")


NO_DMARC = dmarc(Result.NONE, policy="")


@pytest.mark.parametrize("settings,evidence,want,xcode", [
    # policyd-spf Mail_From_reject = Fail (reject_spf_fail, default results ["fail"])
    (dict(reject_spf_fail=True), dict(spf=spf(Result.SOFTFAIL)), Action.ACCEPT, ""),
    # Mail_From_reject = Softfail
    (dict(reject_spf_fail=True, reject_spf_results=("fail", "softfail")), dict(spf=spf(Result.SOFTFAIL)),
     Action.REJECT, "5.7.23"),
    # SPF_Not_Pass: neutral too, never none/pass
    (dict(reject_spf_fail=True, reject_spf_results=("fail", "softfail", "neutral")), dict(spf=spf(Result.NEUTRAL)),
     Action.REJECT, "5.7.23"),
    (dict(reject_spf_fail=True, reject_spf_results=("fail", "softfail", "neutral")), dict(spf=spf(Result.NONE)),
     Action.ACCEPT, ""),
    # PermError_reject = True: X.7.24 (RFC 7372 "SPF validation error")
    (dict(reject_spf_fail=True, reject_spf_results=("fail", "permerror")), dict(spf=spf(Result.PERMERROR)),
     Action.REJECT, "5.7.24"),
    # HELO_reject = Fail: the HELO identity fails while MAIL FROM passes
    (dict(reject_helo_spf=("fail",)), dict(helo=helo(Result.FAIL)), Action.REJECT, "5.7.23"),
    (dict(), dict(helo=helo(Result.FAIL)), Action.ACCEPT, ""),
    # a null sender's MAIL FROM check is the HELO identity (RFC 7208 §2.4)
    (dict(reject_helo_spf=("fail",)), dict(spf=helo(Result.FAIL)), Action.REJECT, "5.7.23"),
    # a trusted forwarder (policyd-spf Whitelist / skip_addresses) is never rejected on SPF
    (dict(reject_spf_fail=True, reject_helo_spf=("fail",)), dict(spf=spf(Result.FAIL), helo=helo(Result.FAIL),
                                                                 trusted_forwarder=True), Action.ACCEPT, ""),
    # TempError_Defer = True (spf_temperror_tempfail, the default) / False
    (dict(reject_spf_fail=True), dict(spf=spf(Result.TEMPERROR)), Action.TEMPFAIL, "4.7.24"),
    (dict(reject_spf_fail=True, spf_temperror_tempfail=False), dict(spf=spf(Result.TEMPERROR)), Action.ACCEPT, ""),
])
def test_spf_local_rules(settings, evidence, want, xcode):
    d = decide(ev(dmarc=NO_DMARC, **evidence), replace(S, **settings))
    assert d.action is want, d
    assert d.xcode == xcode


def test_helo_rule_comes_before_the_mail_from_rule():
    d = decide(ev(dmarc=NO_DMARC, spf=spf(Result.FAIL), helo=helo(Result.FAIL)),
               replace(S, reject_spf_fail=True, reject_helo_spf=("fail",)))
    assert d.action is Action.REJECT and d.reasons == ("spf fail for HELO mail.example.com",)


def test_spf_result_lists_are_validated():
    from authmilter.config.schema import settings_from_dict
    from authmilter.errors import ConfigError

    with pytest.raises(ConfigError, match="policy.reject_helo_spf"):
        settings_from_dict({"policy": {"reject_helo_spf": ["pass"]}})


def test_spf_rules_at_rcpt_answer_a_temperror_as_end_of_message_would():
    from authmilter.policy import decide_spf

    s = replace(S, reject_spf_fail=True, spf_reject_stage="rcpt")
    d = decide_spf(spf(Result.TEMPERROR), None, s, at_rcpt=True)
    assert d is not None and d.action is Action.TEMPFAIL and d.xcode == "4.7.24"
    assert decide_spf(spf(Result.TEMPERROR), None, replace(s, spf_temperror_tempfail=False), at_rcpt=True) is None
    assert decide_spf(spf(Result.TEMPERROR), None, replace(s, on_dns_error="accept"), at_rcpt=True) is None
    assert decide_spf(spf(Result.PASS), None, s, at_rcpt=True) is None
    assert decide_spf(spf(Result.FAIL), None, s, trusted_forwarder=True, at_rcpt=True) is None
