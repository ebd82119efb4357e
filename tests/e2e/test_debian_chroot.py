"""Debian's stock chroot settings (issue 10, item 2): a Postfix whose master.cf has the
chroot column of Debian's shipped ``/usr/share/postfix/master.cf.dist`` (smtpd *and*
cleanup chrooted in the queue directory), configured with exactly the ``smtpd_milters``
and ``non_smtpd_milters`` lines ``authmilter check-config`` printed for it, carries SMTP
mail and sendmail(1) mail through authmilter's unix socket in the spool. The SRS socketmap
sits beside it in the spool, and the chrooted cleanup(8) reaches it through the
``sender_canonical_maps`` / ``recipient_canonical_maps`` lines check-config printed.

A second Postfix and authmilter of its own, beside the session's (its knot is shared).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from infra.procs import stop_all
from support import require

from authmilter.srs import SrsCodec

from .conftest import SENDER_IP
from .harness import POSTCONF, Authmilter, Postfix, copy_logs, header_values, make_message, results, run

pytestmark = pytest.mark.e2e

DEBIAN_MASTER = Path("/usr/share/postfix/master.cf.dist")   # the postfix package's stock master.cf


def debian_chroot_column() -> dict[str, str]:
    """service/type -> chroot ("y"/"n"/"-") as Debian ships them."""
    out = {}
    for line in DEBIAN_MASTER.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 8 and not line[:1].isspace() and not line.startswith("#"):
            out[f"{fields[0]}/{fields[1]}"] = fields[4]
    return out


class DebianPostfix(Postfix):
    """The harness's private Postfix with Debian's chroot column in master.cf, and the milter
    lines taken from `authmilter check-config --postfix-config` run against that config."""

    def __init__(self, base: Path, exe: str, milter_config: Path) -> None:
        super().__init__(base, milter="")
        self.exe = exe
        self.milter_config = milter_config
        self.printed: list[str] = []

    def _write(self) -> None:
        super()._write()
        chroot = debian_chroot_column()
        master = self.config_dir / "master.cf"
        lines = []
        for line in master.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 8 and not line[:1].isspace() and not line.startswith("#"):
                key = "smtp/inet" if fields[1] == "inet" and fields[7] == "smtpd" else f"{fields[0]}/{fields[1]}"
                fields[4] = chroot.get(key, fields[4])
                line = "  ".join(fields)
            lines.append(line)
        master.write_text("\n".join(lines) + "\n")
        # The spool socket directory (tmpfiles.d's job on a real host): check-config wants it.
        (self.queue_dir / "authmilter").mkdir()
        (self.queue_dir / "authmilter").chmod(0o755)
        check = run([self.exe, "check-config", "-c", str(self.milter_config),
                     "--postfix-config", str(self.config_dir)], check=False)
        out = check.stdout.decode()
        assert check.returncode == 0, out + check.stderr.decode()
        self.printed = [ln for ln in out.splitlines()
                        if re.match(r"(non_)?smtpd_milters = |(sender|recipient)_canonical_", ln)]
        run([POSTCONF, "-c", str(self.config_dir), "-e", *self.printed])


def test_stock_debian_chroot_with_the_lines_check_config_printed(e2e, tmp_path_factory) -> None:
    require(DEBIAN_MASTER.is_file(), f"{DEBIAN_MASTER} missing (Debian's postfix package ships it)")
    chroot = debian_chroot_column()
    assert chroot["smtp/inet"] == "y" and chroot["cleanup/unix"] == "y", "not Debian's stock chroot settings"
    base = Path(tempfile.mkdtemp(prefix="authmilter-chroot-"))
    base.chmod(0o755)
    socket_dir = base / "spool" / "authmilter"
    settings = {k: v for k, v in e2e.milter.settings.items() if k != "socket"}
    # The socket lives in the spool like the packaged one; 0666 here only because this test's
    # authmilter runs as root without a user (packaged: 0660, group postfix via tmpfiles.d).
    secret = base / "srs.secret"
    secret.write_text("chroot srs secret\n")
    secret.chmod(0o600)
    srs = {"enabled": True, "domain": "srs.inbox.test", "secret_file": str(secret),
           "local_domains": ["inbox.test", "example.com"], "socketmap": f"unix:{socket_dir}/srs.sock"}
    milter = Authmilter(base, e2e.exe, {**settings, "socket": f"unix:{socket_dir}/authmilter.sock",
                                        "socket_mode": "0666", "workers": 1, "srs": srs})
    milter.write_config()
    postfix = DebianPostfix(base, e2e.exe, milter.config)
    started: list = []
    try:
        postfix._write()
        postfix._write = lambda: None  # type: ignore[method-assign]   # start() must not rewrite it
        assert postfix.printed == ["smtpd_milters = unix:authmilter/authmilter.sock",
                                   "non_smtpd_milters = unix:authmilter/authmilter.sock",
                                   "sender_canonical_maps = socketmap:unix:authmilter/srs.sock:forward",
                                   "sender_canonical_classes = envelope_sender",
                                   "recipient_canonical_maps = socketmap:unix:authmilter/srs.sock:reverse",
                                   "recipient_canonical_classes = envelope_recipient, header_recipient",
                                   ], postfix.printed
        assert re.search(r"^127\.0\.0\.1:\d+\s+inet\s+n\s+-\s+y\s", (postfix.config_dir / "master.cf").read_text(),
                         re.M), "smtpd is not chrooted"
        for part in (milter, postfix):
            started.insert(0, part)
            part.start()

        token = f"chroot-smtp-{uuid.uuid4().hex[:8]}"
        raw = make_message(token, from_="Alice <alice@spfpass.test>")
        reply = postfix.smtp(raw, mail_from="alice@spfpass.test", client_ip=SENDER_IP)
        assert reply.accepted, f"{reply} {postfix.log_text()[-2000:]}"
        delivered = postfix.wait_delivered(token)
        assert results(delivered, "spf")[0][0] == "pass"
        # The chrooted cleanup asked the socketmap (relative path in the chroot): the
        # sender outside local_domains is SRS-rewritten, a local one below is not.
        (return_path,) = header_values(delivered, "Return-Path")
        back = SrsCodec("srs.inbox.test", (b"chroot srs secret",)).reverse(return_path.strip("<>"))
        assert back.address == "alice@spfpass.test", return_path

        token = f"chroot-pickup-{uuid.uuid4().hex[:8]}"
        postfix.sendmail(make_message(token, from_="Cron <root@example.com>"), "root@example.com")
        postfix.flush()
        delivered = postfix.wait_delivered(token)
        assert any("d=example.com" in v for v in header_values(delivered, "DKIM-Signature")), delivered[:2000]
        assert header_values(delivered, "Return-Path") == ["<root@example.com>"]
        log = postfix.log_text()
        assert "milter" not in log.lower() or "No such file" not in log, log[-2000:]
        assert os.path.exists(socket_dir / "authmilter.sock")
    finally:
        stop_all(started)
        copy_logs([base / "maillog", milter.log, milter.config, postfix.config_dir / "master.cf",
                   postfix.config_dir / "main.cf"], tmp_path_factory.mktemp("chroot-logs"))
        shutil.rmtree(base, ignore_errors=True)
