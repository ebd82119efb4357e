"""authmilter: one milter for DKIM signing and SPF/DKIM/DMARC/ARC verification."""
__version__ = "0.1.0"


def _plain_dns_only() -> None:
    """authmilter asks DNS over UDP and TCP only. dnspython imports an HTTP/2 stack for
    DNS over HTTPS (and QUIC, trio) whenever those packages are installed, as they are
    beside parsedmarc: about 6 MB and 110 modules in every daemon process, for nothing.
    dns._features.force is dnspython's documented switch for this, and must run before
    dns.query is first imported."""
    try:
        from dns import _features
    except ImportError:          # dnspython < 2.5: no feature switches, nothing to save
        return
    force = getattr(_features, "force", None)
    if force is not None:
        for feature in ("doh", "doq", "trio"):
            force(feature, False)


_plain_dns_only()
