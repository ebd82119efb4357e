"""Which key(s) sign an outbound message, and the DKIM-Signature header edits.

The KeyTable and SigningTable are read once (config/opendkim.py) and every key they
name is parsed once per load; per message there is a table lookup and the RSA/Ed25519
operation (dkim.sign.sign). The choice follows OpenDKIM 2.11 (tests/parity checks it
against the Debian package) with two deliberate differences: the same key is never
used twice for one message (OpenDKIM signs twice when two SigningTable steps name one
key), and the authenticated-user restriction below, which OpenDKIM does not have.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from . import keys, model
from .config.hostlist import HostList
from .config.opendkim import (
    KeyTable,
    KeyTableEntry,
    SigningMatch,
    SigningTable,
    expand_keyname,
)
from .config.schema import SigningSettings
from .dkim.canon import body_hash
from .dkim.sign import SigningKey, sign
from .domain import is_subdomain, normalize_domain
from .errors import ConfigError, DomainError, KeyError_
from .outcome import HeaderInsert

# load_signing_key() needs a domain; keys whose d= is the From domain ("%") are parsed
# once under this placeholder and given the real domain per message.
_PLACEHOLDER = "percent.invalid"


def load_keys(kt: KeyTable, names: Iterable[str] | None = None) -> dict[str, SigningKey]:
    """Parse the keys of a KeyTable once: every entry (or those in *names*) whose key
    does not depend on the From domain (no ``%`` in its path). A ``%`` domain is parsed
    under a placeholder and given the real domain per message. KeyError_ names the
    KeyTable line and key. The one key loader: DKIM signing and ARC sealing share it."""
    wanted = None if names is None else set(names)
    loaded: dict[str, SigningKey] = {}
    for name, entry in kt.entries.items():
        if (wanted is not None and name not in wanted) or (not entry.inline and "%" in entry.keypath):
            continue
        domain = _PLACEHOLDER if entry.domain == "%" else entry.domain
        try:
            if entry.inline:
                # a key written into the KeyTable itself: keys.py reads it like a file's content
                loaded[name] = keys.signing_key_from_data(entry.keypath.strip().encode("ascii", "replace"),
                                                          domain, entry.selector,
                                                          f"<KeyTable {entry.where or entry.name}>")
            else:
                loaded[name] = keys.load_signing_key(entry.keypath, domain, entry.selector)
        except KeyError_ as exc:
            raise KeyError_(f"KeyTable {entry.where}: key {name!r}: {exc}") from None
    return loaded


@dataclass(frozen=True)
class Choice:
    """The keys chosen for one message, with the SigningTable line that chose each.

    ``refused`` is set (and ``keys`` empty) when the authenticated-user restriction
    forbids signing. ``missing`` names keys the table chose that could not be used
    (not in the KeyTable, or the key file failed to load): OpenDKIM tempfails such
    messages, and a caller honours ``signing.on_missing_key`` — ``keys`` is then empty.
    ``identities[i]`` is the i= for ``keys[i]`` (SigningTable second field), or None.
    """

    keys: tuple[SigningKey, ...]
    why: tuple[str, ...]
    refused: str = ""
    identities: tuple[str | None, ...] = ()
    missing: tuple[str, ...] = ()


def _canons(text: str) -> tuple[str, str]:
    """"relaxed/simple" -> (relaxed, simple); one word sets the header canon and the body
    stays simple (RFC 6376 §3.5 c=, OpenDKIM Canonicalization)."""
    head, _, body = text.partition("/")
    return head, body or "simple"


class Signer:
    """Tables, keys and settings for outbound signing; immutable after from_settings().

    Authenticated is not authorised (``authenticated_must_match``, on by default): when
    the client authenticated as *sasl_user*, a signature is only made with a key the
    SigningTable also gives to the user's own login. Precisely: the login must be an
    address (``alice@example.com``); it is looked up in the SigningTable like a From
    address (all matches), and each key chosen for the From address is kept only if the
    login's lookup yields the same signing domain and selector (d=, s=). So
    ``alice@example.com`` may sign mail From ``bob@example.com`` (same key) but not From
    ``ceo@other.example`` — and with a ``%`` KeyTable domain, d= follows the From domain,
    so it still never signs for another domain. A bare login (``alice``) names no domain
    and cannot be checked: signing is refused with a reason that says so (set
    ``authenticated_must_match = false`` on single-domain servers with bare logins).
    A refusal leaves the message unsigned (never rejected) and is logged with its reason.
    """

    def __init__(self, settings: SigningSettings, key_table: KeyTable, signing_table: SigningTable,
                 internal_hosts: HostList, loaded: dict[str, SigningKey]) -> None:
        self.settings = settings
        self.key_table = key_table
        self.signing_table = signing_table
        self.internal_hosts = internal_hosts
        self._loaded = loaded                     # KeyTable name -> key (domain-independent keys)
        self._per_domain: dict[tuple[str, str], SigningKey | str] = {}
        self._lock = threading.Lock()
        self.header_canon, self.body_canon = _canons(settings.canonicalization)
        self.domains = self._domains()

    # -- loading ----------------------------------------------------------------

    @classmethod
    def from_settings(cls, s: SigningSettings, *, source: str = "<config>") -> Signer:
        """Load both tables and parse every key once; ConfigError / KeyError_ name file and reason.

        A SigningTable line naming a key that is not in the KeyTable stops start-up (OpenDKIM
        2.11 starts and tempfails every message that reaches the line). A key that cannot be
        used stops start-up too, so check-config reports it. Keys whose file name contains
        ``%`` depend on the From domain and are parsed on first use, then kept for the
        lifetime of this Signer; if one fails, Choice.missing says so.
        """
        kt = KeyTable.load(s.key_table, source=source)
        st = SigningTable.load(s.signing_table, source=source)
        for rec in st.records():
            name = SigningTable.keyname_of(rec)
            if name != "%" and kt.get(name) is None:
                hint = " (OpenDKIM separates an i= signer with ':', not a space)" if " " in name else ""
                raise ConfigError(rec.file if rec.kind != "csl" else source, "",
                                  f"{rec.key!r} names key {name!r}, which is not in the KeyTable{hint}", rec.line)
        hosts = HostList.load(s.internal_hosts, source=source)
        return cls(s, kt, st, hosts, load_keys(kt))

    def parsed_key(self, name: str) -> SigningKey | None:
        """The key parsed at load for KeyTable entry *name* (None for a per-domain key)."""
        return self._loaded.get(name)

    def _domains(self) -> frozenset[str]:
        """Every signing domain the tables name literally (for the own-domain spoofing rule)."""
        out = {e.domain for e in self.key_table.entries.values() if e.domain != "%"}
        for rec in self.signing_table.records():
            host = rec.key.rpartition("@")[2].lstrip(".")
            if host and "*" not in host:
                try:
                    out.add(normalize_domain(host))
                except DomainError:
                    continue
        return frozenset(out)

    def _key_for(self, entry: KeyTableEntry, from_domain: str) -> SigningKey:
        """The parsed key for *entry* signing mail of *from_domain*; KeyError_ if unusable."""
        domain, selector, keypath = expand_keyname(entry, from_domain)
        base = self._loaded.get(entry.name)
        if base is not None:
            return base if base.domain == domain else dataclasses.replace(base, domain=domain)
        cached = self._per_domain.get((entry.name, domain))
        if cached is None:
            try:
                cached = keys.load_signing_key(keypath, domain, selector)
            except KeyError_ as exc:
                cached = f"KeyTable {entry.where}: key {entry.name!r}: {exc}"
            with self._lock:
                self._per_domain[(entry.name, domain)] = cached
        if isinstance(cached, str):
            raise KeyError_(cached)
        return cached

    # -- choosing ---------------------------------------------------------------

    def _resolve(self, matches: list[SigningMatch], from_domain: str
                 ) -> tuple[list[tuple[SigningKey, str, str]], list[str]]:
        """[(key, signer, why)] for the matches, without repeats; and the unusable key names."""
        found: list[tuple[SigningKey, str, str]] = []
        missing: list[str] = []
        seen: set[tuple[str, str, str]] = set()
        for m in matches:
            entry = self.key_table.get(m.keyname)
            if entry is None:
                missing.append(f"{m.keyname} (not in the KeyTable; {m.why})")
                continue
            try:
                key = self._key_for(entry, from_domain)
            except (KeyError_, DomainError) as exc:
                missing.append(f"{m.keyname} ({exc})")
                continue
            ident = (key.domain, key.selector, key.path)
            if ident in seen:
                continue
            seen.add(ident)
            found.append((key, m.signer, m.why))
        return found, missing

    def choose(self, from_address: str, sasl_user: str = "") -> Choice:
        """The key(s) that sign mail From *from_address* (a bare ``local@domain``)."""
        s = self.settings
        matches = self.signing_table.matches(from_address, multiple=s.multiple_signatures)
        if not matches:
            return Choice((), ())
        from_domain = normalize_domain(from_address.rpartition("@")[2])
        found, missing = self._resolve(matches, from_domain)
        if missing:
            return Choice((), tuple(w for _, _, w in found), missing=tuple(missing))
        if s.authenticated_must_match and sasl_user:
            found, refused = self._restrict(found, sasl_user)
            if refused:
                return Choice((), (), refused=refused)
        return Choice(tuple(k for k, _, _ in found), tuple(w for _, _, w in found),
                      identities=tuple(sig or None for _, sig, _ in found))

    def _restrict(self, found: list[tuple[SigningKey, str, str]], sasl_user: str
                  ) -> tuple[list[tuple[SigningKey, str, str]], str]:
        """Keep the keys the SASL login's own SigningTable lookup also yields (see class doc)."""
        login = sasl_user.strip()
        local, at, ldomain = login.rpartition("@")
        if not at or not local:
            return [], (f"authenticated user {login!r} is not an address, so the SigningTable cannot say "
                        "which domains it may sign for (signing.authenticated_must_match)")
        try:
            ldomain = normalize_domain(ldomain)
        except DomainError:
            return [], f"authenticated user {login!r} has an invalid domain"
        own, _ = self._resolve(self.signing_table.matches(f"{local}@{ldomain}", multiple=True), ldomain)
        allowed = {(k.domain, k.selector) for k, _, _ in own}
        kept = [f for f in found if (f[0].domain, f[0].selector) in allowed]
        if not kept:
            names = ", ".join(sorted({f"d={k.domain}" for k, _, _ in found}))
            return [], (f"authenticated user {login} is not authorised for {names} "
                        "(its own SigningTable entries name other keys)")
        return kept, ""

    # -- signing ----------------------------------------------------------------

    def sign(self, message: model.Message, choice: Choice, *, timestamp: int | None = None
             ) -> tuple[HeaderInsert, ...]:
        """One DKIM-Signature insert (index 0) per chosen key; all share one t= (RFC 6376 §3.5).

        An i= signer from the SigningTable is used only when it lies within d= (OpenDKIM
        drops a conflicting signer too). From is always oversigned.
        """
        s = self.settings
        t = int(time.time()) if timestamp is None else int(timestamp)
        over = tuple(s.oversign_headers)
        if not any(h.lower() == "from" for h in over):
            over += ("From",)
        edits = []
        # Every key signs with sha256 and the same body canonicalization: one pass over
        # the (spooled) body serves them all.
        bh = body_hash(message.body, self.body_canon) if choice.keys else None
        for i, key in enumerate(choice.keys):
            ident = choice.identities[i] if i < len(choice.identities) else None
            if ident and ("@" not in ident or not is_subdomain(ident.rpartition("@")[2].lower(), key.domain)):
                ident = None
            value = sign(message, key, header_canon=self.header_canon, body_canon=self.body_canon,
                                  sign_headers=s.sign_headers, oversign=over, identity=ident,
                                  timestamp=t, expire_s=s.expire_s, bh=bh)
            edits.append(HeaderInsert("DKIM-Signature", value))
        return tuple(edits)
