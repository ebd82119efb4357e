"""Report rows and the XML document (RFC 9990 §2.1, Appendix A; RFC 7489 Appendix C),
read back by parsedmarc, the parser most report receivers use, as an independent oracle."""
from __future__ import annotations

import gzip
import logging

import pytest

from authmilter.records import DkimEvidence, MessageRecord
from authmilter.reports import mail, xmlreport
from authmilter.reports.aggregate import Aggregate, report_id, window_of
from authmilter.reports.destinations import parse_rua
from authmilter.results import DmarcPolicy

parsedmarc = pytest.importorskip("parsedmarc")

POLICY = DmarcPolicy(domain="example.org", p="reject", sp="quarantine", np="reject", discovery="treewalk",
                     rua=("mailto:dmarc@example.org",), fo="1")


def record(ip: str, result: str = "pass", *, t: float = 1_000.0, overrides: tuple = ()) -> MessageRecord:
    ok = result == "pass"
    return MessageRecord(
        time=t, reporter="mx.test", source_ip=ip, helo="mail.example.org", envelope_from="b@example.org",
        envelope_from_domain="example.org", header_from="example.org", spf_result="pass" if ok else "fail",
        spf_domain="example.org", spf_scope="mfrom", dkim=(DkimEvidence("example.org", "s1", result),),
        dmarc_result=result, dkim_aligned=ok, spf_aligned=ok, policy=POLICY,
        disposition="none" if ok else "reject", overrides=overrides)


def parse(xml: bytes, caplog: pytest.LogCaptureFixture) -> dict:
    with caplog.at_level(logging.WARNING, logger="parsedmarc"):
        report = parsedmarc.parse_aggregate_report_xml(xml, offline=True)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("parsedmarc")] == []
    return report


def aggregate(records: list[MessageRecord]) -> Aggregate:
    agg = Aggregate("example.org", 0, 86400)
    for r in records:
        agg.add(r)
    return agg


META = xmlreport.Metadata(org_name="mx.test", email="dmarc-reports@mx.test", report_id="0abc",
                          generator="authmilter test")


def test_rows_group_by_source_ip_results_and_disposition_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    recs = [record("192.0.2.1")] * 3 + [record("192.0.2.2")] * 2 + [record("198.51.100.7", "fail")] * 4
    agg = aggregate(recs)
    assert len(agg.rows) == 3 and agg.messages == 9 and agg.passed == 5
    report = parse(xmlreport.render(agg, META), caplog)
    assert report["xml_namespace"] == xmlreport.NAMESPACE
    counts = {(r["source"]["ip_address"], r["policy_evaluated"]["dkim"], r["policy_evaluated"]["disposition"]):
              r["count"] for r in report["records"]}
    assert counts == {("192.0.2.1", "pass", "none"): 3, ("192.0.2.2", "pass", "none"): 2,
                      ("198.51.100.7", "fail", "reject"): 4}
    pp = report["policy_published"]
    assert (pp["domain"], pp["p"], pp["sp"], pp["np"], pp["testing"], pp["discovery_method"]) == \
        ("example.org", "reject", "quarantine", "reject", "n", "treewalk")
    assert report["report_metadata"]["generator"] == "authmilter test"


def test_override_reasons_use_rfc9990_types_and_others_become_other(caplog: pytest.LogCaptureFixture) -> None:
    agg = aggregate([record("192.0.2.9", "fail", overrides=(("trusted_forwarder", "client in list"),
                                                             ("sampled_out", "pct")))])
    report = parse(xmlreport.render(agg, META), caplog)
    reasons = report["records"][0]["policy_evaluated"]["policy_override_reasons"]
    assert [(r["type"], r["comment"]) for r in reasons] == [("trusted_forwarder", "client in list"),
                                                           ("other", "sampled_out: pct")]


def test_rfc7489_format_has_no_namespace_and_the_fields_it_requires(caplog: pytest.LogCaptureFixture) -> None:
    agg = aggregate([record("192.0.2.1")])
    xml = xmlreport.render(agg, META, rfc7489=True)
    assert b"xmlns" not in xml and b"<discovery_method>" not in xml and b"<generator>" not in xml
    report = parse(xml, caplog)
    assert report["policy_published"]["pct"] == "100" and report["records"][0]["count"] == 1


def test_remote_text_cannot_break_the_document(caplog: pytest.LogCaptureFixture) -> None:
    bad = MessageRecord(time=1.0, source_ip="192.0.2.1", header_from="example.org",
                        envelope_from_domain="x</envelope_from><evil/>\x01", dmarc_result="pass", policy=POLICY,
                        dkim=(DkimEvidence("example.org", "s<1>&", "pass"),), spf_domain="example.org",
                        spf_result="pass", spf_scope="mfrom")
    report = parse(xmlreport.render(aggregate([bad]), META), caplog)
    assert report["records"][0]["identifiers"]["envelope_from"] == "x</envelope_from><evil/>"
    assert report["records"][0]["auth_results"]["dkim"][0]["selector"] == "s<1>&"


