"""ARC (RFC 8617): chain validation (§5.2) and sealing (§5.1) on the DKIM primitives.

An ARC set is three header fields sharing an instance number i=: the
ARC-Authentication-Results (AAR, a copy of the Authentication-Results with i= in front),
the ARC-Message-Signature (AMS, a DKIM-Signature over the message without v= and with
i= as instance) and the ARC-Seal (AS, a signature over the ARC sets 1..i, always
relaxed). Everything here reads `Message.headers` exactly as received and the body in
chunks through the shared `canon.BodyHasher`; keys come through the same `KeyFetcher`
(resolver) as DKIM. Remote data never raises: validation returns an `ArcResult`.

RFC 8601/8617 register only none, pass and fail for ``arc=``; a DNS failure that keeps
us from proving the chain is reported as none with a reason (no claim either way),
which is what the dkimpy-based check reported before.
"""
from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .. import model
from ..domain import DomainError, normalize_domain
from ..errors import AuthmilterError
from ..results import ArcResult, Result
from .canon import BodyDigest, BodySpec, body_digests, canon_header, parse_canons, select_headers
from .sign import SigningKey, fold, sign_bytes, signature_b64_len
from .tags import KeyRecord, Tag, TagListError, b64decode, parse_tag_list, show, split_list
from .verify import DIGITS, KeyFetcher, Stop, check_key, check_signature, lookup_key

AAR_HEADER = b"ARC-Authentication-Results"
AMS_HEADER = b"ARC-Message-Signature"
AS_HEADER = b"ARC-Seal"
MAX_INSTANCES = 50                                   # RFC 8617 §4.2.1
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")        # §4.1.2 names rsa-sha256; RFC 8463 adds Ed25519
CV_VALUES = ("none", "pass", "fail")                 # §4.1.3, case-sensitive like every tag value

_KINDS = {b"arc-authentication-results": "aar", b"arc-message-signature": "ams", b"arc-seal": "as"}
_AAR_INSTANCE = re.compile(rb"\A[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]+)[ \t\r\n]*;")


class ArcSealError(AuthmilterError):
    """seal() was asked for an ARC set RFC 8617 does not allow (or with bad arguments)."""


@dataclass
class ArcSet:
    """The header fields of one instance, as (index into Message.headers) per kind."""

    instance: int
    aar: list[int] = field(default_factory=list)
    ams: list[int] = field(default_factory=list)
    seal: list[int] = field(default_factory=list)


@dataclass
class Chain:
    """The ARC sets found in a message (§4.2), and what is structurally wrong with them."""

    sets: dict[int, ArcSet]
    highest: int = 0                 # the highest valid instance number seen
    defect: str = ""                 # the first structural problem; "" for a well-formed chain
    seal_tags: dict[int, Mapping[str, Tag]] = field(default_factory=dict)
    ams_tags: dict[int, Mapping[str, Tag]] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return bool(self.sets) or bool(self.defect)


def _instance(raw: bytes | None) -> int | None:
    """An i= value: 1 to 50 (§4.2.1), digits only."""
    if raw is None or not DIGITS.match(raw):
        return None
    n = int(raw)
    return n if 1 <= n <= MAX_INSTANCES else None


def collect(headers: Sequence[tuple[bytes, bytes]]) -> Chain:
    """Group the ARC header fields by instance and check the structure (§5.2 steps 1-2).

    A field whose i= cannot be read, a missing or duplicated member of a set, a gap in
    the numbering or more than 50 sets make the chain structurally broken (`defect`).
    """
    chain = Chain(sets={})
    defects: list[str] = []
    for index, (name, value) in enumerate(headers):
        kind = _KINDS.get(name.rstrip(b" \t").lower())
        if kind is None:
            continue
        if kind == "aar":
            m = _AAR_INSTANCE.match(value)
            n = _instance(m.group(1) if m else None)
            if n is None:
                defects.append("ARC-Authentication-Results without a valid i= first")
                continue
        else:
            try:
                tags = parse_tag_list(value, strict=True)
            except TagListError as exc:
                defects.append(f"malformed {name.decode('ascii', 'replace')}: {exc}")
                continue
            n = _instance(tags["i"].value if "i" in tags else None)
            if n is None:
                defects.append(f"{name.decode('ascii', 'replace')} without a valid i=")
                continue
            (chain.seal_tags if kind == "as" else chain.ams_tags)[n] = tags
        s = chain.sets.setdefault(n, ArcSet(n))
        getattr(s, "seal" if kind == "as" else kind).append(index)
        chain.highest = max(chain.highest, n)
    for n in range(1, chain.highest + 1):
        arc_set = chain.sets.get(n)
        if arc_set is None:
            defects.append(f"ARC set i={n} is missing")
            continue
        for kind, found in (("ARC-Authentication-Results", arc_set.aar), ("ARC-Message-Signature", arc_set.ams),
                            ("ARC-Seal", arc_set.seal)):
            if len(found) != 1:
                defects.append(f"{len(found)} {kind} fields for i={n}")
    chain.defect = defects[0] if defects else ""
    return chain


