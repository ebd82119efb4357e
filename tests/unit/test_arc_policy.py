"""Issue 12 without a daemon: the trusted-sealer rule, RFC 9989 evidence, the AAR
renderers, the sealing table and the post-edit message view."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from authmilter import authresults
from authmilter.config.schema import PolicySettings, settings_from_dict
from authmilter.errors import ConfigError
from authmilter.model import Message
from authmilter.outcome import Action, HeaderDelete, HeaderInsert
from authmilter.policy import Evidence, decide, indirect_hints, trusted_sealer
from authmilter.results import (
    ArcResult,
    ArcSealer,
    ArcVerdict,
    DkimResult,
    DmarcPolicy,
    DmarcResult,
    FromResult,
    ResInfo,
    Result,
)
from authmilter.runtime import recipients_needed
from authmilter.sealing import Sealer, edited

FROM = FromResult(ok=True, domain="bank.example", address="news@bank.example")
FAIL = DmarcResult(Result.FAIL, from_domain="bank.example", org_domain="bank.example", policy="reject",
                   published=DmarcPolicy(domain="bank.example", p="reject"))
TRUSTED = frozenset({"list.example"})
S = PolicySettings()


def sealer(i: int, domain: str, *verdicts: tuple[str, str, tuple[tuple[str, str], ...]]) -> ArcSealer:
    return ArcSealer(i, domain, "mx." + domain, tuple(ArcVerdict(m, r, p) for m, r, p in verdicts))


DMARC_PASS = ("dmarc", "pass", (("header.from", "bank.example"),))


def chain(*sealers: ArcSealer, oldest: int = 1, result: Result = Result.PASS) -> ArcResult:
    return ArcResult(result, instances=len(sealers), oldest_pass=oldest, sealers=sealers)


def ev(arc: ArcResult | None = None, **kw: object) -> Evidence:
    return Evidence(from_=FROM, dmarc=kw.pop("dmarc", FAIL), arc=arc, **kw)  # type: ignore[arg-type]


# -- trusted sealers ------------------------------------------------------------------------------

def test_a_trusted_sealer_that_saw_dmarc_pass_vouches():
    s = sealer(1, "list.example", DMARC_PASS)
    assert trusted_sealer(ev(chain(s)), TRUSTED) == (s, "dmarc=pass")
    d = decide(ev(chain(s)), S, trusted_sealers=TRUSTED)
    assert d.action is Action.ACCEPT and d.marker_header is None
    assert d.overrides == (("trusted_forwarder", "arc=pass sealed by list.example"),)
    assert d.dmarc_applied == "none" and "arc=pass sealed by list.example" in d.dmarc_override


def test_a_subdomain_seal_counts_as_the_trusted_domain():
    assert trusted_sealer(ev(chain(sealer(1, "arc.list.example", DMARC_PASS))), TRUSTED) is not None
    assert trusted_sealer(ev(chain(sealer(1, "evillist.example", DMARC_PASS))), TRUSTED) is None


@pytest.mark.parametrize("verdict,vouches", [
    (("dmarc", "fail", (("header.from", "bank.example"),)), False),
    (("dmarc", "pass", (("header.from", "other.example"),)), False),
    (("dkim", "pass", (("header.d", "mail.bank.example"),)), True),     # relaxed alignment
    (("dkim", "pass", (("header.d", "bank.example.evil"),)), False),
    (("dkim", "fail", (("header.d", "bank.example"),)), False),
    (("spf", "pass", (("smtp.mailfrom", "bounce@bank.example"),)), True),
    (("spf", "pass", (("smtp.mailfrom", "bounce@esp.example"),)), False),
    (("arc", "pass", ()), False),
])
def test_what_an_aar_must_say(verdict, vouches):
    assert (trusted_sealer(ev(chain(sealer(1, "list.example", verdict))), TRUSTED) is not None) is vouches


def test_strict_alignment_of_the_domain_applies_to_the_aar_too():
    strict = replace(FAIL, published=DmarcPolicy(domain="bank.example", p="reject", adkim="s"))
    s = sealer(1, "list.example", ("dkim", "pass", (("header.d", "mail.bank.example"),)))
    assert trusted_sealer(ev(chain(s), dmarc=strict), TRUSTED) is None


def test_no_override_without_a_passing_chain_or_trust():
    s = sealer(1, "list.example", DMARC_PASS)
    assert trusted_sealer(ev(chain(s, result=Result.FAIL)), TRUSTED) is None
    assert trusted_sealer(ev(chain(s)), frozenset({"other.example"})) is None
    assert trusted_sealer(ev(None), TRUSTED) is None
    d = decide(ev(chain(s, result=Result.FAIL)), replace(S, on_dmarc_reject="reject"), trusted_sealers=TRUSTED)
    assert d.action is Action.REJECT


def test_a_modifying_untrusted_hop_after_the_trusted_sealer_voids_its_verdict():
    trusted, later = sealer(1, "list.example", DMARC_PASS), sealer(2, "relay.example")
    # i=1's AMS no longer verifies (oldest-pass 2): someone changed the message after it.
    assert trusted_sealer(ev(chain(trusted, later, oldest=2)), TRUSTED) is None
    # ... unless every later sealer is trusted as well, or the message is unchanged.
    assert trusted_sealer(ev(chain(trusted, later, oldest=2)), TRUSTED | {"relay.example"}) is not None
    assert trusted_sealer(ev(chain(trusted, later, oldest=1)), TRUSTED) is not None


def test_a_trusted_sealer_does_not_touch_a_dmarc_pass_or_a_p_none_failure():
    s = sealer(1, "list.example", DMARC_PASS)
    assert decide(ev(chain(s), dmarc=replace(FAIL, result=Result.PASS)), S, trusted_sealers=TRUSTED).overrides == ()
    d = decide(ev(chain(s), dmarc=replace(FAIL, policy="none")), S, trusted_sealers=TRUSTED)
    assert d.action is Action.ACCEPT and d.overrides == () and d.dmarc_applied == ""


# -- RFC 9989 evidence -----------------------------------------------------------------------------

def test_evidence_is_the_default_and_rejects_without_hints():
    assert S.on_dmarc_reject == "evidence"
    d = decide(ev(), S)
    assert d.action is Action.REJECT and d.overrides == ()


@pytest.mark.parametrize("kw,hint", [
    ({"list_headers": ("List-Id",)}, "List-Id header"),
    ({"arc_headers": True}, "ARC header fields"),
    ({"arc": ArcResult(Result.FAIL, instances=2, reason="x")}, "ARC chain (2 sets)"),
    ({"dkim": (DkimResult(Result.FAIL, domain="bank.example"),)}, "failed DKIM signature of bank.example"),
    ({"dkim": (DkimResult(Result.FAIL, domain="news.bank.example"),)}, "failed DKIM signature of news.bank.example"),
])
def test_evidence_quarantines_with_a_hint_and_names_it(kw, hint):
    e = ev(**kw)
    assert hint in indirect_hints(e)
    d = decide(e, S)
    assert d.action is Action.QUARANTINE and d.dmarc_applied == "quarantine"
    assert d.overrides == (("local_policy", f"indirect flow: {hint}"),)
    assert "RFC 9989" in d.dmarc_override
    assert decide(e, replace(S, on_dmarc_reject="reject")).action is Action.REJECT
    marked = decide(e, replace(S, quarantine="header"))
    assert marked.action is Action.ACCEPT and marked.marker_header is not None


def test_other_failures_are_no_hint():
    assert indirect_hints(ev(dkim=(DkimResult(Result.FAIL, domain="esp.example"),
                                   DkimResult(Result.PERMERROR, domain="bank.example")))) == []


def test_evidence_applies_to_p_reject_only():
    d = decide(ev(dmarc=replace(FAIL, policy="quarantine"), list_headers=("List-Id",)), S)
    assert d.action is Action.QUARANTINE and d.overrides == ()


def test_the_ar_names_what_was_applied():
    info = FAIL.resinfo("none", "arc=pass sealed by list.example")
    assert dict(info.props)["policy.dmarc"] == "none" and "list.example" in info.reason
    assert dict(FAIL.resinfo().props)["policy.dmarc"] == "reject"


# -- renderers ------------------------------------------------------------------------------------

RESULTS = (ResInfo("spf", Result.PASS, props=(("smtp.mailfrom", "b@bank.example"),)),
           ResInfo("dmarc", Result.FAIL, reason="no aligned pass", props=(("header.from", "bank.example"),)))


def test_the_aar_carries_our_authentication_results():
    ar = authresults.render("mx.test", RESULTS)
    aar = authresults.render_aar(3, "mx.test", RESULTS)
    assert aar == " i=3;" + ar
    parsed = authresults.parse_authres(aar)
    assert parsed.instance == 3 and parsed.authserv_id == "mx.test" and len(parsed.results) == 2
    with pytest.raises(ValueError):
        authresults.render_aar(51, "mx.test", RESULTS)


def test_a_resubmitted_aar_is_our_earlier_header_after_i():
    earlier = authresults.render("mx.test", RESULTS).encode()
    assert authresults.resubmitted_aar(2, earlier) == " i=2; " + earlier.decode().lstrip()
    assert "\x00" not in authresults.resubmitted_aar(1, b" mx.test; spf=pass\x00\r\n\tdkim=none")


# -- sealing table and configuration ------------------------------------------------------------------

def _tables(tmp_path: Path, sealing: str, key_domain: str = "list.example") -> dict[str, object]:
    tmp_path.chmod(0o700)
    key = tmp_path / "arc.private"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key.chmod(0o600)
    (tmp_path / "KeyTable").write_text(f"arc {key_domain}:arc:{key}\n")
    (tmp_path / "SealingTable").write_text(sealing)
    return {"signing": {"enabled": False, "key_table": f"file:{tmp_path}/KeyTable"},
            "arc": {"sealing_table": f"file:{tmp_path}/SealingTable"}}


def test_the_sealing_table_maps_recipient_domains(tmp_path):
    s = settings_from_dict(_tables(tmp_path, "lists.example arc\n"))
    assert recipients_needed(s)
    sealer_ = Sealer.from_settings(s)
    assert sealer_ is not None
    assert sealer_.choose(["a@other.example", "b@lists.example"]).key.domain == "list.example"  # type: ignore[union-attr]
    assert sealer_.choose(["a@other.example"]).key is None


def test_a_star_entry_seals_whatever_the_recipients(tmp_path):
    sealer_ = Sealer.from_settings(settings_from_dict(_tables(tmp_path, "* arc\n")))
    assert sealer_ is not None and sealer_.choose([]).key is not None


@pytest.mark.parametrize("line,problem", [("* nokey\n", "not in the KeyTable"), ("* %\n", "not in the KeyTable")])
def test_a_sealing_table_naming_no_key_stops_start_up(tmp_path, line, problem):
    with pytest.raises(ConfigError, match=problem):
        Sealer.from_settings(settings_from_dict(_tables(tmp_path, line)))


def test_a_per_domain_key_cannot_seal(tmp_path):
    with pytest.raises(ConfigError, match="depends on the From domain"):
        Sealer.from_settings(settings_from_dict(_tables(tmp_path, "* arc\n", key_domain="%")))


def test_sealing_needs_the_key_table_and_valid_trusted_sealers():
    with pytest.raises(ConfigError, match="arc.sealing_table"):
        settings_from_dict({"arc": {"sealing_table": "file:/nonexistent"}})
    with pytest.raises(ConfigError, match="arc.trusted_sealers"):
        settings_from_dict({"arc": {"trusted_sealers": ["not a domain"]}})
    assert not recipients_needed(settings_from_dict({}))


def test_ams_headers_are_counted_never_oversigned(tmp_path):
    sealer_ = Sealer.from_settings(settings_from_dict(_tables(tmp_path, "* arc\n")))
    assert sealer_ is not None
    headers = ((b"DKIM-Signature", b" a"), (b"From", b" x"), (b"DKIM-Signature", b" b"), (b"Subject", b" s"))
    h = [x.lower() for x in sealer_.ams_headers(headers)]
    assert h.count("dkim-signature") == 2 and h.count("from") == 1 and "to" not in h


def test_the_edited_view_is_what_the_mta_stores():
    msg = Message.from_bytes(b"Authentication-Results: mx.test; x\r\nFrom: a@b.example\r\n"
                             b"Authentication-Results: other; y\r\n\r\nbody\r\n")
    view = edited(msg, (HeaderDelete("Authentication-Results", 1),),
                  (HeaderInsert("DKIM-Signature", " ours"), HeaderInsert("Authentication-Results", " mx.test; z")))
    assert [(n, v) for n, v in view.headers] == [
        (b"Authentication-Results", b" mx.test; z"), (b"DKIM-Signature", b" ours"), (b"From", b" a@b.example"),
        (b"Authentication-Results", b" other; y")]
