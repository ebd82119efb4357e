"""The report as a file and as a message (RFC 9990 §3).

File name: ``receiver "!" policy-domain "!" begin "!" end "!" unique-id ".xml.gz"``.
Message: From our report address, Subject ``Report Domain: D Submitter: R
Report-ID: <ID>``, a short text part and the gzip file as ``application/gzip``.
The gzip header carries no time stamp and no name, so the same XML always compresses
to the same bytes (a retried delivery is identical to the first attempt).
"""
from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid


def file_name(receiver: str, policy_domain: str, begin: int, end: int, report_id: str) -> str:
    return f"{receiver}!{policy_domain}!{begin}!{end}!{report_id}.xml.gz"


def compress(xml: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as fh:
        fh.write(xml)
    return buf.getvalue()


def build_message(*, from_address: str, to_address: str, receiver: str, policy_domain: str, report_id: str,
                  begin: int, end: int, name: str, payload: bytes, org_name: str, now: float) -> bytes:
    """The report mail, CRLF line ends, unsigned."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = from_address
    msg["To"] = to_address
    msg["Subject"] = f"Report Domain: {policy_domain} Submitter: {receiver} Report-ID: <{report_id}>"
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid(idstring=report_id, domain=from_address.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"
    span = (f"{datetime.fromtimestamp(begin, UTC):%Y-%m-%d %H:%M:%S} to "
            f"{datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M:%S} UTC")
    msg.set_content(f"This is a DMARC aggregate report (RFC 9990) from {org_name} for {policy_domain}, "
                    f"{span}.\nReport-ID: {report_id}\n")
    msg.add_attachment(payload, maintype="application", subtype="gzip", filename=name)
    return msg.as_bytes()
