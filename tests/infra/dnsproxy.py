"""A DNS proxy that adds a fixed latency to every answer, for bench/ (and its test).

It listens on UDP and TCP, forwards each query unchanged (no cache, no rewriting beyond
the 16-bit query id it needs to multiplex UDP) to one upstream server — the bench's
knotd — and holds the upstream's answer until ``latency`` has passed since the query
arrived. So every lookup costs what it costs on the internet, whichever resolver library
the daemon under test uses (authmilter's `[dns] servers`, OpenDKIM's libunbound,
libspf2/OpenDMARC through resolv.conf, rspamd's `dns { nameserver }`): the answer is
never faster than ``latency``, and nothing is cached, so a cold name stays cold.

Run it as a process (`DnsProxy.command()` builds the argv)::

    python -m infra.dnsproxy --listen 127.77.53.1:53 --upstream 127.0.0.1:5300 --latency-ms 20 [-v]

It prints ``ready udp+tcp HOST:PORT`` once both sockets listen. ``-v`` logs one line per
query (``udp d1.test. TXT id=… held 20.0 ms``); on SIGTERM it prints the counts
(``queries udp=N tcp=M dropped=K``).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import struct
import sys
import time
from pathlib import Path

UPSTREAM_TIMEOUT_S = 10.0


def _describe(wire: bytes) -> str:
    """'qname qtype' of a DNS message, for the log (dnspython only when logging)."""
    try:
        import dns.message

        msg = dns.message.from_wire(wire, ignore_trailing=True)
        q = msg.question[0]
        import dns.rdatatype

        return f"{q.name} {dns.rdatatype.to_text(q.rdtype)}"
    except Exception:  # noqa: BLE001 - a log line, never a failure
        return "?"


class _Stats:
    def __init__(self) -> None:
        self.udp = 0
        self.tcp = 0
        self.dropped = 0


class _UpstreamUDP(asyncio.DatagramProtocol):
    """One connected UDP socket to the upstream; answers matched back by the id we gave."""

    def __init__(self, proxy: DelayingProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.proxy._udp_answer(data)


class _ListenUDP(asyncio.DatagramProtocol):
    def __init__(self, proxy: DelayingProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.proxy._udp_query(data, addr)


class DelayingProxy:
    """The proxy itself (asyncio); `serve()` runs it until cancelled."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], latency_s: float,
                 verbose: bool = False) -> None:
        self.listen = listen
        self.upstream = upstream
        self.latency_s = latency_s
        self.verbose = verbose
        self.stats = _Stats()
        self._ids = itertools.count()
        # our id -> (client address, client's id, arrival time)
        self._pending: dict[int, tuple[tuple[str, int], bytes, float]] = {}
        self._listen_udp: _ListenUDP | None = None
        self._up: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _log(self, proto: str, wire: bytes, t0: float) -> None:
        if self.verbose:
            held = (time.monotonic() - t0) * 1e3
            print(f"{proto} {_describe(wire)} id={struct.unpack('!H', wire[:2])[0]} held {held:.1f} ms", flush=True)

    # -- UDP ----------------------------------------------------------------------------
    def _udp_query(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or self._up is None:
            return
        self.stats.udp += 1
        for _ in range(65536):
            qid = next(self._ids) & 0xFFFF
            if qid not in self._pending:
                break
        else:
            self.stats.dropped += 1
            return
        self._pending[qid] = (addr, data[:2], time.monotonic())
        self._up.sendto(struct.pack("!H", qid) + data[2:])

    def _udp_answer(self, data: bytes) -> None:
        if len(data) < 12:
            return
        (qid,) = struct.unpack("!H", data[:2])
        entry = self._pending.pop(qid, None)
        if entry is None:
            return
        addr, client_id, t0 = entry
        answer = client_id + data[2:]
        assert self._loop is not None
        due = t0 + self.latency_s
        self._loop.call_later(max(0.0, due - time.monotonic()), self._udp_send, answer, addr, t0)

    def _udp_send(self, answer: bytes, addr: tuple[str, int], t0: float) -> None:
        if self._listen_udp is not None and self._listen_udp.transport is not None:
            self._listen_udp.transport.sendto(answer, addr)
            self._log("udp", answer, t0)

    async def _expire(self) -> None:
        """Forget UDP queries the upstream never answered (the client retries by itself)."""
        while True:
            await asyncio.sleep(UPSTREAM_TIMEOUT_S)
            old = time.monotonic() - UPSTREAM_TIMEOUT_S
            for qid in [q for q, (_, _, t0) in self._pending.items() if t0 < old]:
                del self._pending[qid]
                self.stats.dropped += 1

    # -- TCP ----------------------------------------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    head = await reader.readexactly(2)
                    query = await reader.readexactly(struct.unpack("!H", head)[0])
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                self.stats.tcp += 1
                task = asyncio.ensure_future(self._tcp_one(query, writer, time.monotonic()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=UPSTREAM_TIMEOUT_S + self.latency_s)
        finally:
            writer.close()

    async def _tcp_one(self, query: bytes, writer: asyncio.StreamWriter, t0: float) -> None:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(*self.upstream), UPSTREAM_TIMEOUT_S)
            try:
                w.write(struct.pack("!H", len(query)) + query)
                await w.drain()
                n = struct.unpack("!H", await asyncio.wait_for(r.readexactly(2), UPSTREAM_TIMEOUT_S))[0]
                answer = await asyncio.wait_for(r.readexactly(n), UPSTREAM_TIMEOUT_S)
            finally:
                w.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            self.stats.dropped += 1
            return
        await asyncio.sleep(max(0.0, t0 + self.latency_s - time.monotonic()))
        if not writer.is_closing():
            writer.write(struct.pack("!H", len(answer)) + answer)
            self._log("tcp", answer, t0)

    # -- running ------------------------------------------------------------------------
    async def serve(self, ready: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        up_transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _UpstreamUDP(self), remote_addr=self.upstream)
        self._up = up_transport  # type: ignore[assignment]
        self._listen_udp = _ListenUDP(self)
        udp_transport, _ = await self._loop.create_datagram_endpoint(lambda: self._listen_udp,
                                                                     local_addr=self.listen)
        server = await asyncio.start_server(self._tcp_client, *self.listen, reuse_address=True)
        expire = asyncio.ensure_future(self._expire())
        print(f"ready udp+tcp {self.listen[0]}:{self.listen[1]} -> {self.upstream[0]}:{self.upstream[1]} "
              f"latency {self.latency_s * 1e3:.1f} ms", flush=True)
        if ready is not None:
            ready.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            expire.cancel()
            udp_transport.close()
            up_transport.close()
            print(f"queries udp={self.stats.udp} tcp={self.stats.tcp} dropped={self.stats.dropped}", flush=True)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def command(listen: tuple[str, int], upstream: tuple[str, int], latency_ms: float, verbose: bool = False) -> list[str]:
    """The argv that runs this proxy as its own process (from any working directory)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--listen", f"{listen[0]}:{listen[1]}",
            "--upstream", f"{upstream[0]}:{upstream[1]}", "--latency-ms", str(latency_ms)]
    return argv + (["-v"] if verbose else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT to listen on (UDP and TCP)")
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the DNS server to forward to")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="hold every answer this long after its query")
    ap.add_argument("-v", "--verbose", action="store_true", help="one log line per answer")
    a = ap.parse_args(argv)
    proxy = DelayingProxy(_hostport(a.listen), _hostport(a.upstream), a.latency_ms / 1e3, a.verbose)

    async def run() -> None:
        task = asyncio.ensure_future(proxy.serve())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