def test_report_ids_are_stable_and_fit_the_file_name_grammar() -> None:
    a = report_id("mx.test", "example.org", 86400, 172800)
    assert a == report_id("mx.test", "example.org", 86400, 172800)
    assert a != report_id("mx.test", "example.org", 86400, 100000) and a.isalnum()
    assert mail.file_name("mx.test", "example.org", 86400, 172800, a) == f"mx.test!example.org!86400!172800!{a}.xml.gz"


def test_windows_align_to_the_interval_and_respect_floor_and_cut() -> None:
    assert window_of(90_000.0, 86400, 0, 10**9) == (86400, 172800)
    assert window_of(90_000.0, 86400, 88_000, 10**9) == (88_000, 172800)    # after a partial report
    assert window_of(90_000.0, 86400, 0, 95_000) == (86400, 95_000)          # --until inside the window


def test_gzip_is_deterministic_and_the_mail_carries_it() -> None:
    xml = xmlreport.render(aggregate([record("192.0.2.1")]), META)
    gz = mail.compress(xml)
    assert gz == mail.compress(xml) and gzip.decompress(gz) == xml
    raw = mail.build_message(from_address="dmarc-reports@mx.test", to_address="dmarc@example.org",
                             receiver="mx.test", policy_domain="example.org", report_id="0abc", begin=0, end=86400,
                             name="mx.test!example.org!0!86400!0abc.xml.gz", payload=gz, org_name="mx.test", now=0)
    assert b"Subject: Report Domain: example.org Submitter: mx.test Report-ID: <0abc>" in raw
    report = parsedmarc.parse_report_email(raw, offline=True)
    assert report["report_type"] == "aggregate"
    assert report["report"]["records"][0]["count"] == 1


def test_rua_parsing_keeps_mailto_with_size_limits_and_says_why_others_go() -> None:
    dests, notes = parse_rua(("mailto:a@Example.ORG!10m", "https://x.example/", "mailto:nope", "mailto:a@example.org"))
    assert [(d.address, d.max_bytes) for d in dests] == [("a@example.org", 10 << 20)]
    assert len(notes) == 2


def test_the_reports_package_stays_off_the_milter_and_its_pure_modules_off_the_store() -> None:
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[2] / "src" / "authmilter" / "reports"
    for path in pkg.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names.add(("." * node.level) + (node.module or ""))
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        assert not any("milter" in n.split(".")[-1] or n.startswith("..milter") for n in names), (path.name, names)
        if path.name != "command.py":
            assert not any("store" in n for n in names), (path.name, names)


# -- failure reports (RFC 9991) ---------------------------------------------------------------------------------------


def test_fo_options_select_the_failures_a_domain_asked_for() -> None:
    from dataclasses import replace as r

    from authmilter.reports.failure import wanted

    ruf = r(POLICY, ruf=("mailto:ruf@example.org",))
    fail, passed = record("203.0.113.1", "fail"), record("192.0.2.1")
    assert wanted(r(fail, policy=r(ruf, fo="0"))) and not wanted(r(passed, policy=r(ruf, fo="0")))
    half = r(passed, spf_aligned=False)
    assert wanted(r(half, policy=r(ruf, fo="1"))) and not wanted(r(half, policy=r(ruf, fo="0")))
    assert wanted(r(fail, policy=r(ruf, fo="d"))) and wanted(r(fail, policy=r(ruf, fo="s")))
    assert not wanted(fail)                                    # no ruf=: never


def test_samples_keep_headers_only_with_local_parts_hashed() -> None:
    from authmilter.reports.failure import sample

    text = sample([(b"From", b" Alice <alice.smith@example.org>"), (b"To", b" bob@mx.test"),
                   (b"Received", b" from x by mx.test for <bob@mx.test>;\r\n\tMon, 1 Jan 2026")])
    assert "alice" not in text and "bob@" not in text
    assert text.count("@example.org") == 1 and "redacted-" in text and "\r\n\tMon" in text


def test_failure_report_mail_is_read_by_parsedmarc_as_a_failure_report() -> None:
    from dataclasses import replace as r

    from authmilter.reports.failure import build_message, sample

    rec = r(record("203.0.113.1", "fail"), sample=sample([(b"From", b" a@example.org"), (b"Subject", b" hi")]),
            queue_id="Q1")
    raw = build_message(rec, from_address="dmarc-reports@mx.test", to_address="ruf@example.org",
                        org_name="mx.test", user_agent="authmilter/test", now=2000.0)
    parsed = parsedmarc.parse_report_email(raw, offline=True)
    assert parsed["report_type"] == "failure"
    report = parsed["report"]
    assert report["feedback_type"] == "auth-failure" and report["source"]["ip_address"] == "203.0.113.1"
    assert report["reported_domain"] == "example.org" and report["auth_failure"] == ["dmarc"]
