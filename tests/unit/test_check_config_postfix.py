"""check-config prints the milter lines that work with the Postfix it reads (issue 10,
item 2): chroot column from `postconf -F`, paths relative to the queue directory for
chrooted smtpd/cleanup, an error and the inet: alternative for a socket outside it; and
the shipped examples (main.cf, tmpfiles.d, the unit) agree with what it prints."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import require

from authmilter.config.postfix import parse_layout, read_layout

AUTHMILTER = str(Path(sys.executable).with_name("authmilter"))
EX = Path(__file__).resolve().parents[2] / "examples"
DIST = Path("/usr/share/postfix")          # Debian's postfix package: stock main.cf / master.cf
SPOOL_SOCKET = "unix:/var/spool/postfix/authmilter/authmilter.sock"


@pytest.fixture
def debian_postfix(tmp_path: Path) -> Path:
    """A Postfix config directory holding Debian's stock main.cf and master.cf."""
    require(shutil.which("postconf") is not None or Path("/usr/sbin/postconf").exists(),
            "postconf missing (make test-deps installs postfix)")
    require((DIST / "master.cf.dist").is_file(), "Debian's /usr/share/postfix/master.cf.dist missing")
    d = tmp_path / "postfix"
    d.mkdir()
    shutil.copy(DIST / "main.cf.dist", d / "main.cf")
    shutil.copy(DIST / "master.cf.dist", d / "master.cf")
    # The queue directory (Debian's is /var/spool/postfix) is a temporary one, so the
    # socket directory under it exists without touching the machine's spool.
    (tmp_path / "spool" / "authmilter").mkdir(parents=True)
    with open(d / "main.cf", "a") as fh:
        fh.write(f"\nqueue_directory = {tmp_path}/spool\n")
    return d


