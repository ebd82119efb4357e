"""``authmilter reports send|show -c FILE``: build, verify, sign and mail aggregate reports.

``send`` (run daily by examples/systemd/authmilter-reports.timer, on any number of MX
hosts: the database lock lets exactly one run work at a time):

1. purge report bookkeeping older than ``retention_days`` and records older than
   ``[store] keep_records_days``;
2. for every policy domain, the windows after the last one already handled and closed
   (ending ``settle_s`` ago; ``--until now`` closes the current window early): group its
   records (`aggregate`), write the XML, gzip it and keep it with one pending delivery per
   ``rua`` address — in one transaction, under a stable report id;
3. deliver what is pending: skip suppressed destinations, verify external ones (RFC 9990
   §4), enforce the size and per-run limits, DKIM-sign with our own Signer when the
   SigningTable has a key for ``from_address``, and hand the mail to sendmail(1) or the
   SMTP ``relay``. A delivery that failed stays pending; ``max_failures`` failures in a
   row suppress the destination (listed by ``show``).

``--dry-run --outdir DIR`` does steps 2 and 3 without writing anything to the database:
each report's ``.xml.gz`` and the ``.eml`` it would send go to DIR.
"""
from __future__ import annotations

import argparse
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from ..config.schema import ReportsSettings, Settings, load_settings
from ..errors import AuthmilterError
from ..model import Message
from ..resolver import DnsLookup
from ..store.base import StoreError
from ..store.reportdb import ReportDb, open_reportdb
from . import failure, mail, xmlreport
from .aggregate import Aggregate, report_id, window_of
from .destinations import Destination, Verdict, parse_rua, verify

EX_TEMPFAIL = 75
Say = Callable[[str], None]


def _say(text: str) -> None:
    print(text, flush=True)


