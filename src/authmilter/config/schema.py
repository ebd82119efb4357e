"""The configuration schema: frozen dataclasses, validated on load.

Every key an admin can write is a field here, with its default and a one-line doc
(metadata["doc"]) from which `examples/authmilter.toml` and the README reference are
checked. An unknown key, a wrong type or a bad value raises ConfigError naming the
file, the dotted key and the reason.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from ..domain import normalize_domain
from ..errors import ConfigError, DomainError
from .files import read_bytes
from .sockets import parse_socket
from .storeurl import parse_url

DEFAULT_CONFIG_PATH = "/etc/authmilter/authmilter.toml"
# SPF results a local rule may reject on (pass, none and temperror never are).
SPF_REJECTABLE = ("fail", "softfail", "neutral", "permerror")


def _f(default: Any, doc: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(frozen=True)
class DnsSettings:
    servers: tuple[str, ...] = _f((), '"IP" or "IP:PORT" (IPv6: "[::1]:53"); empty = the system resolver')
    timeout_s: float = _f(5.0, "timeout of one DNS query, seconds")
    message_budget_s: float = _f(20.0, "total DNS time one message may spend; beyond it lookups are temperror")
    cache_entries: int = _f(50000, "entries in the shared TTL-honouring cache (0 disables)")
    max_ttl_s: int = _f(3600, "cap on how long an answer is cached")
    negative_ttl_s: int = _f(300, "cap on how long NXDOMAIN/NODATA is cached")
    result_cache_entries: int = _f(10000,
        "SPF results kept per (client IP, domain) until the first DNS answer they read expires (0 disables)")
    dnssec: str = _f("ignore",
        '"ignore"; "report": ask for DNSSEC (DO bit) and show whether answers came back validated (AD flag; '
        'servers must be a validating resolver you trust, e.g. a local unbound) in Authentication-Results and '
        'the log; "require-for-keys": also a DKIM key answer that is signed but not validated is permerror',
        choices=("ignore", "report", "require-for-keys"))
    prefetch: bool = _f(True,
        "inbound mail: start lookups as soon as their input arrives (SPF at MAIL FROM, DMARC at From, each DKIM "
        "key at its DKIM-Signature) so end-of-message finds the answers cached or in flight; results are the same")


@dataclass(frozen=True)
class SigningSettings:
    enabled: bool = _f(True, "sign outbound mail")
    key_table: str = _f("", "OpenDKIM KeyTable (file:, refile: or csl: prefix allowed)")
    signing_table: str = _f("", "OpenDKIM SigningTable: file: (exact lookup order) or refile: (patterns)")
    internal_hosts: tuple[str, ...] = _f(("127.0.0.1", "::1"),
                                         'IPs/CIDRs whose mail is outbound, or "file:/etc/opendkim/TrustedHosts"')
    sign_daemon_names: tuple[str, ...] = _f(("ORIGINATING",),
                                            "{daemon_name} values whose mail is outbound (Postfix -o milter_macro_daemon_name=...)")
    multiple_signatures: bool = _f(False, "sign with every matching SigningTable entry, not only the first")
    authenticated_must_match: bool = _f(True,
        "a SASL user gets a signature only for domains the SigningTable maps the user's own address/domain to")
    canonicalization: str = _f("relaxed/relaxed", "header/body canonicalization: simple or relaxed each")
    oversign_headers: tuple[str, ...] = _f(("From", "To", "Subject", "Date", "Reply-To", "Cc"),
                                           "headers signed once more than they occur, so none can be added")
    sign_headers: tuple[str, ...] = _f(
        ("From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From", "Resent-To",
         "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help", "List-Unsubscribe",
         "List-Subscribe", "List-Post", "List-Owner", "List-Archive", "Message-ID", "MIME-Version",
         "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
         "Sender", "Feedback-ID", "Autocrypt", "List-Unsubscribe-Post"),
        "headers signed when present (RFC 6376 §5.4.1)")
    expire_s: int = _f(0, "add x= this many seconds after t= (0: no expiry)")
    on_missing_key: str = _f("tempfail", "when a table names a key that failed to load: tempfail or accept (unsigned)",
                             choices=("tempfail", "accept"))


@dataclass(frozen=True)
class VerifySettings:
    enabled: bool = _f(True, "check inbound mail")
    trusted_relays: tuple[str, ...] = _f((),
        "IPs/CIDRs of our own relays: SPF is checked for the first Received hop outside them")
    trusted_authserv_ids: tuple[str, ...] = _f((),
        "upstream authserv-ids whose Authentication-Results/Received-SPF may be trusted and kept")
    dmarc_mode: str = _f("rfc9989", "DMARC discovery: rfc9989 (DNS tree walk) or rfc7489 (Public Suffix List, pct=)",
                         choices=("rfc9989", "rfc7489"))
    public_suffix_list: str = _f("", "PSL file for rfc7489 mode; empty = the list shipped with publicsuffixlist")
    max_signatures: int = _f(8, "DKIM signatures verified per message; more are ignored (permerror logged)")
    dkim_min_rsa_bits: int = _f(1024, "RSA keys shorter than this never pass (RFC 8301)")
    dkim_allow_sha1: bool = _f(False, "count rsa-sha1 signatures as pass (RFC 8301 says no)")
    dmarc_accept_length_tag: bool = _f(False, "let a DKIM pass with l= satisfy DMARC")
    spf_helo: bool = _f(True, "check the HELO identity too (RFC 7208 §2.3)")
    add_received_spf: bool = _f(False, "add a Received-SPF header (RFC 7208 §9.1)")
    arc: bool = _f(True, "validate ARC chains and report arc= in Authentication-Results")
    sender_id: bool = _f(False, "Sender ID (RFC 4406, legacy): report sender-id= for domains publishing "
                         "spf2.0/pra records; never decisive")


@dataclass(frozen=True)
class PolicySettings:
    dry_run: bool = _f(False, "log each decision but always accept")
    on_dmarc_reject: str = _f("evidence",
        "DMARC fail with p=reject: evidence (reject unless something suggests forwarding or a mailing list: "
        "then quarantine, RFC 9989), reject, quarantine, tempfail or accept",
        choices=("evidence", "reject", "quarantine", "tempfail", "accept"))
    on_dmarc_quarantine: str = _f("quarantine", "DMARC fail with p=quarantine: quarantine, reject or accept",
                                  choices=("quarantine", "reject", "accept"))
    quarantine: str = _f("hold", 'how to quarantine: "hold" (Postfix hold queue) or "header" (deliver with a marker)',
                         choices=("hold", "header"))
    quarantine_header: str = _f("X-Spam-Flag: YES", 'the marker header for quarantine = "header"')
    on_dns_error: str = _f("tempfail", "a temperror that could change the verdict: tempfail or accept",
                           choices=("tempfail", "accept"))
    on_internal_error: str = _f("tempfail", "an internal error: tempfail or accept", choices=("tempfail", "accept"))
    on_bad_from: str = _f("reject", "missing, multiple or unparsable From: reject, quarantine, tempfail or accept",
                          choices=("reject", "quarantine", "tempfail", "accept"))
    reject_spf_fail: bool = _f(False, "reject SPF hard fail (at end-of-message)")
    reject_spf_results: tuple[str, ...] = _f(("fail",),
        'the MAIL FROM SPF results reject_spf_fail rejects: "fail", optionally "softfail", "neutral", '
        '"permerror" (policyd-spf Mail_From_reject = Softfail / SPF_Not_Pass, PermError_reject)')
    reject_helo_spf: tuple[str, ...] = _f((),
        'HELO identity SPF results that are rejected, e.g. ["fail"] (policyd-spf HELO_reject = Fail); checked '
        "when verify.spf_helo is on, and for a null sender; empty = never")
    spf_reject_stage: str = _f("data",
        '"data": the SPF rules above act at end-of-message; "rcpt": at RCPT TO, before the message is sent, '
        "as policyd-spf does (end-of-message still applies them where SPF is checked behind verify.trusted_relays)",
        choices=("data", "rcpt"))
    spf_temperror_tempfail: bool = _f(True,
        "with reject_spf_fail: an SPF temperror is answered with on_dns_error (the sender retries); false: it "
        "counts as no SPF result (policyd-spf TempError_Defer = False)")
    reject_own_domain_spoof: bool = _f(True,
        "reject mail from outside whose From is one of our signing domains without aligned SPF/DKIM pass")
    own_domains: tuple[str, ...] = _f((), "extra domains for reject_own_domain_spoof (the SigningTable's are included)")
    trusted_forwarders: tuple[str, ...] = _f((),
        'hosts whose mail is never rejected on DMARC or SPF (decision logged): IPs, CIDRs, names, ".domain"')
    ignore_authenticated: bool = _f(True, "SASL-authenticated mail counts as outbound (signed, not checked); false: classify by internal_hosts/sign_daemon_names only")
    reject_text: str = _f("5.7.1 rejected by DMARC policy for {domain}: {reason}",
                          "reply text for DMARC rejects; {domain} and {reason} are filled in")


@dataclass(frozen=True)
class ArcSettings:
    sealing_table: str = _f("",
        "ARC sealing keys: SigningTable grammar (file: or refile:) mapping a recipient domain or * to a "
        "signing.key_table key; empty = no sealing")
    seal_inbound: bool = _f(False, "seal inbound mail after our checks, the AAR carrying our Authentication-Results "
                                   "(hosts that forward)")
    seal_resubmitted: bool = _f(True,
        "seal mail an internal host or local submission re-submits carrying our Authentication-Results "
        "(list software, forwarders), after DKIM signing")
    trusted_sealers: tuple[str, ...] = _f((),
        "ARC sealer domains (ARC-Seal d=) whose recorded authentication lets a forwarded DMARC failure through")


@dataclass(frozen=True)
class MetricsSettings:
    listen: str = _f("", 'Prometheus exporter address "HOST:PORT"; empty = off')


@dataclass(frozen=True)
class SrsSettings:
    enabled: bool = _f(False,
        "Sender Rewriting Scheme: rewrite the envelope sender of mail relayed out of local_domains, restore bounces")
    domain: str = _f("", "the SRS domain (SRS0=HHHH=TT=orig.example=user@DOMAIN); required when enabled")
    secret_file: str = _f("", "secrets, one per line: the first signs, every one verifies (postsrsd's file works)")
    local_domains: tuple[str, ...] = _f((),
        'our domains: senders here are not rewritten, recipients here are not "relayed"; list or "file:/path"')
    exclude_domains: tuple[str, ...] = _f((), 'senders never rewritten (".example.com" = its subdomains too); list or "file:"')
    max_age_days: int = _f(21, "an SRS0 address older than this is refused (550 5.1.1)")
    socketmap: str = _f("",
        'Postfix socketmap for alias-expanded mail: "unix:/run/authmilter/srs.sock" or "inet:PORT@HOST"; empty = off')


@dataclass(frozen=True)
class StoreSettings:
    enabled: bool = _f(False,
        "keep a record of every inbound DMARC evaluation (for reports); features that need the store open it anyway")
    url: str = _f("sqlite:///var/lib/authmilter/state.db",
        "sqlite:///ABSOLUTE/PATH (one host; the directory must exist) or postgresql://USER@HOST/DB (shared by MX hosts)")
    timeout_ms: int = _f(200, "how long a read or write of keyed state may take before on_store_error applies")
    on_store_error: str = _f("accept", "keyed state unavailable: accept (skip the check) or tempfail",
                             choices=("accept", "tempfail"))
    batch_size: int = _f(100, "message records written per transaction")
    flush_interval_s: float = _f(1.0, "longest a record waits in memory before it is written")
    queue_size: int = _f(10000, "records a worker holds while the database is slow or down; more are dropped (logged)")
    keep_records_days: int = _f(31, "message records older than this are deleted (0: kept until deleted by hand)")
    journal_dir: str = _f("",
        "each worker appends its records here before replying, so a killed worker loses none (replayed by the "
        "next); empty = the SQLite file's path + \".journal\", or /var/lib/authmilter/journal for PostgreSQL")
    journal_fsync: bool = _f(False,
        "fdatasync the journal per message: survives a machine crash too, at a cost on the reply path")


@dataclass(frozen=True)
class ReportsSettings:
    enabled: bool = _f(False, "collect DMARC aggregate report data (opens the store); `authmilter reports send` mails them")
    org_name: str = _f("", "our organisation in reports (RFC 9990 org_name); empty = authserv_id, else the from_address domain")
    from_address: str = _f("", "From and envelope sender of report mail, e.g. dmarc-reports@example.com (required)")
    email: str = _f("", "contact address in the report (report_metadata/email); empty = from_address")
    extra_contact: str = _f("", "extra contact information in the report (extra_contact_info); empty = none")
    interval_s: int = _f(86400, "reporting window, seconds; windows are aligned to multiples of it since the epoch (UTC)")
    settle_s: int = _f(300, "a window is reported this long after it ends, so records still queued on any host arrive")
    retention_days: int = _f(62, "sent-report bookkeeping older than this is deleted (at least store.keep_records_days)")
    rfc7489: bool = _f(False, "write the RFC 7489 report format instead of RFC 9990")
    report_all_domains: bool = _f(False,
        "report domains none of whose messages passed DMARC in the window too (default: they get nothing)")
    max_report_bytes: int = _f(10_000_000, "largest report mail sent to one destination (a smaller rua !size wins)")
    max_reports_per_destination: int = _f(50, "reports sent to one destination per run; the rest wait for the next")
    max_failures: int = _f(5, "a destination that failed this many times in a row is suppressed (see reports show)")
    relay: str = _f("", 'send through SMTP to "HOST:PORT" instead of sendmail(1)')
    sendmail: str = _f("/usr/sbin/sendmail", "sendmail(1) program used when no relay is set")
    timeout_s: float = _f(60.0, "DNS, SMTP and database timeout of one reports run, seconds")
    failure_reports: bool = _f(False,
        "RFC 9991 failure reports to domains that ask (ruf=, fo=): headers only, local parts hashed")
    failure_max_per_hour: int = _f(20, "failure reports sent to one destination per hour; more are dropped")


@dataclass(frozen=True)
class GreylistSettings:
    enabled: bool = _f(False, "greylist inbound mail: the first delivery of a new triplet is deferred (451 4.7.1)")
    stage: str = _f("rcpt", '"rcpt" (defer at RCPT, SPF-pass domain as identity) or "data" (at end-of-message, '
                    "where an aligned verifying DKIM signature counts too)", choices=("rcpt", "data"))
    delay_s: int = _f(300, "a retry is accepted this many seconds after the first attempt")
    retry_window_s: int = _f(172800, "a first attempt not retried within this many seconds is forgotten")
    auto_allow_after: int = _f(5, "a client network or authenticated domain is no longer greylisted after this "
                               "many deliveries that passed greylisting (0: never)")
    max_age_days: int = _f(35, "a passed triplet (and auto-allow counts) not seen for this many days is forgotten")
    on_store_error: str = _f("accept", "the store cannot be read or written: accept (not greylisted) or tempfail",
                             choices=("accept", "tempfail"))
    ipv4_prefix: int = _f(24, "IPv4 clients are grouped by this network prefix in the triplet")
    ipv6_prefix: int = _f(64, "IPv6 clients are grouped by this network prefix in the triplet")
    whitelist_clients: tuple[str, ...] = _f((),
        "postgrey whitelist_clients files (host names, domains, IPs, CIDRs, /regex/); e.g. /etc/postgrey/whitelist_clients")
    whitelist_recipients: tuple[str, ...] = _f((),
        "postgrey whitelist_recipients files (addresses, domains, local@, /regex/)")


@dataclass(frozen=True)
class DnsblSettings:
    zones: tuple[str, ...] = _f((),
        'blocklists "ZONE[=FILTER][*WEIGHT]", e.g. "zen.spamhaus.org=127.0.0.[2..11]*2"; empty = off')
    threshold: int = _f(1, "a client whose listed zones' weights add up to this is acted on")
    action: str = _f("reject", 'listed client: "reject" (554 5.7.1 at RCPT), "tempfail" (451 at RCPT) or '
                     '"header" (deliver with an X-DNSBL header)', choices=("reject", "tempfail", "header"))


@dataclass(frozen=True)
class DnswlSettings:
    zones: tuple[str, ...] = _f((),
        'allowlists "ZONE[=FILTER][*WEIGHT]", e.g. "list.dnswl.org=127.0.[0..255].[1..3]"; a listed client is not greylisted')
    threshold: int = _f(1, "a client whose listed zones' weights add up to this counts as allowlisted")


@dataclass(frozen=True)
class Settings:
    socket: str = _f("unix:/run/authmilter/authmilter.sock",
                     "milter socket: unix:/path, local:/path, inet:PORT@HOST, inet6:PORT@HOST")
    socket_mode: str = _f("0660", "unix socket permissions (octal)")
    authserv_id: str = _f("", "our authserv-id; empty = the MTA's j macro, else the hostname")
    user: str = _f("", "drop to this user after binding the socket (when started as root)")
    group: str = _f("", "group for the socket and the process (default: the user's group)")
    workers: int = _f(0, "worker processes sharing the socket; 0 = two per CPU")
    milter_timeout_s: int = _f(600, "I/O timeout towards the MTA; a connection quiet this long (nothing sent, stalled mid-session) is closed")
    log_level: str = _f("info", "debug, info, warning or error", choices=("debug", "info", "warning", "error"))
    log_target: str = _f("stderr", '"stderr" (with syslog <N> prefixes under systemd) or "syslog" (facility mail)',
                         choices=("stderr", "syslog"))
    pid_file: str = _f("", "write the master's PID here")
    dns: DnsSettings = field(default_factory=DnsSettings, metadata={"doc": "resolver"})
    signing: SigningSettings = field(default_factory=SigningSettings, metadata={"doc": "outbound DKIM signing"})
    verify: VerifySettings = field(default_factory=VerifySettings, metadata={"doc": "inbound checks"})
    policy: PolicySettings = field(default_factory=PolicySettings, metadata={"doc": "what to do with the results"})
    arc: ArcSettings = field(default_factory=ArcSettings, metadata={"doc": "ARC sealing and trusted sealers"})
    metrics: MetricsSettings = field(default_factory=MetricsSettings, metadata={"doc": "Prometheus metrics"})
    srs: SrsSettings = field(default_factory=SrsSettings, metadata={"doc": "Sender Rewriting Scheme"})
    store: StoreSettings = field(default_factory=StoreSettings, metadata={"doc": "state shared by workers and hosts"})
    reports: ReportsSettings = field(default_factory=ReportsSettings, metadata={"doc": "DMARC aggregate reports"})
    greylist: GreylistSettings = field(default_factory=GreylistSettings, metadata={"doc": "greylisting"})
    dnsbl: DnsblSettings = field(default_factory=DnsblSettings, metadata={"doc": "DNS blocklists"})
    dnswl: DnswlSettings = field(default_factory=DnswlSettings, metadata={"doc": "DNS allowlists"})
    # Where the settings came from, for error messages and relative paths.
    source: str = field(default="<defaults>", metadata={"internal": True})
    # Dotted keys the file really set (the rest are defaults): a reload checks them.
    explicit: frozenset[str] = field(default=frozenset(), metadata={"internal": True})


# ---------------------------------------------------------------------------
# validation


def _check_value(file: str, key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected an integer, got {value!r}")
        if value < 0:
            raise ConfigError(file, key, "must not be negative")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(file, key, f"expected a number, got {value!r}")
        if value <= 0:
            raise ConfigError(file, key, "must be positive")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            # "file:/path" style list indirections are written as a single string.
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected a list of strings, got {value!r}")
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(file, key, f"expected strings in the list, got {item!r}")
        return tuple(value)
    raise TypeError(f"unsupported config type {tp!r}")


def _build(cls: type, data: dict[str, Any], file: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            suggestion = _closest(key, known)
            hint = f" (did you mean {prefix}{suggestion}?)" if suggestion else ""
            raise ConfigError(file, dotted, f"unknown key{hint}")
        tp = hints[key]
        if isinstance(tp, type) and is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(file, dotted, "expected a table [" + dotted + "]")
            kwargs[key] = _build(tp, value, file, dotted + ".")
            continue
        checked = _check_value(file, dotted, value, tp)
        choices = known[key].metadata.get("choices")
        if choices and checked not in choices:
            raise ConfigError(file, dotted, f"must be one of {', '.join(choices)}; got {checked!r}")
        kwargs[key] = checked
    return cls(**kwargs)


def _closest(key: str, known: dict[str, Any]) -> str:
    import difflib

    match = difflib.get_close_matches(key, list(known), n=1)
    return match[0] if match else ""


def parse_dns_server(item: str) -> tuple[str, int]:
    """'1.2.3.4', '1.2.3.4:53', '::1', '[::1]:5353' -> (ip, port). Raises ValueError."""
    text = item.strip()
    port = 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected [IPv6]:PORT")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    else:
        host = text
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    return host, port


def validate(settings: Settings) -> Settings:
    """Cross-field checks that types alone cannot express."""
    file = settings.source
    try:
        parse_socket(settings.socket)
    except ValueError as exc:
        raise ConfigError(file, "socket", str(exc)) from None
    try:
        mode = int(settings.socket_mode, 8)
        if not 0 <= mode <= 0o777:
            raise ValueError
    except ValueError:
        raise ConfigError(file, "socket_mode", f"expected an octal mode such as \"0660\", got {settings.socket_mode!r}") from None
    for server in settings.dns.servers:
        try:
            parse_dns_server(server)
        except ValueError as exc:
            raise ConfigError(file, "dns.servers", f"bad server {server!r}: {exc}") from None
    # Host lists (signing.internal_hosts, verify.trusted_relays, policy.trusted_forwarders)
    # have one grammar and one parser, config/hostlist.HostList, run by Runtime.load (and
    # so by check-config): entries and the files they name are checked there.
    canon = settings.signing.canonicalization.split("/")
    if len(canon) > 2 or any(c not in ("simple", "relaxed") for c in canon):
        raise ConfigError(file, "signing.canonicalization",
                          f"expected simple or relaxed, optionally header/body; got {settings.signing.canonicalization!r}")
    if settings.signing.enabled and bool(settings.signing.key_table) != bool(settings.signing.signing_table):
        raise ConfigError(file, "signing.key_table" if not settings.signing.key_table else "signing.signing_table",
                          "key_table and signing_table are set together")
    if settings.arc.sealing_table and not settings.signing.key_table:
        raise ConfigError(file, "arc.sealing_table", "sealing keys come from signing.key_table, which is not set")
    for sealer in settings.arc.trusted_sealers:
        try:
            normalize_domain(sealer)
        except DomainError as exc:
            raise ConfigError(file, "arc.trusted_sealers", f"{sealer!r}: {exc}") from None
    for key in ("reject_spf_results", "reject_helo_spf"):
        for item in getattr(settings.policy, key):
            if item not in SPF_REJECTABLE:
                raise ConfigError(file, f"policy.{key}", f"{item!r}: expected {', '.join(SPF_REJECTABLE)}")
    if ":" not in settings.policy.quarantine_header:
        raise ConfigError(file, "policy.quarantine_header", 'expected "Name: value"')
    if settings.metrics.listen:
        host, _, port = settings.metrics.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(file, "metrics.listen", 'expected "HOST:PORT"')
    if settings.verify.max_signatures < 1:
        raise ConfigError(file, "verify.max_signatures", "must be at least 1")
    _validate_srs(settings)

    try:
        parse_url(settings.store.url)
    except ValueError as exc:
        raise ConfigError(file, "store.url", str(exc)) from None
    for key in ("timeout_ms", "batch_size", "queue_size"):
        if getattr(settings.store, key) < 1:
            raise ConfigError(file, f"store.{key}", "must be at least 1")
    r = settings.reports
    if r.enabled and "@" not in r.from_address:
        raise ConfigError(file, "reports.from_address", "reports need a From address such as dmarc-reports@example.com")
    for key in ("interval_s", "max_report_bytes", "max_reports_per_destination", "max_failures"):
        if getattr(r, key) < 1:
            raise ConfigError(file, f"reports.{key}", "must be at least 1")
    if r.retention_days < max(1, settings.store.keep_records_days):
        # A window whose records still exist must still be known as sent, or a later
        # run would report it again.
        raise ConfigError(file, "reports.retention_days",
                          f"must be at least store.keep_records_days ({settings.store.keep_records_days}) and 1")
    if r.relay:
        host, _, port = r.relay.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(file, "reports.relay", 'expected "HOST:PORT"')
    _validate_antispam(settings)
    return settings


def _validate_antispam(settings: Settings) -> None:
    """[greylist], [dnsbl], [dnswl]: ranges and the zone grammar (its parser lives in
    config/dnslists so that check-config names the bad entry)."""
    from .dnslists import parse_zone

    file = settings.source
    g = settings.greylist
    if g.ipv4_prefix > 32 or g.ipv4_prefix < 8:
        raise ConfigError(file, "greylist.ipv4_prefix", "must be between 8 and 32")
    if g.ipv6_prefix > 128 or g.ipv6_prefix < 16:
        raise ConfigError(file, "greylist.ipv6_prefix", "must be between 16 and 128")
    if g.retry_window_s <= g.delay_s:
        raise ConfigError(file, "greylist.retry_window_s", f"must be longer than greylist.delay_s ({g.delay_s})")
    if g.max_age_days < 1:
        raise ConfigError(file, "greylist.max_age_days", "must be at least 1")
    for section in ("dnsbl", "dnswl"):
        for entry in getattr(settings, section).zones:
            try:
                parse_zone(entry)
            except ValueError as exc:
                raise ConfigError(file, f"{section}.zones", f"{entry!r}: {exc}") from None
        if getattr(settings, section).threshold < 1:
            raise ConfigError(file, f"{section}.threshold", "must be at least 1")


def _validate_srs(settings: Settings) -> None:
    """[srs]: a domain and a secret file when enabled, a socket the listener can bind.
    The secret file and the domain lists are read by Runtime.load (check-config too)."""
    file, srs = settings.source, settings.srs
    if srs.socketmap:
        try:
            spec = parse_socket(srs.socketmap)
        except ValueError as exc:
            raise ConfigError(file, "srs.socketmap", str(exc)) from None
        if spec.family not in ("unix", "inet", "inet6"):
            raise ConfigError(file, "srs.socketmap", "expected unix:/path or inet:PORT@HOST")
    if not srs.enabled:
        return
    if not srs.domain:
        raise ConfigError(file, "srs.domain", "SRS needs its domain (enabled = true)")
    from ..domain import normalize_domain
    from ..errors import DomainError

    try:
        normalize_domain(srs.domain)
    except DomainError as exc:
        raise ConfigError(file, "srs.domain", str(exc)) from None
    if not srs.secret_file:
        raise ConfigError(file, "srs.secret_file", "SRS needs a secret file (enabled = true)")
    if srs.max_age_days < 1:
        raise ConfigError(file, "srs.max_age_days", "must be at least 1")


def settings_from_dict(data: dict[str, Any], source: str = "<dict>") -> Settings:
    settings = _build(Settings, data, source, "")
    settings = dataclasses.replace(settings, source=source, explicit=frozenset(_dotted_keys(data)))
    return validate(settings)


def _dotted_keys(data: dict[str, Any], prefix: str = "") -> typing.Iterator[str]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _dotted_keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


# What a reload may only change when the new file says so itself: a file truncated by an
# editor or a botched deploy would otherwise fall back to defaults and silently stop
# signing, stop checking, or move DNS to the system resolver.
RELOAD_GUARDED = ("signing.enabled", "signing.key_table", "signing.signing_table",
                  "verify.enabled", "dns.servers")


def reload_refusal(old: Settings, new: Settings) -> str | None:
    """Why *new* must not replace *old* on reload, or None when it may."""
    if not new.explicit:
        return "the file sets nothing (empty?); a reload needs the whole configuration"
    for key in RELOAD_GUARDED:
        section, name = key.split(".")
        before, after = getattr(getattr(old, section), name), getattr(getattr(new, section), name)
        if before != after and key not in new.explicit:
            return (f"{key} would change from {before!r} to the default {after!r} because the file no longer "
                    f"sets it; set it explicitly to change it")
    return None


def load_settings(path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH) -> Settings:
    """Read and validate a TOML file; ConfigError on any problem."""
    file = os.fspath(path)
    raw = read_bytes(file, None)      # a directory: IsADirectoryError, as before
    try:
        data = tomllib.loads(raw.decode())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"TOML syntax error: {exc}") from None
    return settings_from_dict(data, source=file)


def iter_schema(cls: type = Settings, prefix: str = "") -> typing.Iterator[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every key, for docs and the example file."""
    for f in fields(cls):
        if f.metadata.get("internal"):
            continue
        if f.default_factory is not MISSING:  # type: ignore[misc]
            yield from iter_schema(f.default_factory().__class__, prefix + f.name + ".")  # type: ignore[misc]
            continue
        yield prefix + f.name, f.default, f.metadata.get("doc", "")


_ = types  # keep import for typing.get_type_hints on newer union syntax