def check_config(tmp_path: Path, socket: str, postfix_dir: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "authmilter.toml"
    cfg.write_text(f'socket = "{socket}"\n[signing]\nenabled = false\n')
    return subprocess.run([AUTHMILTER, "check-config", "-c", str(cfg), "--postfix-config", str(postfix_dir)],
                          capture_output=True, text=True, timeout=60)


def milter_lines(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if re.match(r"(non_)?smtpd_milters = ", ln)]


def test_debians_stock_master_cf_chroots_smtpd_and_cleanup(debian_postfix):
    layout = read_layout(str(debian_postfix))
    assert layout is not None and layout.queue_directory == f"{debian_postfix.parent}/spool"
    assert "smtp/inet" in layout.smtpd_chroot and "cleanup/unix" in layout.cleanup_chroot


def test_chroot_dash_is_postfix_3_default_no():
    layout = parse_layout("/q", "smtp/inet/chroot = -\nsmtp/inet/command = smtpd -o a=b\n"
                                "cleanup/unix/chroot = y\ncleanup/unix/command = cleanup\n", "test")
    assert layout.smtpd_chroot == () and layout.cleanup_chroot == ("cleanup/unix",)


def test_spool_socket_is_printed_relative_for_both_chrooted_clients(debian_postfix, tmp_path):
    out = check_config(tmp_path, f"unix:{tmp_path}/spool/authmilter/authmilter.sock", debian_postfix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert milter_lines(out.stdout) == ["smtpd_milters = unix:authmilter/authmilter.sock",
                                        "non_smtpd_milters = unix:authmilter/authmilter.sock"]


def test_socket_outside_the_chroot_is_an_error_naming_the_inet_alternative(debian_postfix, tmp_path):
    out = check_config(tmp_path, f"unix:{tmp_path}/authmilter.sock", debian_postfix)
    assert out.returncode == 1
    assert f"cannot reach {tmp_path}/authmilter.sock" in out.stderr
    assert "smtpd_milters = inet:127.0.0.1:8891" in out.stderr
    assert "non_smtpd_milters = inet:127.0.0.1:8891" in out.stderr


def test_unchrooted_postfix_gets_absolute_paths(debian_postfix, tmp_path):
    master = debian_postfix / "master.cf"
    master.write_text(re.sub(r"^(smtp\s+inet\s+\S+\s+\S+\s+)y", r"\1n", master.read_text(), flags=re.M)
                      .replace("cleanup   unix  n       -       y", "cleanup   unix  n       -       n"))
    out = check_config(tmp_path, f"unix:{tmp_path}/authmilter.sock", debian_postfix)
    assert out.returncode == 0, out.stdout + out.stderr
    assert milter_lines(out.stdout) == [f"smtpd_milters = unix:{tmp_path}/authmilter.sock",
                                        f"non_smtpd_milters = unix:{tmp_path}/authmilter.sock"]


def test_inet_socket_is_the_same_everywhere(debian_postfix, tmp_path):
    out = check_config(tmp_path, "inet:8891@127.0.0.1", debian_postfix)
    assert out.returncode == 0
    assert milter_lines(out.stdout) == ["smtpd_milters = inet:127.0.0.1:8891",
                                        "non_smtpd_milters = inet:127.0.0.1:8891"]


def test_example_main_cf_is_what_check_config_prints_for_debian(debian_postfix, tmp_path):
    out = check_config(tmp_path, f"unix:{tmp_path}/spool/authmilter/authmilter.sock", debian_postfix)
    assert out.returncode == 0, out.stderr
    example = (EX / "postfix" / "main.cf").read_text()
    for line in milter_lines(out.stdout):
        assert re.search(rf"^{re.escape(line)}$", example, re.M), line
    assert SPOOL_SOCKET in example


def test_tmpfiles_creates_the_spool_socket_directory_and_the_unit_may_write_it():
    entries = [ln.split() for ln in (EX / "systemd" / "authmilter.tmpfiles.conf").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    dirs = {e[1]: e for e in entries if e[0] == "d"}
    spool_dir = SPOOL_SOCKET.removeprefix("unix:").rsplit("/", 1)[0]
    assert dirs[spool_dir][2:5] == ["0750", "authmilter", "postfix"]   # postfix may enter it
    unit = (EX / "systemd" / "authmilter.service").read_text()
    paths = next(ln for ln in unit.splitlines() if ln.startswith("ReadWritePaths=")).split("=", 1)[1].split()
    assert all(p.startswith("-") for p in paths), paths   # one of the two is always missing
    assert {p[1:] for p in paths} == set(dirs)


def test_unit_logs_as_mail_facility():
    unit = (EX / "systemd" / "authmilter.service").read_text().splitlines()
    assert "SyslogFacility=mail" in unit and "SyslogIdentifier=authmilter" in unit


def _srs_settings(tmp_path: Path, socketmap: str = ""):  # type: ignore[no-untyped-def]
    from authmilter.config.schema import settings_from_dict

    secret = tmp_path / "srs.secret"
    secret.write_text("s\n")
    return settings_from_dict({"socket": "inet:8891@127.0.0.1", "signing": {"enabled": False},
                               "srs": {"enabled": True, "domain": "srs.example.net", "secret_file": str(secret),
                                       "socketmap": socketmap}})


def test_srs_in_the_milter_alone_asks_for_postfix_made_bounces_to_reach_the_milter(tmp_path):
    """A DSN Postfix writes itself (the next hop refused an SRS-rewritten message) goes to
    the SRS address through bounce(8) -> cleanup, which calls non_smtpd_milters only for
    internal_mail_filter_classes: without it the recipient is never restored
    (tests/e2e/test_srs_chain.py shows both)."""
    from authmilter.checkconfig import mta_lines

    lines, errors = mta_lines(_srs_settings(tmp_path))
    assert not errors
    assert "internal_mail_filter_classes = bounce" in lines
    assert lines.index("internal_mail_filter_classes = bounce") > lines.index("milter_protocol = 6")


def test_srs_with_the_socketmap_leaves_bounces_to_recipient_canonical_maps(tmp_path):
    from authmilter.checkconfig import mta_lines

    lines, _ = mta_lines(_srs_settings(tmp_path, "inet:10003@127.0.0.1"))
    assert "recipient_canonical_maps = socketmap:inet:127.0.0.1:10003:reverse" in lines
    assert not [ln for ln in lines if ln.startswith("internal_mail_filter_classes")]
    plain, _ = mta_lines(settings_from_plain(tmp_path))
    assert not [ln for ln in plain if ln.startswith("internal_mail_filter_classes")]


def settings_from_plain(tmp_path: Path):  # type: ignore[no-untyped-def]
    from authmilter.config.schema import settings_from_dict

    return settings_from_dict({"socket": "inet:8891@127.0.0.1", "signing": {"enabled": False}})