# ---------------------------------------------------------------------------
# validation (RFC 8617 §5.2)

def verify_chain(message: model.Message, fetch_key: KeyFetcher, *, min_rsa_bits: int = 1024,
                 now: int | None = None) -> ArcResult:
    """Validate the ARC chain of *message* (RFC 8617 §5.2).

    none: no ARC header fields (or a DNS failure kept us from deciding); fail: a broken
    structure (§5.2 steps 1-2), a cv= that contradicts the chain (§5.2 step 2: i=1 says
    none, later sets pass, never fail), the newest AMS not verifying (step 3) or any AS
    not verifying (step 5); pass otherwise, with oldest-pass (step 4): the lowest
    instance from which every AMS up to the newest still verifies.
    """
    headers = message.headers
    chain = collect(headers)
    if not chain.present:
        return ArcResult(Result.NONE)
    n = chain.highest
    domains = tuple(_text(chain.seal_tags[i]["d"].value) if "d" in chain.seal_tags.get(i, {}) else ""
                    for i in range(n, 0, -1))

    def fail(reason: str) -> ArcResult:
        return ArcResult(Result.FAIL, instances=n, reason=reason, domains=domains)

    if chain.defect:
        return fail(chain.defect)
    for i in range(1, n + 1):
        cv = chain.seal_tags[i].get("cv")
        if cv is None or cv.value.decode("ascii", "replace") not in CV_VALUES:
            return fail(f"ARC-Seal i={i} has no valid cv=")
        if cv.value == b"fail":
            return fail(f"ARC-Seal i={i} says cv=fail")
        if cv.value != (b"none" if i == 1 else b"pass"):
            return fail(f"ARC-Seal i={i} has cv={cv.value.decode('ascii', 'replace')}")
    clock = int(time.time()) if now is None else now
    # Every AMS body hash in one pass over the (spooled) body.
    specs = [s for s in (_ams_body_spec(chain.ams_tags[i]) for i in range(1, n + 1)) if s is not None]
    body_cache = body_digests(message.body, specs)
    try:
        _verify_ams(headers, chain, n, message.body, fetch_key, body_cache, min_rsa_bits, clock)
    except Stop as stop:
        return _stopped(stop, n, f"ARC-Message-Signature i={n}", domains)
    oldest = n
    for i in range(n - 1, 0, -1):
        try:
            _verify_ams(headers, chain, i, message.body, fetch_key, body_cache, min_rsa_bits, clock)
        except Stop:
            break           # older AMSs may legitimately break (modified messages); only oldest-pass says so
        oldest = i
    for i in range(n, 0, -1):
        try:
            _verify_seal(headers, chain, i, fetch_key, min_rsa_bits)
        except Stop as stop:
            return _stopped(stop, n, f"ARC-Seal i={i}", domains)
    return ArcResult(Result.PASS, instances=n, oldest_pass=oldest, domains=domains)


def _stopped(stop: Stop, n: int, what: str, domains: tuple[str, ...]) -> ArcResult:
    if stop.result is Result.TEMPERROR:
        return ArcResult(Result.NONE, instances=n, reason=f"temporary DNS failure: {stop.reason}", domains=domains)
    return ArcResult(Result.FAIL, instances=n, reason=f"{what}: {stop.reason}", domains=domains)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _ams_canons(tags: Mapping[str, Tag]) -> tuple[str, str] | None:
    """An AMS's c=; without one, relaxed/relaxed: RFC 8617 §4.1.2 leaves the default
    open, and validators (the ValiMail suite's ams_fields_c_na, dkimpy) take relaxed,
    the only canonicalization ARC sealers use."""
    return parse_canons(tags["c"].value) if "c" in tags else ("relaxed", "relaxed")


