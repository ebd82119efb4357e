"""A small authoritative DNS server on loopback for the test suite.

It answers real UDP and TCP queries (so the production dnspython resolver path runs),
from records the tests add at run time, and can be told to time out, SERVFAIL or
REFUSE for chosen names to exercise temperror handling. Every query is logged.

With ``delay_s`` set (or between `hold` and `release`), every answer is held that long before it is sent (each in its own
thread, so queries overlap as they would with a distant server), and ``events`` records
in arrival order when each query came in and when its answer went out: tests read
ordering and overlap from it (``max_in_flight``), never wall-clock time.
"""
from __future__ import annotations

import functools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

IN = dns.rdataclass.IN
SOA_TEXT = "ns.test. hostmaster.test. 1 3600 600 86400 60"


def txt_rdata(value: str | bytes | Iterable[bytes | str]) -> dns.rdata.Rdata:
    """A TXT rdata; a long single value is split into 255-octet character-strings."""
    if isinstance(value, (str, bytes)):
        data = value.encode("utf-8") if isinstance(value, str) else value
        chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    else:
        chunks = [v.encode("utf-8") if isinstance(v, str) else v for v in value]
    return dns.rdtypes.ANY.TXT.TXT(IN, dns.rdatatype.TXT, chunks)


def udp_queries(sock: socket.socket, alive: Callable[[], bool]) -> Iterator[tuple[bytes, Any]]:
    """(wire, peer) of each datagram arriving on *sock* while *alive()*; *sock* has a
    short timeout, so *alive* is looked at between datagrams; a closed socket ends it."""
    while alive():
        try:
            wire, peer = sock.recvfrom(65535)
        except TimeoutError:
            continue
        except OSError:
            return
        yield wire, peer


