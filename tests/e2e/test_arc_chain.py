"""Two authmilters chained through two real Postfix instances (issue 12, tests).

A p=reject author (author.test) sends a signed message to a mailing list host
(lists.list.test: Postfix + authmilter, seal_resubmitted on). Its inbound pass records
spf/dkim/dmarc=pass. The "list software" (this test) adds a footer and List-Id and
re-injects the message with sendmail(1) for u@final.test: authmilter DKIM-signs it for
list.test, then seals ARC i=1 with the inbound Authentication-Results as AAR, and the list
Postfix relays it to the final MX (mx.final.test: Postfix + authmilter). There the
author's signature fails (the footer), DMARC fails, ARC passes, and:

* list.test is a trusted sealer: delivered, dmarc=fail with policy.dmarc=none;
* no trust, on_dmarc_reject = "evidence" (default): held (quarantine);
* no trust, on_dmarc_reject = "reject": refused with 550 5.7.1 at the final MX.

Own knot, Postfixes and authmilters (chain.py; the session's e2e world is left alone).
SRS through the same hosts and the bounce path: test_srs_chain.py.
"""
from __future__ import annotations

import uuid

import dkim
import pytest

from .chain import FINAL_ID, LIST_ID, chain_world, final_results, through_the_list  # noqa: F401 (the fixture)
from .harness import header_values, wait_for

pytestmark = pytest.mark.e2e


def test_a_trusted_list_host_gets_a_forwarded_p_reject_message_delivered(chain):
    c = chain
    token = uuid.uuid4().hex[:20]
    through_the_list(c, token)
    delivered = c.final.wait_delivered(token)
    res = final_results(delivered)
    dkim_by = {r.prop("header.d"): r.result for r in res["dkim"]}
    assert dkim_by == {"author.test": "fail", "list.test": "pass"}, res["dkim"]
    (dmarc,) = res["dmarc"]
    assert dmarc.result == "fail" and dmarc.prop("policy.dmarc") == "none"
    assert "arc=pass sealed by list.test" in dmarc.reason
    assert [r.result for r in res["arc"]] == ["pass"]
    # The set the list host added: i=1, cv=none, its AAR is its inbound verdict, and
    # dkimpy agrees the chain holds.
    (seal,) = header_values(delivered, "ARC-Seal")
    assert "i=1" in seal and "cv=none" in seal and "d=list.test" in seal
    (aar,) = header_values(delivered, "ARC-Authentication-Results")
    assert aar.startswith(f"i=1; {LIST_ID};") and "dmarc=pass" in aar
    cv, _, reason = dkim.arc_verify(delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
                                    dnsfunc=c.knot.dkim_dnsfunc())
    assert cv == b"pass", reason
    assert "override=\"trusted_forwarder:arc=pass sealed by list.test\"" in c.final_milter.log_tail()


def test_without_trust_evidence_holds_it_and_reject_refuses_it(chain):
    c = chain
    c.final_milter.reload({"arc": {"trusted_sealers": []}})
    try:
        token = uuid.uuid4().hex[:20]
        through_the_list(c, token)
        held = wait_for(lambda: [m for m in c.final.queue() if m.get("queue_name") == "hold"], "a held message")
        assert held and not c.final.deliveries(token)
        assert "override=\"local_policy:indirect flow: ARC chain (1 set), List-Id header" in c.final_milter.log_tail()
        for m in held:
            c.final.delete(m["queue_id"])

        c.final_milter.reload({"arc": {"trusted_sealers": []}, "policy": {"on_dmarc_reject": "reject"}})
        token = uuid.uuid4().hex[:20]
        through_the_list(c, token)
        wait_for(lambda: "550 5.7.1" in c.lists.log_text() and "author.test" in c.lists.log_text(),
                 "the final MX's 550 in the list host's log")
        assert not c.final.deliveries(token)
    finally:
        c.final_milter.reload()
