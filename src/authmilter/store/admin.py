"""``authmilter store init|status -c FILE``: create or migrate the schema; show counts.

``init`` is what every start does too; running it by hand (as the authmilter user, or
as root, which then hands an SQLite file to the configured ``user``) lets an admin see
the result before the daemon needs it. Both work whether or not ``[store] enabled``
is set: the admin asked for the store by name.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..config.schema import load_settings
from ..config.storeurl import SQLITE
from ..errors import AuthmilterError
from . import StoreError, open_store, parse_url


def _chown_to_daemon_user(path: str, user: str, group: str) -> None:
    """A database created by root must stay writable by the user the daemon drops to."""
    if os.geteuid() != 0 or not user:
        return
    import pwd

    pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    gid = pw.pw_gid
    if group:
        import grp

        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.chown(name, pw.pw_uid, gid)


def cmd_store(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        store = open_store(settings.store, settings.source)
        if args.action == "init":
            version = store.init()
            url = parse_url(settings.store.url)
            if url.kind == SQLITE:
                try:
                    _chown_to_daemon_user(url.path, settings.user, settings.group)
                except (KeyError, OSError) as exc:
                    print(f"authmilter: warning: cannot hand {url.path} to user {settings.user}: {exc}",
                          file=sys.stderr)
            print(f"{store.name}: schema version {version}")
        else:
            url = parse_url(settings.store.url)
            if url.kind == SQLITE and not os.path.exists(url.path):
                raise StoreError(f"{url.path} does not exist yet: run authmilter store init -c {args.config}")
            status = store.status()
            print(f"{status.url}: schema version {status.schema_version}, {status.records} message record(s), "
                  f"{status.keys} key(s)")
        store.close()
    except AuthmilterError as exc:
        kind = "store error" if isinstance(exc, StoreError) else "configuration error"
        print(f"authmilter: {kind}: {exc}", file=sys.stderr)
        return 1
    return 0