class DNSServer:
    """Authoritative for whatever names it holds; NXDOMAIN for the rest."""

    def __init__(self, host: str = "127.0.0.1", ttl: int = 300) -> None:
        self.host = host
        self.ttl = ttl
        self.port = 0
        self._records: dict[str, list[dns.rdata.Rdata]] = {}
        self._faults: dict[str, str] = {}
        self._lock = threading.Lock()
        self.queries: list[tuple[str, str]] = []
        # ("query" | "answer" | "dropped", name, type) in the order they happened.
        self.events: list[tuple[str, str, str]] = []
        self.delay_s = 0.0
        self._open = threading.Event()        # cleared by hold(): answers wait for release()
        self._open.set()
        self._changed = threading.Condition(self._lock)
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._running = False

    # -- data -------------------------------------------------------------
    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".")

    def add(self, name: str, rdtype: str, value: str | bytes | dns.rdata.Rdata) -> None:
        """Add one record. TXT values are raw text (no zone-file quoting needed)."""
        rdtype = rdtype.upper()
        if isinstance(value, dns.rdata.Rdata):
            rd = value
        elif rdtype in ("TXT", "SPF"):
            rd = txt_rdata(value)
            if rdtype == "SPF":
                rd = dns.rdata.from_wire(IN, dns.rdatatype.SPF, rd.to_wire(), 0, len(rd.to_wire()))
        else:
            text = value.decode() if isinstance(value, bytes) else value
            rd = dns.rdata.from_text(IN, dns.rdatatype.from_text(rdtype), text, origin=dns.name.root,
                                    relativize=False)
        with self._lock:
            self._records.setdefault(self._key(name), []).append(rd)

    def add_txt(self, name: str, value: str | bytes | Iterable[bytes | str]) -> None:
        with self._lock:
            self._records.setdefault(self._key(name), []).append(txt_rdata(value))

    def remove(self, name: str, rdtype: str | None = None) -> None:
        key = self._key(name)
        with self._lock:
            if rdtype is None:
                self._records.pop(key, None)
            else:
                t = dns.rdatatype.from_text(rdtype)
                self._records[key] = [r for r in self._records.get(key, []) if r.rdtype != t]

    def set_fault(self, name: str, fault: str | None) -> None:
        """fault: 'timeout' (no answer), 'servfail', 'refused', or None to clear.

        A name starting with '*.' applies to everything below it."""
        if fault not in (None, "timeout", "servfail", "refused"):
            raise ValueError(fault)
        with self._lock:
            if fault is None:
                self._faults.pop(self._key(name), None)
            else:
                self._faults[self._key(name)] = fault

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._faults.clear()
            self.queries.clear()
            self.events.clear()
            self.delay_s = 0.0
        self._open.set()

    def hold(self) -> None:
        """Keep every answer (each in its own thread) until `release` (or 30 s, anti-hang)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_until(self, predicate: Callable[[DNSServer], bool], timeout: float = 30.0) -> bool:
        """Wait (at most *timeout*, an anti-hang bound) until *predicate(self)* holds;
        it is evaluated whenever a query arrives or an answer leaves."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
            return True

    def wait_quiet(self, quiet_s: float = 1.0, timeout: float = 30.0) -> bool:
        """Wait until no query arrived for *quiet_s* (bounded by *timeout*)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                seen = len(self.events)
            time.sleep(quiet_s)
            with self._lock:
                if len(self.events) == seen:
                    return True
        return False

    @property
    def max_in_flight(self) -> int:
        """The most queries that had arrived and were not yet answered at one moment."""
        with self._lock:
            now = peak = 0
            for kind, _, _ in self.events:
                now += 1 if kind == "query" else -1
                peak = max(peak, now)
            return peak

    def _answered(self, name: str, qtype: str) -> None:
        with self._changed:
            self.events.append(("answer", name, qtype))
            self._changed.notify_all()

    def _reply_later(self, send: Callable[[], None], name: str, qtype: str) -> None:
        """Send after delay_s (in this thread), logging the answer as it leaves."""
        self._open.wait(30.0)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        self._answered(name, qtype)
        send()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    # -- answering ----------------------------------------------------------
    def _fault_for(self, name: str) -> str | None:
        if name in self._faults:
            return self._faults[name]
        labels = name.split(".")
        for i in range(1, len(labels) + 1):
            wild = "*." + ".".join(labels[i:]) if i < len(labels) else "*"
            if wild in self._faults:
                return self._faults[wild]
        return None

    def _exists(self, name: str) -> bool:
        if name in self._records:
            return True
        suffix = "." + name
        return any(k.endswith(suffix) for k in self._records)

    def respond(self, wire: bytes) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        q = query.question[0]
        name = q.name.to_text(omit_final_dot=True).lower()
        qtype = q.rdtype
        with self._changed:
            self.queries.append((name, dns.rdatatype.to_text(qtype)))
            self.events.append(("query", name, dns.rdatatype.to_text(qtype)))
            self._changed.notify_all()
            fault = self._fault_for(name)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            if fault == "timeout":
                self.events.append(("dropped", name, dns.rdatatype.to_text(qtype)))
                return None
            if fault == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
                return response
            if fault == "refused":
                response.set_rcode(dns.rcode.REFUSED)
                return response
            current, owner = name, q.name
            for _ in range(8):  # follow CNAMEs within our data
                rds = self._records.get(current, [])
                matching = [r for r in rds if r.rdtype == qtype]
                cnames = [r for r in rds if r.rdtype == dns.rdatatype.CNAME]
                if matching:
                    rrset = dns.rrset.RRset(owner, IN, qtype)
                    for r in matching:
                        rrset.add(r, self.ttl)
                    response.answer.append(rrset)
                    return response
                if cnames and qtype != dns.rdatatype.CNAME:
                    rrset = dns.rrset.RRset(owner, IN, dns.rdatatype.CNAME)
                    rrset.add(cnames[0], self.ttl)
                    response.answer.append(rrset)
                    current = cnames[0].target.to_text(omit_final_dot=True).lower()
                    owner = cnames[0].target
                    continue
                break
            soa = dns.rrset.from_text(dns.name.from_text(current.split(".")[-1] or "."), 60, IN, "SOA", SOA_TEXT)
            response.authority.append(soa)
            if not self._exists(current):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return response

    # -- serving ------------------------------------------------------------
    def start(self) -> DNSServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            udp.settimeout(0.2)
            tcp.settimeout(0.2)
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise RuntimeError("no free port for the test DNS server")
        self._running = True
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True, name=f"testdns-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._running = False
        for s in (self._udp, self._tcp):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        for t in self._threads:
            t.join(timeout=2)
        self._threads.clear()

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        sock = self._udp
        for wire, peer in udp_queries(sock, lambda: self._running):
            try:
                response = self.respond(wire)
            except Exception:  # a test server must survive bad data; the query just times out
                continue
            if response is None:
                continue
            if self.delay_s > 0 or not self._open.is_set():
                threading.Thread(target=self._send_udp, args=(sock, response, peer), daemon=True).start()
            else:
                self._send_udp(sock, response, peer)

    def _send_udp(self, sock: socket.socket, response: dns.message.Message, peer: object) -> None:
        q = response.question[0]
        name, qtype = q.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(q.rdtype)

        def send() -> None:
            try:
                max_size = 512
                if response.edns >= 0:
                    max_size = max(512, response.payload)
                try:
                    out = response.to_wire(max_size=max_size)
                except dns.exception.TooBig:
                    response.answer.clear()
                    response.authority.clear()
                    response.flags |= dns.flags.TC
                    out = response.to_wire()
                sock.sendto(out, peer)
            except (OSError, dns.exception.DNSException):
                pass

        self._reply_later(send, name, qtype)

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while self._running:
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle_tcp, args=(conn,), daemon=True).start()

    def _handle_tcp(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            while self._running:
                head = _recv_exact(conn, 2)
                if not head:
                    return
                (length,) = struct.unpack("!H", head)
                wire = _recv_exact(conn, length)
                if not wire:
                    return
                response = self.respond(wire)
                if response is None:
                    continue  # timeout fault: say nothing
                out = response.to_wire()
                q = response.question[0]
                self._reply_later(functools.partial(conn.sendall, struct.pack("!H", len(out)) + out),
                                  q.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(q.rdtype))
        except OSError:
            return
        finally:
            conn.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data
