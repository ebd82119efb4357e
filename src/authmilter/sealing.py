"""ARC sealing (RFC 8617 §5.1): which key seals a message, and the ARC set's header edits.

Keys come from the one KeyTable (``signing.key_table``) and are parsed once at load by
the same loader DKIM signing uses (`signing.load_keys`; when signing is on, its parsed
keys are shared, not loaded twice). ``[arc] sealing_table`` is a SigningTable (OpenDKIM
grammar, ``file:`` or ``refile:``) looked up with the envelope recipients instead of the
From address: ``forwarder.example  arckey`` or ``*  arckey``. The first recipient with a
match chooses the key.

The set itself is made by `dkim.arc.seal` over the message as the MTA will store it
after our other edits (`edited`): deletions done, our Authentication-Results and
DKIM-Signature inserted, so the ARC-Message-Signature covers the DKIM-Signature we add.
Its h= lists each configured header as many times as it occurs (never oversigned: a
later hop adding a DKIM-Signature must not break our AMS).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config.opendkim import KeyTable, SigningTable
from .config.schema import Settings
from .dkim.arc import AAR_HEADER, AMS_HEADER, AS_HEADER, MAX_INSTANCES, ArcSealError, Chain, collect, seal
from .dkim.sign import SigningKey
from .errors import ConfigError
from .model import Message, header_key
from .outcome import HeaderDelete, HeaderInsert
from .signing import Signer, load_keys

__all__ = ["MAX_INSTANCES", "ArcSealError", "SealChoice", "Sealer", "chain_state", "edited"]

# Headers the AMS signs besides signing.sign_headers: the DKIM signatures (ours included).
_ALWAYS = ("DKIM-Signature",)
# Looked up when the envelope has no recipient that matches: only "*" (or a pattern
# matching anything) can match it.
_NO_RECIPIENT = "postmaster@recipient.invalid"


@dataclass(frozen=True)
class SealChoice:
    key: SigningKey | None
    why: str                     # the sealing_table line that chose the key, or why none


class Sealer:
    """The sealing table and its parsed keys; immutable after `from_settings`."""

    def __init__(self, table: SigningTable, keys: dict[str, SigningKey], sign_headers: Sequence[str]) -> None:
        self.table = table
        self.keys = keys
        names: list[str] = []
        for h in (*sign_headers, *_ALWAYS):
            if h.lower() not in (n.lower() for n in names) and h.lower() != "arc-seal":
                names.append(h)
        self.sign_headers = tuple(names)

    @classmethod
    def from_settings(cls, settings: Settings, signer: Signer | None = None) -> Sealer | None:
        """None without ``[arc] sealing_table``. Every key the table names must be in the
        KeyTable and independent of the From domain (no ``%``): ConfigError / KeyError_
        name the file, line and reason, as for signing."""
        a, source = settings.arc, settings.source
        if not a.sealing_table:
            return None
        shared = signer is not None and signer.settings.key_table == settings.signing.key_table
        kt = signer.key_table if shared and signer is not None else \
            KeyTable.load(settings.signing.key_table, source=source)
        st = SigningTable.load(a.sealing_table, source=source, setting="arc.sealing_table")
        names: set[str] = set()
        for rec in st.records():
            name = SigningTable.keyname_of(rec)
            where = rec.file if rec.kind != "csl" else source
            entry = kt.get(name)
            if name == "%" or entry is None:
                raise ConfigError(where, "arc.sealing_table", f"{rec.key!r} names key {name!r}, which is not in "
                                  "the KeyTable (signing.key_table)", rec.line)
            if entry.per_domain:
                raise ConfigError(where, "arc.sealing_table", f"{rec.key!r} names key {name!r}, whose domain or "
                                  "file depends on the From domain (%): a seal needs a fixed d=", rec.line)
            names.add(entry.name)
        if shared and signer is not None:
            keys = {n: k for n in names if (k := signer.parsed_key(n)) is not None}
            keys.update(load_keys(kt, names - set(keys)))
        else:
            keys = load_keys(kt, names)
        return cls(st, keys, settings.signing.sign_headers)

    def choose(self, rcpts: Sequence[str]) -> SealChoice:
        """The key for a message to *rcpts*: the first recipient the table maps, else
        a ``*`` entry; SealChoice(None, why) when nothing matches."""
        for rcpt in (*rcpts, _NO_RECIPIENT):
            found = self.table.matches(rcpt)
            if found:
                key = self.keys.get(found[0].keyname)
                if key is not None:
                    return SealChoice(key, found[0].why)
        return SealChoice(None, "no sealing_table entry for the recipients")

    def ams_headers(self, headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
        """h= of the AMS: each configured header once per occurrence in *headers*."""
        counts: dict[bytes, int] = {}
        for raw, _ in headers:
            key = header_key(raw)
            counts[key] = counts.get(key, 0) + 1
        out: list[str] = []
        for name in self.sign_headers:
            out += [name] * counts.get(name.lower().encode(), 0)
        return out

    def seal(self, message: Message, key: SigningKey, *, aar: str, chain_validation: str,
             timestamp: int | None = None) -> tuple[HeaderInsert, ...]:
        """The three inserts of the next ARC set (AAR, AMS, then AS on top). *message* is
        the message as it will be stored (`edited`); *aar* the whole AAR value with its
        ``i=`` (authresults.render_aar). Raises ArcSealError where RFC 8617 forbids a set."""
        if not any(header_key(n) == b"from" for n, _ in message.headers):
            raise ArcSealError("no From header to sign")
        aar_value, ams, seal_value = seal(message, key, srv_id="", aar_results="", aar=aar,
                                          chain_validation=chain_validation, timestamp=timestamp,
                                          sign_headers=self.ams_headers(message.headers))
        return (HeaderInsert(AAR_HEADER.decode(), aar_value), HeaderInsert(AMS_HEADER.decode(), ams),
                HeaderInsert(AS_HEADER.decode(), seal_value))


def chain_state(message: Message) -> Chain:
    """The ARC sets *message* carries, structurally (no DNS): whether there are any
    (`present`), what is broken (`defect`), the highest i= (`highest`)."""
    return collect(message.headers)


def edited(message: Message, deletions: Sequence[HeaderDelete], insertions: Sequence[HeaderInsert]) -> Message:
    """*message* as the MTA stores it after our edits, applied as `milter/apply.py` does:
    deletions (by name and occurrence), then each insertion at its index in turn."""
    headers = list(message.headers)
    doomed: set[int] = set()
    for d in deletions:
        key = d.name.lower().encode()
        positions = [i for i, (n, _) in enumerate(headers) if header_key(n) == key]
        if 1 <= d.index <= len(positions):
            doomed.add(positions[d.index - 1])
    headers = [h for i, h in enumerate(headers) if i not in doomed]
    for ins in insertions:
        headers.insert(min(max(ins.index, 0), len(headers)), (ins.name.encode(), ins.value.encode("utf-8")))
    return Message(headers=tuple(headers), body=message.body)
