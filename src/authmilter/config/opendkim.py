"""OpenDKIM datasets — KeyTable, SigningTable, InternalHosts — read as OpenDKIM 2.11 reads them.

Sources: opendkim(8) "DATA SETS", opendkim.conf(5) (KeyTable, SigningTable, PeerList) and
the behaviour of the Debian opendkim 2.11 package, which tests/parity compares against.

Grammar (what OpenDKIM does, and where authmilter is stricter):

* A dataset spec is ``file:PATH``, ``refile:PATH``, ``csl:a=b,c=d``, or a bare string: an
  absolute path means ``file:``, anything else is a comma-separated list. Database types
  (``db:``, ``dsn:``, ``ldap:`` ...) are refused with a clear message.
* ``file:`` — one record a line; ``#`` starts a comment, blank lines are skipped, leading
  and trailing white space is ignored. The key is the first word, the value is the rest
  of the line. There are *no* continuation lines: an indented line is a record of its own.
* ``refile:`` — the pattern runs from the start of the line to the first white space,
  the value is the rest. ``*`` matches anything, ``.`` and ``+`` are literal, and (as in
  OpenDKIM, which hands the result to regcomp(3)) other ERE characters keep their regex
  meaning. Patterns are tried in file order. OpenDKIM silently skips a line that starts
  with white space (it reads an empty pattern); authmilter refuses it instead, because an
  indented rule that never applies is always a mistake.
* Values holding several fields separate them with ``:``; the last field takes the
  remainder (so a key path may contain colons).

Where OpenDKIM would accept a line that can never have an effect (a wildcard key in a
``file:`` SigningTable, a CIDR with host bits set, a KeyTable value without three
fields), authmilter raises ConfigError naming the file and line: such lines are syntax
errors in the sense that they cannot mean what the admin wrote.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..domain import normalize_domain
from ..errors import ConfigError, DomainError
from .files import read_bytes

# C isspace() in the C locale; Python's str.split() would also split on Unicode spaces.
_WS = " \t\n\v\f\r"
_WS_RE = re.compile(r"[ \t\n\v\f\r]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Dataset types OpenDKIM may be built with that need a server or library we do not read.
_UNSUPPORTED = ("db", "dsn", "ldap", "ldapi", "ldaps", "lua", "memcache", "mdb", "erlang",
                "repute", "socket")


def _lower(text: str) -> str:
    """strcasecmp() folding: ASCII letters only."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a dataset, with where it came from (for error messages and which-key)."""

    key: str
    value: str | None
    kind: str            # "file", "refile" or "csl"
    file: str            # the path; for csl the literal list
    line: int            # 1-based line number; for csl the item number

    def where(self) -> str:
        if self.kind == "csl":
            return f"csl item {self.line}"
        return f"{self.kind}:{self.file}:{self.line}"


