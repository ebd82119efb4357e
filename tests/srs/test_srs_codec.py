"""srs.py: the SRS codec (Shevek's scheme as postsrsd writes it) and the rewrite rules."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from authmilter.srs import Reversal, SrsCodec, SrsRules, is_srs_local, read_secrets

DAY = 86400
NOW = 20_000 * DAY + 3600          # day 20000: slot 20000 % 1024 = 544 = 17*32 + 0, stamp "RA"


def codec(*secrets: bytes, max_age_days: int = 21) -> SrsCodec:
    return SrsCodec("srs.example.net", secrets or (b"topsecret",), max_age_days=max_age_days)


def test_srs0_has_the_spec_layout_and_an_hmac_sha1_hash_of_the_lowercased_fields():
    addr = codec().forward("Alice@Orig.Example", NOW)
    tag, hash_, stamp, host, rest = addr.split("=", 4)
    assert (tag, host, rest) == ("SRS0", "Orig.Example", "Alice@srs.example.net")
    assert stamp == SrsCodec.timestamp(NOW) == "RA"   # 20000 % 1024 = 544 = 17*32 + 0 -> R, A
    mac = hmac.new(b"topsecret", (stamp + "orig.example" + "alice").lower().encode(), hashlib.sha1)
    assert hash_ == base64.b64encode(mac.digest()).decode()[:4]


def test_forward_then_reverse_restores_the_address():
    c = codec()
    addr = c.forward("bob+tag@orig.example", NOW)
    rev = c.reverse(addr, NOW + 5 * DAY)
    assert rev.status is Reversal.RESTORED and rev.address == "bob+tag@orig.example"


def test_a_local_part_with_the_separator_survives():
    c = codec()
    addr = c.forward("a=b=c@orig.example", NOW)
    assert c.reverse(addr, NOW).address == "a=b=c@orig.example"


def test_hash_is_checked_case_insensitively():
    c = codec()
    addr = c.forward("bob@orig.example", NOW)
    for variant in (addr.lower(), addr.upper()):
        rev = c.reverse(variant, NOW)
        assert rev.status is Reversal.RESTORED
        assert rev.address.lower() == "bob@orig.example"


def test_forged_hash_is_refused():
    c = codec()
    addr = c.forward("bob@orig.example", NOW)
    tag, hash_, rest = addr.split("=", 2)
    forged = f"{tag}={'AAAA' if hash_ != 'AAAA' else 'BBBB'}={rest}"
    assert c.reverse(forged, NOW).status is Reversal.FORGED
    # a different user with the same hash: the hash covers the fields
    assert c.reverse(addr.replace("=bob@", "=mallory@"), NOW).status is Reversal.FORGED
    # another secret never verifies it
    assert codec(b"other").reverse(addr, NOW).status is Reversal.FORGED


def test_expiry_after_max_age_days():
    c = codec(max_age_days=21)
    addr = c.forward("bob@orig.example", NOW)
    assert c.reverse(addr, NOW + 21 * DAY).status is Reversal.RESTORED
    assert c.reverse(addr, NOW + 22 * DAY).status is Reversal.EXPIRED


def test_timestamp_wraps_every_1024_days():
    # Made on day 1023 (stamp "77"), read two days later (day 1025 -> slot 1).
    c = codec()
    addr = c.forward("bob@orig.example", 1023 * DAY)
    assert "=77=" in addr
    assert c.reverse(addr, 1025 * DAY).status is Reversal.RESTORED


def test_rotation_first_secret_signs_every_secret_verifies():
    old = codec(b"old-secret")
    rotated = codec(b"new-secret", b"old-secret")
    in_flight = old.forward("bob@orig.example", NOW)
    assert rotated.reverse(in_flight, NOW).address == "bob@orig.example"
    fresh = rotated.forward("bob@orig.example", NOW)
    assert fresh == codec(b"new-secret").forward("bob@orig.example", NOW) != in_flight
    assert old.reverse(fresh, NOW).status is Reversal.FORGED


def test_srs0_of_another_forwarder_becomes_srs1_and_reverses_to_it():
    theirs = SrsCodec("fwd.example", (b"their secret",)).forward("bob@orig.example", NOW)
    ours = codec()
    srs1 = ours.forward(theirs, NOW)
    assert srs1.startswith("SRS1=") and srs1.endswith("=fwd.example==" + theirs.split("=", 1)[1].rsplit("@", 1)[0]
                                                       + "@srs.example.net")
    back = ours.reverse(srs1, NOW)
    assert back.status is Reversal.RESTORED and back.address == theirs
    # SRS1 of an SRS1 keeps the first forwarder, so the chain does not grow.
    again = SrsCodec("third.example", (b"x",)).forward(srs1, NOW)
    assert again.split("=")[2] == "fwd.example" and again.count("@") == 1
    # ... and reverses straight to the first forwarder's SRS0 address.
    assert SrsCodec("third.example", (b"x",)).reverse(again, NOW).address == theirs


def test_srs1_forged_and_malformed():
    c = codec()
    srs1 = c.forward("SRS0=abcd=RA=orig.example=bob@fwd.example", NOW)
    assert c.reverse(srs1.replace("SRS1=", "SRS1=Q"), NOW).status is Reversal.FORGED
    assert c.reverse("SRS1=abcd@srs.example.net", NOW).status is Reversal.MALFORMED
    assert c.reverse("SRS0=abcd=RA@srs.example.net", NOW).status is Reversal.MALFORMED
    assert c.reverse("plain@srs.example.net", NOW).status is Reversal.NOT_SRS


def test_other_separators_are_read():
    c = codec()
    addr = c.forward("bob@orig.example", NOW)
    assert c.reverse("SRS0+" + addr[5:], NOW).status is Reversal.RESTORED
    assert is_srs_local("srs0-x") and not is_srs_local("SRS2=x") and not is_srs_local("SRS0")


def test_address_at_the_srs_domain_is_not_rewritten():
    assert codec().forward("x@SRS.example.net", NOW) == "x@SRS.example.net"


def test_secret_file_lines():
    assert read_secrets("first\r\n\nsecond\n") == (b"first", b"second")
    with pytest.raises(ValueError):
        SrsCodec("srs.example.net", ())


# -- the rules ---------------------------------------------------------------------------

def rules() -> SrsRules:
    local = {"example.com", "mail.example.com"}
    return SrsRules(codec(), is_local=lambda d: d in local, is_excluded=lambda d: d == "partner.example")


def test_rules_rewrite_only_foreign_senders():
    r = rules()
    assert r.forward_sender("bob@orig.example", NOW) == codec().forward("bob@orig.example", NOW)
    assert r.forward_sender("me@example.com", NOW) is None            # local domain
    assert r.forward_sender("me@Example.COM", NOW) is None            # case
    assert r.forward_sender("x@partner.example", NOW) is None         # excluded
    assert r.forward_sender("", NOW) is None                          # null sender
    assert r.forward_sender("postmaster", NOW) is None                # no domain
    ours = codec().forward("bob@orig.example", NOW)
    assert r.forward_sender(ours, NOW) is None                        # already ours


def test_rules_forward_needed_only_for_recipients_outside():
    r = rules()
    assert not r.forward_needed(["a@example.com", "b@mail.example.com", "c@srs.example.net"])
    assert r.forward_needed(["a@example.com", "friend@elsewhere.example"])


def test_rules_reverse_only_at_our_srs_domain():
    r = rules()
    addr = codec().forward("bob@orig.example", NOW)
    assert r.reverse_recipient(addr, NOW).address == "bob@orig.example"
    elsewhere = addr.replace("@srs.example.net", "@other.example")
    assert r.reverse_recipient(elsewhere, NOW).status is Reversal.NOT_SRS
    assert r.reverse_recipient("user@srs.example.net", NOW).status is Reversal.NOT_SRS
