"""Build the Debian package: a staged tree packed with dpkg-deb (no debhelper needed).

    python packaging/build_deb.py [--outdir build]      (make deb runs it with .venv/bin/python)

What goes where, and why:
  /usr/lib/authmilter/authmilter        the program (src/authmilter), a private module directory
  /usr/lib/authmilter/dns               dnspython, bundled: resolver.py names its servers with
                                        dns.nameserver.Do53Nameserver, new in dnspython 2.4;
                                        Debian 12 has 2.3
  /usr/lib/authmilter/publicsuffixlist  bundled: not packaged in Debian 12 (python3-publicsuffix2
                                        is another library); the PSL for verify.dmarc_mode = rfc7489
  /usr/bin/authmilter                   python3 with /usr/lib/authmilter first on sys.path
  pymilter, pyspf, authres, cryptography come from Debian (python3-milter, -spf, -authres,
  -cryptography: 38 in Debian 12 has every API src/ uses, RSA/Ed25519 sign/verify and PEM/raw keys).
The bundled copies are the ones installed in the interpreter running this script (the
project's .venv), with their licences in the copyright file.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "packaging" / "deb"
LIB = "usr/lib/authmilter"
DOC = "usr/share/doc/authmilter"
CONFFILE = "etc/authmilter/authmilter.toml"

# (import name, distribution name, licence short name in the copyright file)
BUNDLED = (("dns", "dnspython", "ISC"), ("publicsuffixlist", "publicsuffixlist", "MPL-2.0"))

WRAPPER = """\
#!/usr/bin/python3
# authmilter(8). The modules live in /usr/lib/authmilter with the bundled dnspython and
# publicsuffixlist, which come before any system copy.
import sys

sys.path.insert(0, "/usr/lib/authmilter")

from authmilter.cli import main  # noqa: E402

sys.exit(main())
"""

MIT = """\
Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def version() -> str:
    v = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    first = (HERE / "changelog").read_text().split("\n", 1)[0]
    m = re.match(r"authmilter \(([^)]+)\)", first)
    if not m or m.group(1) != v:
        sys.exit(f"packaging/deb/changelog starts with {first!r}; pyproject.toml's version is {v}: add an entry")
    return v


# Files of the bundled modules that the program never uses (their self-tests, the list updater).
NOT_BUNDLED = {"test.py", "test_psl.txt", "update.py"}


def ignore_caches(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]


def ignore_bundled(_dir: str, names: list[str]) -> list[str]:
    return ignore_caches(_dir, names) + [n for n in names if n in NOT_BUNDLED]


def put(stage: Path, rel: str, data: bytes | str, mode: int = 0o644) -> Path:
    path = stage / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def dep5_text(text: str) -> str:
    """A licence text as a DEP-5 field continuation: one leading space, '.' for blank lines."""
    return "\n".join(" " + line if line.strip() else " ." for line in text.strip().splitlines())


def bundle(stage: Path) -> list[tuple[str, str, str, str, str]]:
    """Copy the bundled modules; return (module, dist, version, licence, its text) for the copyright file."""
    out = []
    for module, dist_name, licence in BUNDLED:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            sys.exit(f"{module} is not installed in {sys.executable} (make deps installs it)")
        src = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(src, stage / LIB / module, ignore=ignore_bundled)
        dist = importlib.metadata.distribution(dist_name)
        texts = [f.read_text() for f in (dist.files or []) if f.name.startswith(("LICENSE", "COPYING"))
                 for f in [Path(str(dist.locate_file(f)))]]
        if not texts:
            sys.exit(f"{dist_name}: no licence file in its metadata")
        out.append((module, dist_name, dist.version, licence, texts[0]))
    return out


def copyright_file(bundled: list[tuple[str, str, str, str, str]]) -> str:
    parts = ["Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
             "Upstream-Name: authmilter\n",
             "Files: *\nCopyright: 2026 the authmilter authors\nLicense: MIT\n"]
    for module, dist_name, dist_version, licence, text in bundled:
        notice = next((ln.strip() for ln in text.splitlines() if ln.strip().lower().startswith("copyright")),
                      f"the {dist_name} authors")
        parts.append(f"Files: {LIB}/{module}/*\nCopyright: {notice.removeprefix('Copyright').strip(' :')}\n"
                     f"Comment: {dist_name} {dist_version}, bundled (see /usr/share/doc/authmilter/README.Debian)\n"
                     f"License: {licence}\n" + (dep5_text(text) + "\n" if licence != "MPL-2.0" else
                     " On Debian systems the full text of the Mozilla Public License 2.0 is in\n"
                     " /usr/share/common-licenses/MPL-2.0.\n"))
    parts.append("License: MIT\n" + dep5_text(MIT) + "\n")
    return "\n".join(parts)


def unit_file() -> str:
    """examples/systemd/authmilter.service with the packaged program's path."""
    text = (REPO / "examples/systemd/authmilter.service").read_text()
    packaged = text.replace("/usr/local/bin/authmilter", "/usr/bin/authmilter")
    if "/usr/bin/authmilter run" not in packaged:
        sys.exit("examples/systemd/authmilter.service: no ExecStart=/usr/local/bin/authmilter run to rewrite")
    return re.sub(r"^Documentation=.*$",
                  "Documentation=man:authmilter(8) man:authmilter.toml(5) file:/usr/share/doc/authmilter/README.md",
                  packaged, flags=re.M)


