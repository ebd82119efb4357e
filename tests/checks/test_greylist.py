"""checks/greylist.py and the RCPT-stage rules of policy.py: pure, with an in-memory store."""
from __future__ import annotations

import pytest

from authmilter.checks import greylist as gl
from authmilter.outcome import Action
from authmilter.policy import greylist_decision, greylist_exemption, greylist_store_error


class MemoryStore:
    """The store port's get/put with expiry, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.data: dict[str, tuple[bytes, float]] = {}

    def get(self, key: str) -> bytes | None:
        value = self.data.get(key)
        return value[0] if value is not None and value[1] > self.now else None

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self.data[key] = (value, self.now + ttl_s)


P = gl.GreylistParams(delay_s=300, retry_window_s=2 * 86400, auto_allow_after=2, max_age_s=35 * 86400)


def attempt(store: MemoryStore, t: float, ip: str = "192.0.2.1", sender: str = "a@example.org",
            rcpt: str = "bob@mx.test", spf: str = "") -> gl.GreylistResult:
    store.now = t
    triplet = gl.Triplet(gl.identity(ip, spf_domain=spf), gl.normalize_sender(sender), rcpt)
    return gl.check(store, triplet, t, P)


@pytest.mark.parametrize(("given", "kept"), [
    ("Alice@Example.ORG", "alice@example.org"),
    ("SRS0=HHH=TT=example.org=alice@forwarder.example", "alice@example.org"),
    ("SRS1=XX=fwd1.example==HHH=TT=example.org=alice@fwd2.example", "alice@example.org"),
    ("prvs=0123abcd=bounce@example.org", "bounce@example.org"),
    ("msprvs1=18006LrDnZB4q=bounces@example.org", "bounces@example.org"),
    ("list-bounces+bob=mx.test@lists.example", "list-bounces@lists.example"),
    ("bounce-1234-5678@mailer.example", "bounce-#-#@mailer.example"),
    ("", ""),
])
def test_sender_normalisation_removes_per_message_tags(given: str, kept: str) -> None:
    assert gl.normalize_sender(given) == kept


def test_client_networks_are_ipv4_24_and_ipv6_64_by_default() -> None:
    assert gl.client_network("192.0.2.77") == "192.0.2.0/24"
    assert gl.client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert gl.client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert gl.client_network("192.0.2.77", ipv4_prefix=32) == "192.0.2.77/32"


def test_a_new_triplet_is_deferred_until_delay_then_passes() -> None:
    s = MemoryStore()
    r = attempt(s, 1000)
    assert (r.passed, r.reason, r.retry_at) == (False, "new", 1300)
    r = attempt(s, 1200)   # too early: the first attempt's clock keeps running
    assert (r.passed, r.reason, r.retry_at) == (False, "too early", 1300)
    assert attempt(s, 1300).passed
    assert attempt(s, 5000).reason == "known"


def test_a_first_attempt_not_retried_within_the_window_is_forgotten() -> None:
    s = MemoryStore()
    attempt(s, 0)
    assert attempt(s, 2 * 86400 + 1).reason == "new"


def test_the_spf_domain_replaces_the_network_so_a_pool_retry_matches() -> None:
    s = MemoryStore()
    assert not attempt(s, 0, ip="198.51.100.7", spf="pool.example").passed
    r = attempt(s, 301, ip="203.0.113.9", spf="pool.example")
    assert r.passed and r.identity == "spf:pool.example"
    # Once passed, the domain is known for this recipient whatever the local part.
    assert attempt(s, 400, ip="203.0.113.99", sender="other@pool.example", spf="pool.example").reason == \
        "known domain and recipient"
    # ... but not for another recipient, and never without SPF pass.
    assert not attempt(s, 400, ip="203.0.113.99", rcpt="carol@mx.test", spf="pool.example").passed
    assert not attempt(s, 400, ip="203.0.113.99", sender="other@pool.example").passed


def test_auto_allow_after_n_passed_retries_per_identity() -> None:
    s = MemoryStore()
    for n, rcpt in enumerate(("r1@mx.test", "r2@mx.test")):
        attempt(s, n * 1000, rcpt=rcpt)
        assert attempt(s, n * 1000 + 300, rcpt=rcpt).passed
    r = attempt(s, 5000, rcpt="new@mx.test")
    assert r.passed and r.reason == "auto-allowed"


def test_store_errors_propagate_to_the_caller() -> None:
    class Down:
        def get(self, key: str) -> bytes | None:
            raise OSError("down")

        def put(self, key: str, value: bytes, ttl_s: float) -> None:
            raise OSError("down")

    with pytest.raises(OSError):
        gl.check(Down(), gl.Triplet("net:192.0.2.0/24", "a@b", "c@d"), 0, P)


def test_deferral_is_451_4_7_1_saying_when_to_retry() -> None:
    d = greylist_decision(gl.GreylistResult(False, "net:192.0.2.0/24", "new", retry_at=1300), now=1000)
    assert (d.action, d.code, d.xcode) == (Action.TEMPFAIL, "451", "4.7.1")
    assert "try again in 300 seconds" in d.text and "1970-01-01 00:21:40 UTC" in d.text
    assert greylist_decision(gl.GreylistResult(True, "x", "known"), 0).action is Action.ACCEPT


def test_on_store_error_accepts_or_tempfails() -> None:
    assert greylist_store_error("accept", "down").action is Action.ACCEPT
    d = greylist_store_error("tempfail", "down")
    assert (d.action, d.code) == (Action.TEMPFAIL, "451")


@pytest.mark.parametrize("kw", [{"outbound": "authenticated"}, {"internal_host": True}, {"trusted_relay": True},
                                {"dnswl_listed": True},
                                {"client_allowed": True}, {"recipient_allowed": True}])
def test_never_greylisted(kw: dict) -> None:
    assert greylist_exemption(**kw)


def test_greylisted_when_nothing_exempts() -> None:
    assert greylist_exemption() == ""
