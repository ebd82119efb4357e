"""A small SMTP server on 127.0.0.1 for the report tests: it accepts what it is sent
and keeps it (envelope and bytes), or refuses recipients it is told to refuse.

RFC 5321 just enough for smtplib: EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing,
RSET, NOOP, QUIT. Started and stopped by the test that uses it.
"""
from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class Delivered:
    mail_from: str
    rcpts: list[str]
    data: bytes


@dataclass
class SinkState:
    messages: list[Delivered] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)        # recipients answered with 550
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        state = self.server.state
        self.reply("220 sink.test ESMTP")
        mail_from, rcpts = "", []
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-sink.test" if verb == "EHLO" else "250 sink.test")
                if verb == "EHLO":
                    self.reply("250 8BITMIME")
            elif verb == "MAIL":
                mail_from, rcpts = cmd.split(":", 1)[1].strip().split(" ")[0].strip("<>"), []
                self.reply("250 ok")
            elif verb == "RCPT":
                rcpt = cmd.split(":", 1)[1].strip().split(" ")[0].strip("<>")
                if rcpt.lower() in state.refuse:
                    self.reply("550 5.1.1 no such user")
                else:
                    rcpts.append(rcpt)
                    self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                chunks = []
                while True:
                    data = self.rfile.readline(1 << 20)
                    if not data or data == b".\r\n":
                        break
                    chunks.append(data[1:] if data.startswith(b".") else data)
                with state.lock:
                    state.messages.append(Delivered(mail_from, rcpts, b"".join(chunks)))
                self.reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: SinkState


class SmtpSink:
    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = SinkState()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def state(self) -> SinkState:
        return self.server.state

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> SmtpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