def parse_until(text: str, now: float) -> float:
    """``now``, seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    if text == "now":
        return now
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise AuthmilterError(f"--until: expected now, seconds since the epoch or an ISO 8601 time; got {text!r}") \
            from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class Reporter:
    """One run: settings, database, resolver and signer; `build` then `deliver`."""

    def __init__(self, settings: Settings, db: ReportDb | None, resolver: DnsLookup, signer: object | None,
                 say: Say = _say, now: float | None = None) -> None:
        self.settings = settings
        self.r: ReportsSettings = settings.reports
        self.db = db
        self.resolver = resolver
        self.signer = signer
        self.say = say
        self.now = time.time() if now is None else now
        self.sender_domain = self.r.from_address.rpartition("@")[2].lower()
        self.org_name = self.r.org_name or settings.authserv_id or self.sender_domain
        self.unsigned_noted = False

    # -- building ----------------------------------------------------------------------------------
    def cut(self, until: float | None) -> float:
        if until is not None:
            # Whole seconds: report windows are whole seconds (RFC 9990 date_range).
            return float(int(min(until, self.now)))
        closed = self.now - self.r.settle_s
        return float(int(closed // self.r.interval_s) * self.r.interval_s)

    def aggregates(self, db: ReportDb, cut: float) -> list[Aggregate]:
        """The windows ready to report: after each domain's last handled window, before *cut*."""
        done = db.reported_until()
        oldest = self.now - self.r.retention_days * 86400.0
        last = db.last_end()
        if last is not None:
            # Everything before the last window handled was read by an earlier run; one
            # interval of margin still lets a domain's late records reach its next window.
            oldest = max(oldest, last - self.r.interval_s)
        groups: dict[tuple[str, int, int], Aggregate] = {}
        for rec in db.records(oldest, cut):
            domain = rec.policy.domain or rec.header_from
            floor = done.get(domain, 0)
            if rec.time < floor:
                continue
            begin, end = window_of(rec.time, self.r.interval_s, floor, cut)
            key = (domain, begin, end)
            agg = groups.get(key)
            if agg is None:
                agg = groups[key] = Aggregate(domain, begin, end)
            agg.add(rec)
        return [groups[k] for k in sorted(groups)]

    def names(self, agg: Aggregate) -> tuple[str, str]:
        """(report id, file name) for one window."""
        rid = report_id(f"{self.org_name}|{self.sender_domain}", agg.policy_domain, agg.begin, agg.end)
        return rid, mail.file_name(self.sender_domain, agg.policy_domain, agg.begin, agg.end, rid)

    def render(self, agg: Aggregate) -> tuple[str, str, bytes]:
        """(report id, file name, gzip) for one window."""
        rid, name = self.names(agg)
        meta = xmlreport.Metadata(org_name=self.org_name, email=self.r.email or self.r.from_address,
                                  report_id=rid, extra_contact=self.r.extra_contact,
                                  generator=f"authmilter {__version__}")
        return rid, name, mail.compress(xmlreport.render(agg, meta, rfc7489=self.r.rfc7489))

    def skip_reason(self, agg: Aggregate, dests: list[Destination]) -> str:
        if not dests:
            return "the policy names no usable rua= address"
        if agg.passed == 0 and not self.r.report_all_domains:
            # Domains seen only in spam that publish rua= to harvest reports get none
            # (reports.report_all_domains turns this off).
            return f"none of its {agg.messages} message(s) passed DMARC"
        return ""

    def build(self, cut: float, outdir: Path | None = None) -> int:
        """Build every ready report; with *outdir* (dry run) write files instead of rows."""
        assert self.db is not None
        built = 0
        for agg in self.aggregates(self.db, cut):
            dests, notes = parse_rua(agg.policy.rua)
            where = f"{agg.policy_domain} {agg.begin}-{agg.end}"
            for note in notes:
                self.say(f"report {where}: rua {note}")
            why = self.skip_reason(agg, dests)
            if why:
                rid, name = self.names(agg)
                self.say(f"report {where}: not reported: {why}")
                if outdir is None:
                    self.db.add_report(rid, agg.policy_domain, agg.begin, agg.end, agg.messages, agg.policy.rua,
                                       name, "skipped", b"", [])
                continue
            built += 1
            rid, name, payload = self.render(agg)
            if outdir is not None:
                (outdir / name).write_bytes(payload)
                self.say(f"report {rid} {where}: {agg.messages} message(s) in {len(agg.rows)} row(s): "
                         f"wrote {outdir / name}")
                for dest in dests:
                    raw, problem = self.message(agg.policy_domain, rid, agg.begin, agg.end, name, payload, dest)
                    if problem:
                        self.say(f"report {rid} to {dest.address}: not sent: {problem}")
                        continue
                    eml = outdir / f"{name.removesuffix('.xml.gz')}!{dest.address}.eml"
                    eml.write_bytes(raw)
                    self.say(f"report {rid} to {dest.address}: wrote {eml}")
                continue
            if self.db.add_report(rid, agg.policy_domain, agg.begin, agg.end, agg.messages, agg.policy.rua, name,
                                  "open", payload, [(d.uri, "pending", "") for d in dests]):
                self.say(f"report {rid} {where}: {agg.messages} message(s) in {len(agg.rows)} row(s)")
        return built

    # -- delivering ----------------------------------------------------------------------------------
    def message(self, domain: str, rid: str, begin: int, end: int, name: str, payload: bytes,
                dest: Destination) -> tuple[bytes, str]:
        """(signed mail, "") or (b"", why it must not be sent)."""
        verdict, why = verify(domain, dest, self.resolver)
        if verdict is not Verdict.OK:
            return b"", why
        raw = mail.build_message(from_address=self.r.from_address, to_address=dest.address,
                                 receiver=self.sender_domain, policy_domain=domain, report_id=rid, begin=begin,
                                 end=end, name=name, payload=payload, org_name=self.org_name, now=self.now)
        raw = self.sign(raw)
        limit = min(x for x in (self.r.max_report_bytes, dest.max_bytes) if x)
        if len(raw) > limit:
            return b"", f"report mail of {len(raw)} bytes exceeds the limit of {limit} bytes"
        return raw, ""

    def sign(self, raw: bytes) -> bytes:
        from ..signing import Signer

        signer = self.signer
        if not isinstance(signer, Signer):
            return raw
        choice = signer.choose(self.r.from_address)
        if not choice.keys:
            if not self.unsigned_noted:
                self.unsigned_noted = True
                self.say(f"reports from {self.r.from_address} are sent unsigned: the SigningTable has no usable key "
                         "for that address")
            return raw
        edits = signer.sign(Message.from_bytes(raw), choice, timestamp=int(self.now))
        head = b"".join(b"%s:%s\r\n" % (e.name.encode(), e.value.encode()) for e in edits)
        return head + raw

    def send(self, raw: bytes, rcpt: str) -> str:
        """"" when handed over, else the error."""
        r = self.r
        try:
            if r.relay:
                host, _, port = r.relay.rpartition(":")
                with smtplib.SMTP(host.strip("[]"), int(port), timeout=r.timeout_s) as smtp:
                    smtp.sendmail(r.from_address, [rcpt], raw)
                return ""
            proc = subprocess.run([r.sendmail, "-oi", "-f", r.from_address, "--", rcpt], input=raw,
                                  capture_output=True, timeout=r.timeout_s, check=False)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip().splitlines()
                return f"{r.sendmail} exited {proc.returncode}" + (f": {err[-1]}" if err else "")
            return ""
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return f"relay refused {rcpt}: {code} {text.decode(errors='replace')}"
        except smtplib.SMTPResponseException as exc:
            said: bytes | str = exc.smtp_error
            return f"relay said {exc.smtp_code} {said.decode(errors='replace') if isinstance(said, bytes) else said}"
        except (smtplib.SMTPException, OSError, subprocess.TimeoutExpired) as exc:
            return f"{type(exc).__name__}: {exc}"

    def deliver(self) -> tuple[int, int]:
        """Work through pending deliveries; (sent, failed)."""
        assert self.db is not None
        db, r = self.db, self.r
        sent = failed = 0
        per_dest: dict[str, int] = {}
        for p in db.pending():
            dests, _ = parse_rua((p.destination,))
            label = f"report {p.report_id} ({p.policy_domain}) to {p.destination}"
            if not dests:
                db.set_delivery(p.report_id, p.destination, "refused", "not a usable mailto: URI", False)
                continue
            dest = dests[0]
            reason = db.suppressed(dest.address)
            if reason is not None:
                db.set_delivery(p.report_id, p.destination, "suppressed", f"destination suppressed: {reason}", False)
                self.say(f"{label}: not sent: destination suppressed ({reason})")
                continue
            if per_dest.get(dest.address, 0) >= r.max_reports_per_destination:
                self.say(f"{label}: deferred: {r.max_reports_per_destination} report(s) per run to one destination")
                continue
            verdict, why = verify(p.policy_domain, dest, self.resolver)
            if verdict is Verdict.REFUSED:
                db.set_delivery(p.report_id, p.destination, "refused", why, False)
                self.say(f"{label}: not sent: {why}")
                continue
            if verdict is Verdict.TEMPERROR:
                db.set_delivery(p.report_id, p.destination, "pending", why, False)
                self.say(f"{label}: deferred: {why}")
                continue
            raw, problem = self.message(p.policy_domain, p.report_id, p.begin, p.end, p.file_name, p.payload, dest)
            if problem:
                db.set_delivery(p.report_id, p.destination, "refused", problem, False)
                self.say(f"{label}: not sent: {problem}")
                continue
            per_dest[dest.address] = per_dest.get(dest.address, 0) + 1
            error = self.send(raw, dest.address)
            if not error:
                db.set_delivery(p.report_id, p.destination, "sent", "", True)
                db.destination_result(dest.address, True, "", r.max_failures)
                sent += 1
                self.say(f"{label}: sent ({len(raw)} bytes)")
                continue
            failed += 1
            if db.destination_result(dest.address, False, error, r.max_failures):
                db.set_delivery(p.report_id, p.destination, "suppressed", error, True)
                self.say(f"{label}: failed: {error}; destination suppressed after {r.max_failures} failure(s)")
            else:
                db.set_delivery(p.report_id, p.destination, "pending", error, True)
                self.say(f"{label}: failed (will retry): {error}")
        return sent, failed

    # -- failure reports (RFC 9991) ------------------------------------------------------------------
    def failures(self, outdir: Path | None = None) -> tuple[int, int]:
        """Send (or with *outdir* write) the failure reports waiting in the store; (sent, dropped).

        Best effort by design (RFC 9991 §3): a report that cannot be sent now is dropped
        with its sample, except while DNS cannot tell whether a destination is allowed.
        """
        assert self.db is not None
        db, r = self.db, self.r
        sent = dropped = 0
        for record_id, rec in db.failure_samples():
            domain = rec.policy.domain or rec.header_from
            dests, notes = parse_rua(rec.policy.ruf)
            for note in notes:
                self.say(f"failure report {domain}: ruf {note}")
            keep = False
            for dest in dests:
                label = f"failure report {domain} ({rec.queue_id or record_id}) to {dest.address}"
                verdict, why = verify(domain, dest, self.resolver)
                if verdict is Verdict.TEMPERROR and self.now - rec.time < 86400:
                    keep = True
                    self.say(f"{label}: deferred: {why}")
                    continue
                if verdict is not Verdict.OK:
                    dropped += 1
                    self.say(f"{label}: not sent: {why}")
                    continue
                reason = db.suppressed(dest.address)
                if reason is not None:
                    dropped += 1
                    self.say(f"{label}: not sent: destination suppressed ({reason})")
                    continue
                if db.failures_sent(dest.address, self.now - 3600.0) >= r.failure_max_per_hour:
                    dropped += 1
                    self.say(f"{label}: dropped: {r.failure_max_per_hour} failure report(s) per hour to one "
                             "destination")
                    continue
                raw = self.sign(failure.build_message(rec, from_address=r.from_address, to_address=dest.address,
                                                      org_name=self.org_name, user_agent=f"authmilter/{__version__}",
                                                      now=self.now))
                if outdir is not None:
                    eml = outdir / f"failure!{domain}!{record_id}!{dest.address}.eml"
                    eml.write_bytes(raw)
                    self.say(f"{label}: wrote {eml}")
                    continue
                error = self.send(raw, dest.address)
                if error:
                    dropped += 1
                    db.destination_result(dest.address, False, error, r.max_failures)
                    self.say(f"{label}: failed, dropped: {error}")
                    continue
                db.failure_sent(dest.address)
                db.destination_result(dest.address, True, "", r.max_failures)
                sent += 1
                self.say(f"{label}: sent")
            if outdir is None and not keep:
                db.clear_sample(record_id)
        return sent, dropped

    def purge(self) -> None:
        assert self.db is not None
        gone = self.db.purge_reports(self.now - self.r.retention_days * 86400.0)
        if self.settings.store.keep_records_days > 0:
            gone += self.db.purge_records(self.now - self.settings.store.keep_records_days * 86400.0)
        if gone:
            self.say(f"purged {gone} old row(s)")


