"""Debian's Sendmail 8.17, unpacked beside the repository instead of installed.

Debian will not install sendmail-bin next to Postfix (both provide mail-transport-agent),
so the packages are fetched with ``apt-get download`` into a cache under the repository's
ignored ``run/`` directory and unpacked there with ``dpkg -x``; nothing is installed and
nothing under /etc or /var is written. The e2e fixture and ``make test-deps`` both call
`ensure()`; the cache is reused until it is deleted.

Standard library only: the Makefile runs this file with the system python3
(``python3 tests/e2e/sendmail/dist.py``) before the virtualenv matters.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("AUTHMILTER_SENDMAIL_CACHE", REPO / "run" / "sendmail"))
PACKAGES = ("sendmail-bin", "sendmail-cf", "sendmail-base")
# The libraries sendmail-bin links against that a Postfix machine may lack (its Depends,
# minus what Postfix and Python already pull in) and m4 for the .mc; `make test-deps`
# installs them with apt (none of them conflicts with Postfix).
APT_PREREQUISITES = ("m4", "libwrap0", "liblockfile1", "libldap-2.5-0", "libsasl2-modules")


@dataclass(frozen=True)
class Dist:
    """An unpacked sendmail-bin/-cf/-base tree (``root`` is what ``/`` would be)."""

    root: Path

    @property
    def sendmail(self) -> Path:
        return self.root / "usr" / "libexec" / "sendmail" / "sendmail"

    @property
    def cf_dir(self) -> Path:
        """sendmail-cf's m4 tree (``cf.m4``, ``feature/``, ``mailer/``, ``ostype/``)."""
        return self.root / "usr" / "share" / "sendmail" / "cf"

    @property
    def helpfile(self) -> Path:
        return self.root / "etc" / "mail" / "helpfile"

    def version(self) -> str:
        """The sendmail-bin package version unpacked here (e.g. ``8.17.1.9-2+deb12u2``).
        (Not from the binary: before reading any cf it tries to qualify the host name, and
        sleeps a minute when it cannot.)"""
        for line in (self.root / ".complete").read_text().splitlines():
            if line.startswith("sendmail-bin_"):
                return line.split("_")[1]
        return "unknown"


def ensure(cache: Path = CACHE, *, log=print) -> Dist:  # type: ignore[no-untyped-def]
    """The unpacked tree under *cache*, downloading and unpacking the .debs when missing."""
    root = cache / "root"
    if (root / ".complete").exists():
        return Dist(root)
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: the Sendmail e2e suite unpacks Debian packages")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        log(f"sendmail: apt-get download {' '.join(missing)} into {debs}")
        # apt's _apt sandbox user must be able to write the directory it downloads into.
        debs.chmod(0o755)
        proc = subprocess.run(["apt-get", "download", "-q", *missing], cwd=debs, capture_output=True,
                              timeout=600, check=False)
        if proc.returncode != 0 or any(not list(debs.glob(f"{p}_*.deb")) for p in missing):
            raise RuntimeError(f"apt-get download {' '.join(missing)} failed ({proc.returncode}): "
                               f"{(proc.stdout + proc.stderr).decode(errors='replace')[-2000:]}")
    staging = cache / "root.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True, capture_output=True, timeout=300)
    (staging / ".complete").write_text("".join(f"{d.name}\n" for d in sorted(debs.glob("*.deb"))))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    log(f"sendmail: unpacked into {root}")
    return Dist(root)


def problems(dist: Dist) -> list[str]:
    """What keeps this machine from running the unpacked Sendmail (empty: nothing)."""
    found = []
    if shutil.which("m4") is None:
        found.append("m4 is not installed (make test-deps installs it)")
    if shutil.which("unshare") is None:
        found.append("unshare (util-linux) is not installed")
    if not os.access(dist.sendmail, os.X_OK):
        found.append(f"{dist.sendmail} missing")
        return found
    ldd = subprocess.run(["ldd", str(dist.sendmail)], capture_output=True, text=True, timeout=30, check=False)
    libs = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if libs:
        found.append(f"libraries sendmail needs are missing: {', '.join(libs)} "
                     f"(make test-deps installs {' '.join(APT_PREREQUISITES)})")
    return found


if __name__ == "__main__":
    try:
        d = ensure()
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        sys.exit(1)
    trouble = problems(d)
    for p in trouble:
        print(f"sendmail: {p}", file=sys.stderr)
    if not trouble:
        print(f"sendmail {d.version()} ready in {d.root}")
    sys.exit(1 if trouble else 0)