def _ams_body_spec(tags: Mapping[str, Tag]) -> BodySpec | None:
    algorithm = tags["a"].value.decode("ascii", "replace") if "a" in tags else ""
    canon = _ams_canons(tags)
    if algorithm not in ALGORITHMS or canon is None:
        return None
    length = int(tags["l"].value) if "l" in tags and DIGITS.match(tags["l"].value) else None
    return canon[1], algorithm.split("-")[1], length


def _common(tags: Mapping[str, Tag], what: str, required: Sequence[str]) -> tuple[str, str, str, bytes]:
    """Checks shared by AMS and AS: required tags, a=, d=, s=, t=; returns
    (algorithm, d=, s=, signature octets)."""
    for tag in required:
        if tag not in tags:
            raise Stop(Result.PERMERROR, f"missing required tag {tag}=")
    algorithm = tags["a"].value.decode("ascii", "replace")
    if algorithm not in ALGORITHMS:
        raise Stop(Result.PERMERROR, f"unsupported algorithm a={show(tags['a'].value)}")
    try:
        domain = normalize_domain(_text(tags["d"].value), allow_underscore=True)
        selector = normalize_domain(_text(tags["s"].value), allow_underscore=True)
    except DomainError:
        raise Stop(Result.PERMERROR, f"invalid d= or s= in {what}") from None
    for tag in ("t", "x"):
        if tag in tags and not DIGITS.match(tags[tag].value):
            raise Stop(Result.PERMERROR, f"{tag}= is not a number")
    try:
        sig = b64decode(tags["b"].value, "b=")
    except TagListError as exc:
        raise Stop(Result.PERMERROR, str(exc)) from None
    if not sig:
        raise Stop(Result.PERMERROR, "empty b=")
    return algorithm, domain, selector, sig


def _key(fetch_key: KeyFetcher, selector: str, domain: str, algorithm: str, min_rsa_bits: int
         ) -> tuple[KeyRecord, str]:
    """The key record for an ARC signature: the DKIM key rules (RFC 6376 §6.1.2) plus
    RFC 8301's minimum RSA size, which for ARC is a failure (there is no 'policy')."""
    record = lookup_key(fetch_key, selector, domain)
    check_key(record, algorithm)
    hash_name = algorithm.split("-")[1]
    if record.key_type == "rsa" and record.bits < min_rsa_bits:
        raise Stop(Result.PERMERROR, f"RSA key too short ({record.bits} bits, RFC 8301)")
    return record, hash_name


def _without_b(name: bytes, value: bytes, b_tag: Tag, canon: str) -> bytes:
    """The signature field itself as hashed: b= value (and its FWS) deleted, canonicalized,
    without its final CRLF (RFC 6376 §3.5, §3.7; RFC 8617 §4.1.2, §4.1.3)."""
    return canon_header(name, value[:b_tag.start] + value[b_tag.end:], canon)[:-2]


def _verify_ams(headers: Sequence[tuple[bytes, bytes]], chain: Chain, i: int, body: model.Body,
                fetch_key: KeyFetcher, body_cache: dict[BodySpec, BodyDigest], min_rsa_bits: int,
                now: int) -> None:
    """One AMS (RFC 8617 §4.1.2): a DKIM signature without v=, i= the instance.
    Raises Stop unless it verifies."""
    tags = chain.ams_tags[i]
    name, value = headers[chain.sets[i].ams[0]]
    algorithm, domain, selector, sig = _common(tags, "ARC-Message-Signature", ("a", "b", "bh", "d", "h", "s"))
    canon = _ams_canons(tags)
    if canon is None:
        raise Stop(Result.PERMERROR, f"unknown canonicalization c={show(tags['c'].value)}")
    h_list = list(split_list(tags["h"].value))
    if "arc-seal" in h_list:
        raise Stop(Result.PERMERROR, "h= includes ARC-Seal (RFC 8617 §4.1.2)")
    if "x" in tags and now > int(tags["x"].value):
        raise Stop(Result.FAIL, "signature expired")
    try:
        bh = b64decode(tags["bh"].value, "bh=")
    except TagListError as exc:
        raise Stop(Result.PERMERROR, str(exc)) from None
    spec = _ams_body_spec(tags)
    assert spec is not None   # a= and c= were checked above
    found = body_cache.get(spec)
    if found is None:
        found = body_cache[spec] = body_digests(body, [spec])[spec]
    if spec[2] is not None and spec[2] > found.length:
        raise Stop(Result.PERMERROR, "l= is longer than the body")
    if found.digest != bh:
        raise Stop(Result.FAIL, "body hash did not verify")
    record, hash_name = _key(fetch_key, selector, domain, algorithm, min_rsa_bits)
    data = b"".join(canon_header(n, v, canon[0]) for n, v in select_headers(headers, h_list))
    data += _without_b(name, value, tags["b"], canon[0])
    if not check_signature(record, hash_name, sig, data):
        raise Stop(Result.FAIL, "signature did not verify")