def _signer(settings: Settings) -> object | None:
    if not (settings.signing.enabled and settings.signing.key_table):
        return None
    from ..signing import Signer

    return Signer.from_settings(settings.signing, source=settings.source)


def cmd_reports(args: argparse.Namespace) -> int:
    from ..runtime import resolver_for

    try:
        settings = load_settings(args.config)
        if args.action == "show":
            return _show(settings, args)
        if not settings.reports.enabled:
            print(f"authmilter: reports are off: set [reports] enabled = true in {settings.source}", file=sys.stderr)
            return 1
        outdir = Path(args.outdir) if args.outdir else None
        if args.dry_run and outdir is None:
            print("authmilter: --dry-run needs --outdir DIR", file=sys.stderr)
            return 2
        if outdir is not None and not args.dry_run:
            print("authmilter: --outdir is only used with --dry-run", file=sys.stderr)
            return 2
        if outdir is not None:
            outdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        until = parse_until(args.until, now) if args.until else None
        db = open_reportdb(settings.store.url, settings.reports.timeout_s)
        try:
            holder = db.lock()
            if holder:
                print(f"authmilter: reports: nothing done: {holder} holds the lock", file=sys.stderr)
                return EX_TEMPFAIL
            rep = Reporter(settings, db, resolver_for(settings.dns), _signer(settings), now=now)
            if outdir is not None:
                built = rep.build(rep.cut(until), outdir)
                if settings.reports.failure_reports:
                    rep.failures(outdir)
                print(f"dry run: {built} report(s) written to {outdir}; nothing recorded as sent")
                return 0
            rep.purge()
            rep.build(rep.cut(until))
            sent, failed = rep.deliver()
            print(f"{sent} report mail(s) sent, {failed} failed")
            if settings.reports.failure_reports:
                fsent, fdropped = rep.failures()
                print(f"{fsent} failure report(s) sent, {fdropped} not sent")
            return 0
        finally:
            db.close()
    except AuthmilterError as exc:
        kind = "store error" if isinstance(exc, StoreError) else "error"
        print(f"authmilter: {kind}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"authmilter: {exc}", file=sys.stderr)
        return 1


def _when(ts: float) -> str:
    return f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M}"