def tmpfiles() -> str:
    text = (REPO / "examples/systemd/authmilter.tmpfiles.conf").read_text()
    return text.replace("# /usr/lib/tmpfiles.d/authmilter.conf", "# /usr/lib/tmpfiles.d/authmilter.conf (package authmilter)")


def man_page(stage: Path, section: str) -> bytes:
    """The page as the staged program prints it (so the staged tree is also smoke-tested)."""
    env = {**os.environ, "PYTHONPATH": str(stage / LIB), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "authmilter.manpage", section], env=env, check=True,
                          capture_output=True, timeout=120).stdout


README_DEBIAN = """\
authmilter for Debian
=====================

The package installs the milter with a configuration that checks inbound mail and
signs nothing: /etc/authmilter/authmilter.toml, socket
/var/spool/postfix/authmilter/authmilter.sock (Debian's Postfix chroots smtpd and
cleanup in /var/spool/postfix). Then:

  authmilter check-config          # prints the lines for /etc/postfix/main.cf
  postconf -e 'smtpd_milters = unix:authmilter/authmilter.sock' \\
              'non_smtpd_milters = unix:authmilter/authmilter.sock' \\
              'milter_default_action = tempfail'
  systemctl reload postfix

The postfix user is added to the authmilter group when the package is configured; if
Postfix is installed later, run: adduser postfix authmilter.

To sign: authmilter genkey -d example.com -s 2026a -D /etc/authmilter/keys, chown the
.private file to authmilter, publish the .txt record, write a KeyTable and SigningTable
(examples in /usr/share/doc/authmilter/examples/opendkim) and set signing.key_table and
signing.signing_table. authmilter.toml(5) documents every key.

Bundled Python modules (/usr/lib/authmilter): dnspython, because the resolver needs
dnspython 2.4 or later (dns.nameserver) and Debian 12 ships 2.3; publicsuffixlist,
which Debian 12 does not package. pymilter, pyspf, authres and cryptography are the
Debian packages.
"""


def build(outdir: Path) -> Path:
    v = version()
    stage = outdir / f"authmilter_{v}_all"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    os.umask(0o022)

    shutil.copytree(REPO / "src/authmilter", stage / LIB / "authmilter", ignore=ignore_caches)
    bundled = bundle(stage)
    put(stage, "usr/bin/authmilter", WRAPPER, 0o755)
    put(stage, "usr/share/man/man8/authmilter.8.gz", gz(man_page(stage, "8")))
    put(stage, "usr/share/man/man5/authmilter.toml.5.gz", gz(man_page(stage, "5")))
    put(stage, "lib/systemd/system/authmilter.service", unit_file())
    for name in ("authmilter-reports.service", "authmilter-reports.timer"):
        text = (REPO / "examples/systemd" / name).read_text().replace("/usr/local/bin/authmilter", "/usr/bin/authmilter")
        put(stage, f"{DOC}/examples/systemd/{name}", text)
    put(stage, "usr/lib/tmpfiles.d/authmilter.conf", tmpfiles())
    put(stage, CONFFILE, (HERE / "authmilter.toml").read_text())
    put(stage, f"{DOC}/README.md", (REPO / "README.md").read_text())
    put(stage, f"{DOC}/README.Debian", README_DEBIAN)
    put(stage, f"{DOC}/changelog.gz", gz((HERE / "changelog").read_bytes()))
    put(stage, f"{DOC}/copyright", copyright_file(bundled))
    for example in ("authmilter.toml", "sendmail.mc", "opendkim/KeyTable", "opendkim/SigningTable",
                    "opendkim/TrustedHosts", "postfix/main.cf", "postfix/master.cf"):
        put(stage, f"{DOC}/examples/{example}", (REPO / "examples" / example).read_bytes())

    for d in (p for p in stage.rglob("*") if p.is_dir()):
        d.chmod(0o755)
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    size_kib = sum((p.stat().st_size + 1023) // 1024 for p in files) + len(list(stage.rglob("*"))) - len(files)
    debian = stage / "DEBIAN"
    debian.mkdir(mode=0o755)
    control = (HERE / "control.in").read_text().replace("@VERSION@", v).replace("@INSTALLED_SIZE@", str(size_kib))
    put(stage, "DEBIAN/control", control)
    put(stage, "DEBIAN/conffiles", f"/{CONFFILE}\n")
    put(stage, "DEBIAN/md5sums", "".join(
        f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}\n"
        for p in files if str(p.relative_to(stage)) != CONFFILE))
    for script in ("postinst", "prerm", "postrm"):
        put(stage, f"DEBIAN/{script}", (HERE / script).read_text(), 0o755)

    deb = outdir / f"authmilter_{v}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(deb)], check=True,
                   timeout=300, stdout=subprocess.DEVNULL)
    return deb


def main() -> int:
    parser = argparse.ArgumentParser(description="Build authmilter_VERSION_all.deb from the source tree.")
    parser.add_argument("--outdir", default=str(REPO / "build"), help="where the staged tree and the .deb go")
    args = parser.parse_args()
    print(build(Path(args.outdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