def seal_data(headers: Sequence[tuple[bytes, bytes]], chain: Chain, upto: int) -> bytes:
    """The relaxed header data an AS of instance *upto* signs before its own field
    (RFC 8617 §5.1.1): AAR, AMS, AS of every set 1..upto-1 in instance order, then the
    AAR and AMS of *upto*."""
    out = []
    for j in range(1, upto + 1):
        s = chain.sets[j]
        members = (s.aar[0], s.ams[0], s.seal[0]) if j < upto else (s.aar[0], s.ams[0])
        out += [canon_header(*headers[k], "relaxed") for k in members]
    return b"".join(out)


def _verify_seal(headers: Sequence[tuple[bytes, bytes]], chain: Chain, i: int, fetch_key: KeyFetcher,
                 min_rsa_bits: int) -> None:
    """One AS (RFC 8617 §4.1.3): relaxed, no h=. Raises Stop unless it verifies."""
    tags = chain.seal_tags[i]
    if "h" in tags:
        raise Stop(Result.PERMERROR, "h= is not allowed in ARC-Seal (RFC 8617 §4.1.3)")
    algorithm, domain, selector, sig = _common(tags, "ARC-Seal", ("a", "b", "cv", "d", "s"))
    record, hash_name = _key(fetch_key, selector, domain, algorithm, min_rsa_bits)
    name, value = headers[chain.sets[i].seal[0]]
    data = seal_data(headers, chain, i) + _without_b(name, value, tags["b"], "relaxed")
    if not check_signature(record, hash_name, sig, data):
        raise Stop(Result.FAIL, "signature did not verify")


# ---------------------------------------------------------------------------
# sealing (RFC 8617 §5.1)

_ARC_WIDTH = 72


def fold_tags(tags: list[tuple[str, str]], name: bytes) -> str:
    """An ARC tag-list folded for output (value starts with the space after the colon).

    b= starts a line and its base64 is cut every 72 columns counted from "b=": under
    relaxed canonicalization only breaks *inside* a value change the hashed text (a
    space appears there), and this is where the ValiMail suite's sealer breaks b=, so
    the ARC-Seal over our AMS is the one the suite's own later cases carry. Every other
    break is between tags, greedy at 72 columns, and canonicalizes away.
    """
    lines: list[str] = []
    line = ""
    width = _ARC_WIDTH - len(name) - 1
    for k, (tag, value) in enumerate(tags):
        token = f"{tag}={value}" + (";" if k < len(tags) - 1 else "")
        if tag == "b":
            pieces = [token[i:i + _ARC_WIDTH] for i in range(0, len(token), _ARC_WIDTH)]
            if line:
                lines.append(line)
            lines += pieces[:-1]
            line = pieces[-1]
            width = _ARC_WIDTH
            continue
        if line and len(line) + 1 + len(token) > width:
            lines.append(line)
            line, width = token, _ARC_WIDTH
        else:
            line = f"{line} {token}" if line else token
    lines.append(line)
    return " " + "\r\n ".join(lines)


def _signed_field(name: bytes, tags: list[tuple[str, str]], key: SigningKey, prefix: bytes
                  ) -> str:
    """Sign a relaxed tag-list field whose b= is among *tags* (value ignored): *prefix*
    is the header data hashed before the field itself. Returns the folded value."""
    def render(b_value: str) -> str:
        return fold_tags([(k, b_value if k == "b" else v) for k, v in tags], name)

    # A placeholder of the signature's length folds exactly like the signature, so the
    # unsigned field hashed here is the one we emit.
    draft = render("0" * signature_b64_len(key)).encode("ascii")
    b_tag = parse_tag_list(draft)["b"]
    sig = sign_bytes(key, prefix + _without_b(name, draft, b_tag, "relaxed"))
    return render(base64.b64encode(sig).decode("ascii"))