def split_spec(spec: str, source: str = "<config>", setting: str = "") -> tuple[str, str]:
    """Return (kind, rest) for a dataset spec the way dkimf_db_open() classifies it."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        if text.startswith("/"):
            if text.endswith(".db"):
                raise ConfigError(source, setting, f"{text!r}: Berkeley DB datasets are not supported; "
                                  "export the table to a flat file and use file:")
            return "file", text
        return "csl", text
    kind = kind.lower()
    if kind in ("file", "refile", "csl"):
        return kind, rest
    if kind in _UNSUPPORTED:
        raise ConfigError(source, setting, f"{kind}: datasets are not supported; export the table "
                          "to a flat file and use file: or refile:")
    raise ConfigError(source, setting, f"unknown dataset type {kind!r} in {spec!r} "
                      "(expected file:, refile:, csl: or an absolute path)")


def glob_to_regex(pattern: str, *, icase: bool, where: tuple[str, int] = ("<pattern>", 0)) -> re.Pattern[str]:
    """Compile a refile: pattern as OpenDKIM's dkimf_mkregexp() + regcomp(REG_EXTENDED) do.

    ``*`` becomes ``.*``, ``.`` and ``+`` are escaped, everything else is passed through
    as extended-regex syntax, anchored with ``^...$``. Backslashes and POSIX bracket classes
    are refused: Python's re does not read them as glibc does, so parity could not hold.
    """
    file, line = where
    if "\\" in pattern or any(t in pattern for t in ("[:", "[=", "[.")):
        raise ConfigError(file, "", f"pattern {pattern!r}: backslashes and POSIX bracket classes are not "
                          "supported (use * wildcards)", line)
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch in ".+":
            out.append("\\" + ch)
        else:
            out.append(ch)
    # "^...$" with re.search, not fullmatch: "a|b" anchors each side as regexec() does.
    flags = re.DOTALL | re.ASCII | (re.IGNORECASE if icase else 0)
    try:
        return re.compile("^" + "".join(out) + r"\Z", flags)
    except re.error as exc:
        raise ConfigError(file, "", f"pattern {pattern!r} is not a valid expression: {exc}", line) from None


def _read_lines(path: str) -> list[str]:
    data = read_bytes(path, "table file")
    lines = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(path, "", "not UTF-8 text", n) from None
    return lines


def _parse_file(path: str) -> list[Record]:
    out = []
    for n, text in enumerate(_read_lines(path), 1):
        text = text.partition("#")[0].strip(_WS)
        if not text:
            continue
        parts = _WS_RE.split(text, maxsplit=1)
        value = parts[1].strip(_WS) if len(parts) > 1 else ""
        out.append(Record(parts[0], value or None, "file", path, n))
    return out


def _parse_refile(path: str) -> list[Record]:
    out = []
    for n, text in enumerate(_read_lines(path), 1):
        text = text.partition("#")[0]
        if not text.strip(_WS):
            continue
        if text[0] in _WS:
            raise ConfigError(path, "", "line starts with white space; OpenDKIM reads an empty pattern "
                              "and ignores the line (there are no continuation lines)", n)
        m = re.match(r"([^ \t\n\v\f\r]*)(.*)", text, re.DOTALL)
        assert m is not None
        value = m[2].strip(_WS)
        out.append(Record(m[1], value or None, "refile", path, n))
    return out


def _parse_csl(text: str) -> list[Record]:
    out = []
    for n, item in enumerate((t for t in text.split(",") if t), 1):
        key, eq, value = item.partition("=")
        key, value = key.strip(_WS), value.strip(_WS)
        if key:
            out.append(Record(key, value if eq and value else None, "csl", text, n))
    return out


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: records in order plus the lookup structure OpenDKIM uses for its type."""

    kind: str
    source: str
    records: tuple[Record, ...]
    icase: bool
    _exact: dict[str, Record] = field(default_factory=dict, repr=False, compare=False)
    _patterns: tuple[tuple[re.Pattern[str], Record], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def open(cls, spec: str, *, icase: bool, source: str = "<config>", setting: str = "") -> Dataset:
        kind, rest = split_spec(spec, source, setting)
        if kind == "file":
            records = _parse_file(rest)
        elif kind == "refile":
            records = _parse_refile(rest)
        else:
            records = _parse_csl(rest)
        exact: dict[str, Record] = {}
        patterns: list[tuple[re.Pattern[str], Record]] = []
        for rec in records:
            if kind == "refile":
                patterns.append((glob_to_regex(rec.key, icase=icase, where=(rec.file, rec.line)), rec))
            else:
                # dkimf_db_get() walks the list and stops at the first equal key.
                exact.setdefault(_lower(rec.key) if icase else rec.key, rec)
        return cls(kind, rest, tuple(records), icase, exact, tuple(patterns))

    def get(self, query: str) -> Record | None:
        """The record dkimf_db_get() returns for *query*: first exact key, or first matching pattern."""
        return next(self.matches(query), None)

    def matches(self, query: str) -> Iterator[Record]:
        """file/csl: the first record whose key equals *query*; refile: every match in file order."""
        if self.kind == "refile":
            for rx, rec in self._patterns:
                if rx.search(query):
                    yield rec
            return
        hit = self._exact.get(_lower(query) if self.icase else query)
        if hit is not None:
            yield hit


# ---------------------------------------------------------------------------
# KeyTable


_KEYFILE_PREFIXES = ("/", "./", "../")
_INLINE_KEY = re.compile(r"[A-Za-z0-9+/=]+|-----BEGIN [A-Z ]*PRIVATE KEY-----.*", re.DOTALL)


@dataclass(frozen=True)
class KeyTableEntry:
    """``name domain:selector:keypath``; domain may be ``%`` (the From domain).

    A keypath starting with ``/``, ``./`` or ``../`` names a file (``%`` in an absolute path
    is replaced by the signing domain); anything else is the key itself (base64 DER), as in
    OpenDKIM's dkimf_loadkey().
    """

    name: str
    domain: str
    selector: str
    keypath: str
    where: str = field(default="", compare=False)

    @property
    def inline(self) -> bool:
        return not self.keypath.startswith(_KEYFILE_PREFIXES)

    @property
    def per_domain(self) -> bool:
        """True when the key or its d= depends on the From domain."""
        return self.domain == "%" or (not self.inline and "%" in self.keypath)


def expand_keyname(entry: KeyTableEntry, from_domain: str) -> tuple[str, str, str]:
    """(domain, selector, keypath) after ``%`` substitution (OpenDKIM dkimf_add_signrequest()).

    ``%`` as the whole domain field means the From domain; in a key file path every ``%``
    is replaced by that resulting domain. The selector is used as written.
    """
    domain = entry.domain
    if domain == "%":
        if not from_domain:
            raise DomainError(f"KeyTable entry {entry.name!r} uses % but there is no From domain")
        domain = from_domain
    keypath = entry.keypath
    if keypath.startswith("/"):
        keypath = keypath.replace("%", domain)
    return domain, entry.selector, keypath


def _entry_from_record(rec: Record) -> KeyTableEntry:
    def bad(reason: str) -> ConfigError:
        return ConfigError(rec.file if rec.kind != "csl" else "KeyTable csl:", "",
                           f"key {rec.key!r}: {reason}", rec.line)

    if rec.value is None:
        raise bad("expected 'domain:selector:keypath' after the key name")
    domain, sep1, rest = rec.value.partition(":")
    selector, sep2, keypath = rest.partition(":")
    if not (sep1 and sep2 and domain and selector and keypath):
        raise bad(f"expected 'domain:selector:keypath', got {rec.value!r}")
    if domain != "%":
        try:
            domain = normalize_domain(domain)
        except DomainError as exc:
            raise bad(f"bad signing domain: {exc}") from None
    try:
        normalize_domain(selector, allow_underscore=True)
    except DomainError as exc:
        raise bad(f"bad selector: {exc}") from None
    if not keypath.startswith(_KEYFILE_PREFIXES) and not _INLINE_KEY.fullmatch(keypath):
        raise bad(f"key path {keypath!r} must be absolute or start with ./ or ../ "
                  "(OpenDKIM reads anything else as the key itself)")
    return KeyTableEntry(rec.key, domain, selector, keypath, rec.where())


class KeyTable:
    """``name domain:selector:keypath`` records; names are case-sensitive (no ICASE in OpenDKIM)."""

    def __init__(self, dataset: Dataset, entries: dict[str, KeyTableEntry]) -> None:
        self.dataset = dataset
        self.entries = entries

    @classmethod
    def load(cls, spec: str, *, source: str = "<config>", setting: str = "signing.key_table") -> KeyTable:
        ds = Dataset.open(spec, icase=False, source=source, setting=setting)
        entries: dict[str, KeyTableEntry] = {}
        for rec in ds.records:
            entry = _entry_from_record(rec)
            entries.setdefault(rec.key, entry)   # first record wins, as in OpenDKIM
        return cls(ds, entries)

    def get(self, name: str) -> KeyTableEntry | None:
        rec = self.dataset.get(name)
        return None if rec is None else self.entries[rec.key]


# ---------------------------------------------------------------------------
# SigningTable


@dataclass(frozen=True, slots=True)
class SigningMatch:
    """One SigningTable hit: the key name (``%`` already replaced), the i= signer, and why."""

    keyname: str
    signer: str
    why: str
    record: Record


def _file_key_can_match(key: str) -> bool:
    """file:/csl: tables are only ever asked user@host, host, user@.parent, .parent, user@*, *."""
    if "*" not in key:
        return True
    if key == "*":
        return True
    local, at, host = key.rpartition("@")
    return bool(at) and host == "*" and "*" not in local


class SigningTable:
    """Maps a From address to KeyTable names (opendkim.conf(5) SigningTable)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    @classmethod
    def load(cls, spec: str, *, source: str = "<config>", setting: str = "signing.signing_table") -> SigningTable:
        ds = Dataset.open(spec, icase=True, source=source, setting=setting)
        for rec in ds.records:
            file = rec.file if rec.kind != "csl" else "SigningTable csl:"
            if rec.value is None or not rec.value.partition(":")[0]:
                raise ConfigError(file, "", f"{rec.key!r}: no KeyTable name after the pattern", rec.line)
            signer = rec.value.partition(":")[2]
            if signer and "@" not in signer:
                raise ConfigError(file, "", f"{rec.key!r}: the i= signer {signer!r} after ':' is not an address "
                                  "(OpenDKIM does not sign such messages)", rec.line)
            if ds.kind != "refile" and not _file_key_can_match(rec.key):
                raise ConfigError(file, "", f"{rec.key!r} can never match in a {ds.kind}: table (OpenDKIM looks up "
                                  "user@host, host, user@.parent, .parent, user@*, *); wildcards need refile:",
                                  rec.line)
        return cls(ds)

    @property
    def kind(self) -> str:
        return self.dataset.kind

    def records(self) -> tuple[Record, ...]:
        return self.dataset.records

    @staticmethod
    def keyname_of(rec: Record) -> str:
        return (rec.value or "").partition(":")[0]

    def matches(self, address: str, multiple: bool = False) -> list[SigningMatch]:
        """Every SigningTable hit for *address* in OpenDKIM's order (dkimf_apply_signtable()).

        refile: patterns against ``user@domain`` in file order. file:/csl: the keys
        ``user@host``, ``host``, then for each parent ``user@.parent`` and ``.parent``
        (``a.b.example.com`` tries ``.b.example.com`` then ``.example.com`` then ``.com``),
        then ``user@*`` and ``*``. Only the first hit unless *multiple*. The domain is
        lower-cased (OpenDKIM does) and turned into its A-label; keys are compared without
        regard to ASCII case, and a key containing non-ASCII never matches (ASCIIONLY).
        """
        user, at, domain = address.rpartition("@")
        if not at or not user or not domain:
            return []
        try:
            domain = normalize_domain(domain)
        except DomainError:
            return []
        out: list[SigningMatch] = []

        def take(rec: Record, step: str) -> bool:
            keyname, _, signer = (rec.value or "").partition(":")
            if keyname == "%":
                keyname = domain
            why = f'{rec.where()}: "{rec.key}" matched{" (" + step + ")" if step else ""}'
            out.append(SigningMatch(keyname, signer.replace("%", domain), why, rec))
            return not multiple

        if self.dataset.kind == "refile":
            for rec in self.dataset.matches(f"{user}@{domain}"):
                if take(rec, ""):
                    break
            return out
        steps = [(f"{user}@{domain}", "full address"), (domain, "host")]
        i = domain.find(".")
        while i != -1:
            parent = domain[i:]
            steps += [(f"{user}@{parent}", "user@.parent"), (parent, ".parent")]
            i = domain.find(".", i + 1)
        steps += [(f"{user}@*", "user@*"), ("*", "*")]
        for query, step in steps:
            if not query.isascii():
                continue
            hit = self.dataset.get(query)
            if hit is not None and take(hit, step):
                break
        return out

    def lookup(self, address: str, multiple: bool = False) -> list[tuple[str, str]]:
        """[(keyname, why)] in OpenDKIM's order; see matches()."""
        return [(m.keyname, m.why) for m in self.matches(address, multiple)]


# ---------------------------------------------------------------------------
# InternalHosts / TrustedHosts / PeerList
