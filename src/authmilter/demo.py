"""`authmilter demo` — what `make run` starts: the milter on an embedded default config.

Generates a demo key into keys/ (once), writes the demo tables and config into run/,
prints the Postfix lines and the DNS record to publish, then runs in the foreground.
Everything stays inside the given directory; nothing under /etc is touched.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .checkconfig import mta_lines
from .config.postfix import unchrooted
from .config.schema import load_settings
from .keys import cmd_genkey
from .milter.server import cmd_run

DEMO_DOMAIN = "example.com"
DEMO_SELECTOR = "demo"

# The embedded default configuration ({dir} is the repository directory).
DEMO_CONFIG = """\
# authmilter demo configuration, written by `authmilter demo` (make run).
# See examples/authmilter.toml for every key with its default.
socket = "{socket}"
socket_mode = "0660"
workers = 0

[dns]
servers = []            # the system resolver
timeout_s = 5.0

[signing]
key_table = "{dir}/run/KeyTable"
signing_table = "refile:{dir}/run/SigningTable"
internal_hosts = ["127.0.0.1", "::1"]
sign_daemon_names = ["ORIGINATING"]

[verify]
dmarc_mode = "rfc9989"

[policy]
on_dns_error = "tempfail"
"""


def prepare(directory: Path, socket: str | None = None) -> Path:
    """Create keys/ and run/ content; return the config path."""
    keys = directory / "keys"
    run = directory / "run"
    keys.mkdir(exist_ok=True)
    # Key loading refuses a world-readable key directory (as the issue asks): a fresh
    # clone has keys/ at 0755, so tighten it before the demo key goes in.
    keys.chmod(0o750)
    run.mkdir(exist_ok=True)
    private = keys / f"{DEMO_SELECTOR}.private"
    if not private.exists():
        rc = cmd_genkey(argparse.Namespace(domain=DEMO_DOMAIN, selector=DEMO_SELECTOR, bits=2048, type="rsa",
                                           directory=str(keys), testmode=True, restrict=False))
        if rc:
            raise SystemExit(rc)
    (run / "KeyTable").write_text(
        f"# demo key (generated, not secret material of any real domain)\n"
        f"{DEMO_SELECTOR}._domainkey.{DEMO_DOMAIN} {DEMO_DOMAIN}:{DEMO_SELECTOR}:{private}\n")
    (run / "SigningTable").write_text(f"*@{DEMO_DOMAIN} {DEMO_SELECTOR}._domainkey.{DEMO_DOMAIN}\n")
    sock = socket or f"unix:{run / 'authmilter.sock'}"
    config = run / "demo.toml"
    config.write_text(DEMO_CONFIG.format(dir=directory, socket=sock))
    return config


def cmd_demo(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    config = prepare(directory, args.socket)
    settings = load_settings(config)
    record = directory / "keys" / f"{DEMO_SELECTOR}.txt"
    print(f"authmilter demo: config {config}")
    print("\nPostfix (main.cf):")
    print("\n".join("  " + line for line in mta_lines(settings, unchrooted())[0]))
    print(f"\nPublish this DNS record for {DEMO_DOMAIN} (zone file form):")
    if record.exists():
        print("  " + record.read_text().strip().replace("\n", "\n  "))
    print("\nStarting in the foreground; Ctrl-C stops.\n", flush=True)
    if args.print_only:
        return 0
    return cmd_run(argparse.Namespace(config=str(config), workers=None, socket=None))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cmd_demo(argparse.Namespace(dir=os.getcwd(), socket=None, print_only=False)))