def seal(message: model.Message, key: SigningKey, *, srv_id: str = "", aar_results: str = "",
         chain_validation: str, timestamp: int | None = None, sign_headers: Sequence[str],
         aar: str | None = None) -> tuple[str, str, str]:
    """The next ARC set for *message*: (AAR value, AMS value, AS value) (RFC 8617 §5.1).

    *chain_validation* is the cv= this sealer found (§5.2, usually `verify_chain` on the
    message as received): "none" only when there is no chain yet, else "pass" or
    "fail"; a chain whose structure is broken can only be sealed with cv=fail, and then
    the AS covers the new set alone (§5.1.2). A chain whose newest seal already says
    cv=fail, or that has 50 sets, gets no further set (§4.2.1, §5.1): ArcSealError.
    *aar_results* is the resinfo part of our Authentication-Results ("spf=pass ...";
    "none" when empty). *aar*, instead of those two, is the whole AAR value as the caller
    rendered it (``" i=N; srv-id; resinfo..."``, authresults.render_aar); its i= must be
    the next instance. Both signatures are relaxed/relaxed, sha256 body hash.
    """
    if chain_validation not in CV_VALUES:
        raise ArcSealError(f"cv={chain_validation!r} is not none, pass or fail")
    if key.algorithm not in ALGORITHMS:
        raise ArcSealError(f"cannot seal with {key.algorithm}")
    headers = message.headers
    chain = collect(headers)
    n = chain.highest + 1
    if n > MAX_INSTANCES:
        raise ArcSealError(f"the chain already has {MAX_INSTANCES} ARC sets (RFC 8617 §4.2.1)")
    newest = chain.seal_tags.get(chain.highest)
    if newest is not None and "cv" in newest and newest["cv"].value == b"fail":
        raise ArcSealError(f"ARC-Seal i={chain.highest} already says cv=fail: the chain ends there (RFC 8617 §5.1)")
    if n == 1 and chain_validation != "none" and not chain.defect:
        raise ArcSealError("no ARC chain yet: cv must be none (RFC 8617 §4.1.3)")
    if n > 1 and chain_validation == "none":
        raise ArcSealError("an existing ARC chain is either pass or fail, not none (RFC 8617 §4.1.3)")
    if chain.defect and chain_validation != "fail":
        raise ArcSealError(f"a broken chain is sealed only with cv=fail ({chain.defect})")
    h_list = [h.lower() for h in sign_headers]
    if "arc-seal" in h_list:
        raise ArcSealError("an ARC-Message-Signature must not sign ARC-Seal (RFC 8617 §4.1.2)")
    t = str(int(time.time()) if timestamp is None else int(timestamp))
    if aar is None:
        results = aar_results.strip() or "none"
        aar = " " + fold(f"i={n}; {srv_id}; {results}", AAR_HEADER)
    else:
        m = _AAR_INSTANCE.match(aar.encode("utf-8"))
        if m is None or int(m.group(1)) != n:
            raise ArcSealError(f"the ARC-Authentication-Results given is not for i={n}")

    spec = ("relaxed", "sha256", None)
    bh = base64.b64encode(body_digests(message.body, [spec])[spec].digest).decode("ascii")
    ams_data = b"".join(canon_header(nm, v, "relaxed") for nm, v in select_headers(headers, h_list))
    ams = _signed_field(AMS_HEADER, [("a", key.algorithm), ("b", ""), ("bh", bh), ("c", "relaxed/relaxed"),
                                     ("d", key.domain), ("h", ":".join(h_list)), ("i", str(n)),
                                     ("s", key.selector), ("t", t)], key, ams_data)

    own = canon_header(AAR_HEADER, aar.encode("utf-8"), "relaxed") + canon_header(AMS_HEADER, ams.encode(), "relaxed")
    prior = b"" if chain_validation == "fail" else seal_data(headers, chain, n - 1) + _last_seal(headers, chain, n - 1)
    seal_value = _signed_field(AS_HEADER, [("a", key.algorithm), ("b", ""), ("cv", chain_validation),
                                           ("d", key.domain), ("i", str(n)), ("s", key.selector), ("t", t)],
                               key, prior + own)
    return aar, ams, seal_value


def _last_seal(headers: Sequence[tuple[bytes, bytes]], chain: Chain, i: int) -> bytes:
    """The AS of instance *i* as the next seal signs it (with its b=), or b"" for i=0."""
    if i < 1:
        return b""
    return canon_header(*headers[chain.sets[i].seal[0]], "relaxed")
