"""DMARC failure reports (RFC 9991): which failures a domain asked for, the redacted
sample kept for them, and the report message (RFC 6591 auth-failure, RFC 5965 ARF).

Privacy by construction: only the header section is kept (never the body), every
mailbox local part in it is replaced by a hash (RFC 6590 redaction), and the sample
is deleted from the store once the report is sent, refused or dropped by the rate
limit. The switch (``[reports] failure_reports``) is off by default; a domain gets a
report only when its record names ``ruf=`` and its ``fo=`` options select the failure.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from ..records import MessageRecord

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_ADDRESS = re.compile(rf'({_LOCAL}|"[^"\r\n]*")@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)')


def wanted(record: MessageRecord) -> bool:
    """Whether the policy's ``fo=`` asks for a report on this result (RFC 9991 §3.2 / RFC 9989 fo):
    0 (default) when DMARC failed (no aligned pass at all), 1 when any mechanism failed
    to give an aligned pass, d when a DKIM signature failed, s when SPF failed."""
    if not record.policy.ruf:
        return False
    options = {o.strip() for o in record.policy.fo.split(":") if o.strip()} or {"0"}
    if "0" in options and record.dmarc_result == "fail":
        return True
    if "1" in options and not (record.dkim_aligned and record.spf_aligned):
        return True
    if "d" in options and any(d.result == "fail" for d in record.dkim):
        return True
    return "s" in options and record.spf_result == "fail"


def redact(text: str) -> str:
    """Every ``local@domain`` becomes ``<hash>@domain`` (RFC 6590 §4: a one-way hash keeps
    reports correlatable without naming the mailbox)."""
    def hashed(m: re.Match[str]) -> str:
        digest = hashlib.sha256(m.group(1).lower().encode("utf-8", "replace")).hexdigest()[:16]
        return f"redacted-{digest}@{m.group(2)}"
    return _ADDRESS.sub(hashed, text)


def sample(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> str:
    """The header section as received, redacted, CRLF line ends (no body)."""
    lines = []
    for name, value in headers:
        text = (name + b":" + value).decode("utf-8", "replace").replace("\r\n", "\n").replace("\n", "\r\n")
        lines.append(redact(text.rstrip("\r\n")))
    return "\r\n".join(lines) + "\r\n"


def with_samples(records: tuple[MessageRecord, ...], headers: list[tuple[bytes, bytes]] |
                 tuple[tuple[bytes, bytes], ...]) -> tuple[MessageRecord, ...]:
    """*records*, each that a failure report was asked for carrying the redacted sample."""
    return tuple(replace(r, sample=sample(headers)) if wanted(r) else r for r in records)


def build_message(record: MessageRecord, *, from_address: str, to_address: str, org_name: str,
                  user_agent: str, now: float) -> bytes:
    """The failure report for one message: multipart/report; report-type=feedback-report
    with a text part, the ``message/feedback-report`` fields of RFC 6591 §3.1 and
    RFC 9991 §3.3, and the redacted header section as ``text/rfc822-headers``."""
    domain = record.policy.domain or record.header_from
    aligned = [m for m, ok in (("dkim", record.dkim_aligned), ("spf", record.spf_aligned)) if ok]
    fields = [
        ("Feedback-Type", "auth-failure"),
        ("User-Agent", user_agent),
        ("Version", "1"),
        ("Original-Envelope-Id", record.queue_id or "unknown"),
        ("Original-Mail-From", redact(f"<{record.envelope_from}>")),
        ("Arrival-Date", format_datetime(datetime.fromtimestamp(record.time, UTC))),
        ("Reporting-MTA", f"dns; {record.reporter or 'unknown'}"),
        ("Source-IP", record.source_ip or "unknown"),
        ("Reported-Domain", domain),
        ("Auth-Failure", "dmarc"),
        ("Authentication-Results", f"{record.reporter or 'unknown'}; dmarc={record.dmarc_result} "
                                   f"header.from={record.header_from}"),
        ("Identity-Alignment", ", ".join(aligned) or "none"),
        ("Delivery-Result", {"reject": "reject", "quarantine": "spam"}.get(record.disposition, "delivered")),
    ]
    for d in record.dkim:
        if d.result != "pass" and d.domain:
            fields += [("DKIM-Domain", d.domain), ("DKIM-Selector", d.selector)]
            break
    body = "".join(f"{k}: {v}\r\n" for k, v in fields)

    msg = EmailMessage(policy=SMTP)
    msg["From"] = from_address
    msg["To"] = to_address
    msg["Subject"] = f"DMARC failure report for {domain} from {record.source_ip or 'unknown'}"
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid(domain=from_address.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"
    msg.make_mixed()
    msg.set_type("multipart/report")
    msg.set_param("report-type", "feedback-report")
    text = EmailMessage(policy=SMTP)
    text.set_content(f"A message claiming to be from {record.header_from} failed DMARC authentication at "
                     f"{org_name}.\nThis is a failure report (RFC 9991); addresses are redacted.\n")
    msg.attach(text)
    report = EmailMessage(policy=SMTP)
    report.set_payload(body, charset=None)
    report["Content-Type"] = "message/feedback-report"
    report["Content-Transfer-Encoding"] = "7bit"
    msg.attach(report)
    headers = EmailMessage(policy=SMTP)
    headers.set_payload(record.sample or "\r\n", charset=None)
    headers["Content-Type"] = "text/rfc822-headers"
    headers["Content-Transfer-Encoding"] = "8bit"
    msg.attach(headers)
    return msg.as_bytes()