def _show(settings: Settings, args: argparse.Namespace) -> int:
    db = open_reportdb(settings.store.url, settings.reports.timeout_s)
    try:
        if args.unsuppress:
            ok = db.unsuppress(args.unsuppress)
            print(f"{args.unsuppress}: {'no longer suppressed' if ok else 'not a known destination'}")
            return 0 if ok else 1
        since = time.time() - settings.reports.retention_days * 86400.0
        view = db.overview(since)
    finally:
        db.close()
    print(f"pending deliveries: {len(view['pending'])}")
    for domain, begin, end, rid, dest, attempts, detail in view["pending"]:
        print(f"  {domain} {_when(begin)}..{_when(end)} {rid} -> {dest} (attempts {attempts})"
              + (f": {detail}" if detail else ""))
    print(f"suppressed destinations: {len(view['suppressed'])}")
    for dest, failures, detail, updated in view["suppressed"]:
        print(f"  {dest}: {failures} failure(s), last {_when(updated)}: {detail}")
    print(f"not sent: {len(view['refused'])}")
    for domain, begin, end, rid, dest, status, detail in view["refused"]:
        print(f"  {domain} {_when(begin)}..{_when(end)} {rid} -> {dest}: {status}: {detail}")
    print(f"windows not reported: {len(view['skipped'])}")
    for domain, begin, end, messages in view["skipped"]:
        print(f"  {domain} {_when(begin)}..{_when(end)}: {messages} message(s), none reportable")
    return 0


__all__ = ["Reporter", "cmd_reports", "parse_until"]
