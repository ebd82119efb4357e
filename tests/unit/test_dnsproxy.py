"""tests/infra/dnsproxy.py (the bench's delaying DNS proxy) forwards UDP and TCP queries
to its upstream unchanged and holds each answer: the answers are the upstream's, with the
client's own query id, and its log shows every answer held. No timing is asserted: the
proxy's log shows each answer's hold and the latency it was given."""
from __future__ import annotations

import re
import subprocess

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from infra import dnsproxy
from infra.procs import Process, free_port, wait_for


@pytest.fixture
def proxy(dns_server, tmp_path):
    port = free_port()
    upstream = (dns_server.host, dns_server.port)
    proc = Process("dnsproxy", dnsproxy.command(("127.0.0.1", port), upstream, 30.0, verbose=True),
                   tmp_path / "dnsproxy.log").start()
    try:
        wait_for(lambda: "ready udp+tcp" in proc.log_tail() or not proc.running, "the proxy to listen")
        assert proc.running, proc.log_tail()
        yield proc, port
    finally:
        proc.stop()


def _txt(msg: dns.message.Message) -> list[bytes]:
    return [b"".join(rd.strings) for rrset in msg.answer if rrset.rdtype == dns.rdatatype.TXT for rd in rrset]


def test_forwards_and_holds_udp_and_tcp(dns_server, proxy):
    proc, port = proxy
    dns_server.add_txt("d1.test", "v=spf1 include:_spf.d1.test -all")
    dns_server.add_txt("sel._domainkey.d2.test", "v=DKIM1; p=" + "A" * 600)    # > 512 octets

    q1 = dns.message.make_query("d1.test", "TXT", id=4242)
    a1 = dns.query.udp(q1, "127.0.0.1", port=port, timeout=10)
    assert a1.id == 4242 and _txt(a1) == [b"v=spf1 include:_spf.d1.test -all"]

    q2 = dns.message.make_query("sel._domainkey.d2.test", "TXT", id=777)
    a2 = dns.query.tcp(q2, "127.0.0.1", port=port, timeout=10)
    assert a2.id == 777 and _txt(a2) == [b"v=DKIM1; p=" + b"A" * 600]

    q3 = dns.message.make_query("nothing.test", "TXT")
    a3 = dns.query.udp(q3, "127.0.0.1", port=port, timeout=10)
    assert a3.rcode() == dns.rcode.NXDOMAIN

    # every query reached the upstream (no cache in the proxy): ask d1.test again
    dns.query.udp(dns.message.make_query("d1.test", "TXT"), "127.0.0.1", port=port, timeout=10)
    asked = [name for name, _ in dns_server.queries]
    assert asked.count("d1.test") == 2 and "sel._domainkey.d2.test" in asked

    proc.stop()
    log = proc.log_tail(20000)
    holds = re.findall(r"^(udp|tcp) (\S+) (\S+) id=(\d+) held ([\d.]+) ms$", log, re.M)
    assert ("udp", "d1.test.", "TXT", "4242") in [h[:4] for h in holds]
    assert ("tcp", "sel._domainkey.d2.test.", "TXT", "777") in [h[:4] for h in holds]
    assert "latency 30.0 ms" in log          # the hold it was told to apply (no clock is read here)
    assert "queries udp=3 tcp=1 dropped=0" in log


def test_command_runs_from_anywhere(tmp_path):
    out = subprocess.run(dnsproxy.command(("127.0.0.1", 1), ("127.0.0.1", 2), 5.0)[:2] + ["--help"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert out.returncode == 0 and "--latency-ms" in out.stdout
