"""import-opendkim on Debian's stock files and on the options issue 10 (item 6) named:
SubDomains, MacroList daemon_name, a relative KeyFile, /etc/default/opendkim's SOCKET and the
"behaviour changes" list. Through the console script, on real config files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from authmilter.config.schema import load_settings

AUTHMILTER = str(Path(sys.executable).with_name("authmilter"))
DEBIAN = Path(__file__).resolve().parents[1] / "data" / "debian"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTHMILTER, *args], capture_output=True, text=True, timeout=60)


def test_debian_stock_opendkim_conf_with_its_defaults_file(tmp_path):
    out = tmp_path / "authmilter.toml"
    r = run("import-opendkim", str(DEBIAN / "opendkim.conf"), "--defaults", str(DEBIAN / "default-opendkim"),
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    s = load_settings(out)
    # SOCKET=local:$RUNDIR/opendkim.sock with RUNDIR=/run/opendkim, expanded like the shell does
    assert s.socket == "local:/run/opendkim/opendkim.sock"
    assert "from SOCKET in" in out.read_text()
    assert (s.user, s.socket_mode, s.log_target) == ("opendkim", "0770", "syslog")
    assert s.signing.canonicalization == "relaxed/simple" and s.signing.oversign_headers == ("From",)
    assert "not carried over: TrustAnchorFile" in r.stderr
    # What an OpenDKIM admin would otherwise find out from bounced mail:
    assert "behaviour change: DMARC is evaluated and acted on" in r.stderr
    # no signing key, so no signing domain for the own-domain rule to protect: not listed
    assert "reject_own_domain_spoof" not in r.stderr
    assert "# Behaviour changes (what authmilter does differently from OpenDKIM with this config):" in out.read_text()


def test_defaults_socket_overrides_the_conf_socket(tmp_path):
    conf = tmp_path / "opendkim.conf"
    conf.write_text("Socket inet:8891@localhost\n")
    defaults = tmp_path / "opendkim.default"
    defaults.write_text('RUNDIR=/run/x\nSOCKET="inet:12345@127.0.0.1"\n#SOCKET=inet:1@localhost\n')
    r = run("import-opendkim", str(conf), "--defaults", str(defaults))
    assert r.returncode == 0, r.stderr
    assert 'socket = "inet:12345@127.0.0.1"' in r.stdout
    r = run("import-opendkim", str(conf))          # not /etc/opendkim.conf: no defaults file read
    assert 'socket = "inet:8891@localhost"' in r.stdout


def test_macrolist_daemon_name_becomes_sign_daemon_names(tmp_path):
    conf = tmp_path / "opendkim.conf"
    conf.write_text("Mode sv\nMTA MSA\nMacroList daemon_name=ORIGINATING|SUBMISSION,{auth_type}\n")
    out = tmp_path / "a.toml"
    r = run("import-opendkim", str(conf), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert load_settings(out).signing.sign_daemon_names == ("MSA", "ORIGINATING", "SUBMISSION")
    assert "MacroList entries {auth_type}" in r.stderr          # the rest is listed, not lost


def test_subdomains_with_a_keytable_is_reported_not_silently_dropped(tmp_path):
    (tmp_path / "KeyTable").write_text("s._domainkey.example.com example.com:s:/nonexistent/s.private\n")
    (tmp_path / "SigningTable").write_text("*@example.com s._domainkey.example.com\n")
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"KeyTable {tmp_path}/KeyTable\nSigningTable refile:{tmp_path}/SigningTable\nSubDomains yes\n")
    r = run("import-opendkim", str(conf))
    assert "not carried over: SubDomains yes" in r.stderr


def test_subdomains_with_keyfile_signs_the_subdomains(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    subprocess.run([AUTHMILTER, "genkey", "-d", "example.com", "-s", "s1", "-D", str(keys)], check=True,
                   capture_output=True)
    conf = tmp_path / "opendkim.conf"
    # relative KeyFile: OpenDKIM opened it from BaseDirectory
    conf.write_text(f"BaseDirectory {tmp_path}\nKeyFile keys/s1.private\nSelector s1\nDomain example.com\n"
                    "SubDomains yes\n")
    out = tmp_path / "a.toml"
    r = run("import-opendkim", str(conf), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"example.com:s1:{keys}/s1.private" in load_settings(out).signing.key_table
    which = run("which-key", "alice@mail.example.com", "-c", str(out))
    assert which.returncode == 0, which.stdout + which.stderr
    assert "d=example.com s=s1" in which.stdout


def test_keytable_without_signingtable_is_what_opendkim_does(tmp_path):
    """opendkim.conf(5) Mode: signing needs KeyTable + SigningTable (or a Lua
    SetupPolicyScript); in signing mode OpenDKIM refuses a KeyTable alone. The import
    writes the config with signing off, keeps the KeyTable, and says what to fix (exit 1)."""
    (tmp_path / "KeyTable").write_text("k example.com:s:/nonexistent/s.private\n")
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"KeyTable file:{tmp_path}/KeyTable\nDomain example.com\n")
    out = tmp_path / "a.toml"
    r = run("import-opendkim", str(conf), "-o", str(out))
    assert r.returncode == 1, r.stderr
    s = load_settings(out)
    assert not s.signing.enabled and s.signing.key_table == f"file:{tmp_path}/KeyTable"
    assert "must be fixed before authmilter starts: KeyTable without SigningTable" in r.stderr
    assert "not carried over: Domain example.com" in r.stderr and "ignored by OpenDKIM when a KeyTable is set" in r.stderr
    # verify-only (Mode v): the KeyTable is unused, nothing to fix
    conf.write_text(f"Mode v\nKeyTable file:{tmp_path}/KeyTable\n")
    r = run("import-opendkim", str(conf), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "unused in verify-only mode" in r.stderr and not load_settings(out).signing.enabled


def test_no_key_at_all_imports_with_signing_off(tmp_path):
    """Debian's stock file has Domain/Selector/KeyFile commented out: OpenDKIM signs
    nothing, and an authmilter config with signing on and no key_table would not start."""
    out = tmp_path / "a.toml"
    r = run("import-opendkim", str(DEBIAN / "opendkim.conf"), "--defaults", str(DEBIAN / "default-opendkim"),
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert load_settings(out).signing.enabled is False
    assert "# OpenDKIM had no signing key" in out.read_text()
