"""`authmilter import-opendkim` and `authmilter which-key`, run as the installed command."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from migrate_support import check_config_here, run

from authmilter.config.schema import load_settings, settings_from_dict
from authmilter.errors import ConfigError
from authmilter.migrate import convert, read_opendkim_conf


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OpenDKIM installation: keys (0600 in a 0700 dir), KeyTable, SigningTable, TrustedHosts."""
    base = tmp_path_factory.mktemp("opendkim")
    keys = base / "keys"
    keys.mkdir(mode=0o700)
    for name, key in (("rsa", rsa.generate_private_key(public_exponent=65537, key_size=1024)),
                      ("ed", ed25519.Ed25519PrivateKey.generate())):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(keys / f"{name}.private", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, pem)
        os.close(fd)
    (base / "KeyTable").write_text(f"rsa._domainkey.example.com example.com:rsa:{keys}/rsa.private\n"
                                   f"ed._domainkey.example.com example.com:ed:{keys}/ed.private\n"
                                   f"org example.org:rsa:{keys}/rsa.private\n")
    (base / "SigningTable").write_text("*@example.com rsa._domainkey.example.com\n"
                                       "*@example.com ed._domainkey.example.com\n"
                                       "*@example.org org\n")
    (base / "TrustedHosts").write_text("127.0.0.1\n::1\n10.0.0.0/8\nrelay.example.com\n")
    return base


def opendkim_conf(site: Path, text: str) -> Path:
    p = site / f"opendkim-{abs(hash(text))}.conf"
    p.write_text(text.replace("@SITE@", str(site)))
    return p


FULL = """\
# /etc/opendkim.conf as Debian ships it, plus tables
Syslog			yes
SyslogSuccess		yes
Canonicalization	relaxed/simple
OversignHeaders		From,To,Subject
UserID			opendkim:opendkim
UMask			007
Socket			local:/run/opendkim/opendkim.sock
PidFile			/run/opendkim/opendkim.pid
TrustAnchorFile		/usr/share/dns/root.key
KeyTable		refile:@SITE@/KeyTable
SigningTable		refile:@SITE@/SigningTable
InternalHosts		refile:@SITE@/TrustedHosts
ExternalIgnoreList	refile:@SITE@/TrustedHosts
MultipleSignatures	yes
SignatureTTL		86400
MTA			ORIGINATING,SUBMISSION
SoftwareHeader		yes
On-BadSignature		reject
"""


# -- reading opendkim.conf ----------------------------------------------------------------------

def test_conf_grammar_last_setting_wins_and_include(tmp_path):
    inc = tmp_path / "inc.conf"
    inc.write_text("Mode v\r\nSelector inc\n")
    main = tmp_path / "opendkim.conf"
    main.write_text(f"mode   s   # comment\n\n  Selector first\nInclude {inc}\nSELECTOR last\n")
    conf = read_opendkim_conf(str(main))
    assert conf.get("Mode") == "v"                 # the include came after "mode s"
    assert conf.get("selector") == "last"
    assert conf.where("Selector") == f"{main}:5"


def test_conf_errors_name_file_and_line(tmp_path):
    p = tmp_path / "opendkim.conf"
    p.write_text("Syslog yes\nKeyTable\n")
    with pytest.raises(ConfigError) as exc:
        read_opendkim_conf(str(p))
    assert (exc.value.file, exc.value.line, exc.value.key) == (str(p), 2, "KeyTable")
    loop = tmp_path / "loop.conf"
    loop.write_text(f"Include {loop}\n")
    with pytest.raises(ConfigError, match="nesting too deep"):
        read_opendkim_conf(str(loop))


# -- import-opendkim ------------------------------------------------------------------------------

def test_import_round_trip_reuses_tables_and_passes_check_config(site, tmp_path):
    src = opendkim_conf(site, FULL)
    out = tmp_path / "authmilter.toml"
    r = run("import-opendkim", str(src), "-o", str(out))
    assert r.returncode == 0, r.stderr
    settings = load_settings(out)
    s = settings.signing
    assert (s.key_table, s.signing_table) == (f"refile:{site}/KeyTable", f"refile:{site}/SigningTable")
    assert s.internal_hosts == (f"refile:{site}/TrustedHosts",)
    assert s.multiple_signatures and s.canonicalization == "relaxed/simple"
    assert s.oversign_headers == ("From", "To", "Subject") and s.expire_s == 86400
    assert s.sign_daemon_names == ("ORIGINATING", "SUBMISSION")
    assert (settings.socket, settings.socket_mode, settings.user, settings.group) == (
        "local:/run/opendkim/opendkim.sock", "0770", "opendkim", "opendkim")
    assert settings.log_target == "syslog" and settings.pid_file == "/run/opendkim/opendkim.pid"
    check = check_config_here(out, tmp_path)
    assert "signing domains: example.com, example.org" in check.stdout


def test_every_dropped_option_is_reported_on_stderr_and_in_the_file(site, tmp_path):
    out = tmp_path / "authmilter.toml"
    r = run("import-opendkim", str(opendkim_conf(site, FULL)), "-o", str(out))
    text = out.read_text()
    for option in ("SyslogSuccess yes", "TrustAnchorFile /usr/share/dns/root.key", "SoftwareHeader yes",
                   "On-BadSignature reject"):
        assert f"not carried over: {option}" in r.stderr
        assert f"#   - {option}" in text
    for carried in ("Canonicalization", "MultipleSignatures", "SigningTable", "UMask", "Socket", "ExternalIgnoreList"):
        assert f"not carried over: {carried}" not in r.stderr


def test_import_to_stdout_parses_as_toml(site):
    r = run("import-opendkim", str(opendkim_conf(site, FULL)))
    assert r.returncode == 0
    settings_from_dict(tomllib.loads(r.stdout))


def test_single_key_setup_becomes_csl_tables(site, tmp_path):
    src = opendkim_conf(site, "KeyFile @SITE@/keys/rsa.private\nSelector mail\n"
                              "Domain example.com,example.org\nSubDomains yes\n")
    out = tmp_path / "single.toml"
    assert run("import-opendkim", str(src), "-o", str(out)).returncode == 0
    s = load_settings(out).signing
    assert s.key_table.startswith("csl:example.com=example.com:mail:") and s.signing_table.startswith("csl:")
    assert s.canonicalization == "simple"          # OpenDKIM's default, kept
    assert s.internal_hosts == ("127.0.0.1",)      # OpenDKIM's default InternalHosts
    r = run("which-key", "a@sub.example.org", "-c", str(out))
    assert r.returncode == 0 and "d=example.org s=mail" in r.stdout   # SubDomains: d= the listed parent
    assert run("which-key", "a@example.net", "-c", str(out)).returncode == 1


def test_domain_star_signs_every_from_domain(site, tmp_path):
    src = opendkim_conf(site, "KeyFile @SITE@/keys/ed.private\nSelector ed\nDomain *\n")
    out = tmp_path / "star.toml"
    assert run("import-opendkim", str(src), "-o", str(out)).returncode == 0
    r = run("which-key", "someone@anything.test", "-c", str(out))
    assert r.returncode == 0 and "d=anything.test s=ed (ed25519-sha256" in r.stdout


@pytest.mark.parametrize("line,key,value", [
    ("Socket inet:8891@localhost", "socket", "inet:8891@localhost"),
    ("Socket inet:8891", "socket", "inet:8891@0.0.0.0"),
    ("Socket inet6:8891@[::1]", "socket", "inet6:8891@[::1]"),
    ("UMask 002", "socket_mode", "0775"),
    ("Nameservers 192.0.2.53,192.0.2.54", "dns.servers", ["192.0.2.53", "192.0.2.54"]),
    ("DNSTimeout 3", "dns.timeout_s", 3.0),
    ("Mode s", "verify.enabled", False),
    ("MinimumKeyBits 512", "verify.dkim_min_rsa_bits", 1024),
    ("SignHeaders *,+List-Foo,-Autocrypt", "signing.sign_headers", None),
    ("InternalHosts /etc/opendkim/TrustedHosts", "signing.internal_hosts", ["file:/etc/opendkim/TrustedHosts"]),
    ("InternalHosts 192.168.0.0/16, 10.0.0.0/8", "signing.internal_hosts", ["192.168.0.0/16", "10.0.0.0/8"]),
    ("ExternalIgnoreList csl:.relays.example.net,192.0.2.0/24", "policy.trusted_forwarders",
     [".relays.example.net", "192.0.2.0/24"]),
    ("ExternalIgnoreList refile:/etc/opendkim/TrustedHosts", "policy.trusted_forwarders",
     ["refile:/etc/opendkim/TrustedHosts"]),
    ("ExternalIgnoreList /etc/opendkim/TrustedHosts", "policy.trusted_forwarders",
     ["file:/etc/opendkim/TrustedHosts"]),
    ("InternalHosts -", "signing.internal_hosts", []),
    ("InternalHosts 127.0.0.1,mail.example.com,!10.1.2.3", "signing.internal_hosts",
     ["127.0.0.1", "mail.example.com", "!10.1.2.3"]),
])
def test_option_mapping(tmp_path, line, key, value):
    p = tmp_path / "opendkim.conf"
    p.write_text(line + "\n")
    imp = convert(read_opendkim_conf(str(p)))
    node = imp.data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    if value is None:   # SignHeaders delta: the default list plus List-Foo, without Autocrypt
        assert "List-Foo" in node[leaf] and "Autocrypt" not in node[leaf] and node[leaf][0] == "From"
    else:
        assert node[leaf] == value
    settings_from_dict(imp.data)


def test_internal_hosts_dash_means_no_internal_host_not_the_default(tmp_path):
    """``InternalHosts -`` is a list holding "-", which OpenDKIM never matches: no client is
    internal. Keeping authmilter's default (127.0.0.1, ::1) would sign what OpenDKIM verified."""
    p = tmp_path / "opendkim.conf"
    p.write_text("InternalHosts -\n")
    imp = convert(read_opendkim_conf(str(p)))
    assert imp.data["signing"]["internal_hosts"] == []
    assert any(d.startswith("InternalHosts entries -") for d in imp.dropped)
    assert settings_from_dict(imp.data).signing.internal_hosts == ()


def test_tables_authmilter_would_refuse_are_reported_with_exit_1(site, tmp_path):
    st = tmp_path / "SigningTable"
    st.write_text("*@example.com org\n")      # a wildcard in a file: table never matches
    src = opendkim_conf(site, f"KeyTable file:@SITE@/KeyTable\nSigningTable file:{st}\n")
    out = tmp_path / "refused.toml"
    r = run("import-opendkim", str(src), "-o", str(out))
    assert r.returncode == 1
    assert f"must be fixed before authmilter starts: {st}:1: " in r.stderr
    assert "# Must be fixed before authmilter starts:" in out.read_text()


def test_missing_opendkim_conf_is_exit_2():
    r = run("import-opendkim", "/nonexistent/opendkim.conf")
    assert r.returncode == 2 and "/nonexistent/opendkim.conf: file not found" in r.stderr


# -- which-key ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def config(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("which") / "authmilter.toml"
    assert run("import-opendkim", str(opendkim_conf(site, FULL)), "-o", str(out)).returncode == 0
    return out


def test_which_key_prints_keys_and_the_lines_that_chose_them(config, site):
    r = run("which-key", "Bob <bob@Example.COM>", "-c", str(config))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "mail From bob@Example.COM would be signed with:"
    assert lines[1].startswith(f"  d=example.com s=rsa (rsa-sha256, 1024 bits) key {site}/keys/rsa.private")
    assert lines[2] == f'    because refile:{site}/SigningTable:1: "*@example.com" matched'
    assert lines[3].startswith("  d=example.com s=ed (ed25519-sha256, 256 bits)")


def test_which_key_nothing_signs(config, site):
    r = run("which-key", "x@example.net", "-c", str(config))
    assert r.returncode == 1
    assert r.stdout.strip() == (f"nothing would sign mail From x@example.net: no pattern in {site}/SigningTable "
                                "matches x@example.net")


def test_which_key_applies_the_sasl_restriction(config):
    ok = run("which-key", "bob@example.com", "-c", str(config), "--sasl-user", "alice@example.com")
    assert ok.returncode == 0
    refused = run("which-key", "boss@example.org", "-c", str(config), "--sasl-user", "alice@example.com")
    assert refused.returncode == 1 and "not authorised for d=example.org" in refused.stdout


def test_which_key_lists_file_lookup_steps(site, tmp_path):
    st = tmp_path / "SigningTable"
    st.write_text("example.org org\n")
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'[signing]\nkey_table = "{site}/KeyTable"\nsigning_table = "file:{st}"\n')
    r = run("which-key", "ann@mail.example.com", "-c", str(cfg))
    assert r.returncode == 1
    assert ("tried ann@mail.example.com, mail.example.com, ann@.example.com, .example.com, ann@.com, .com, "
            "ann@*, *") in r.stdout


def test_which_key_configuration_error_is_exit_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[signing]\nkey_table = "/nonexistent/KeyTable"\nsigning_table = "refile:/nonexistent/St"\n')
    r = run("which-key", "a@example.com", "-c", str(cfg))
    assert r.returncode == 2 and "/nonexistent/KeyTable: file not found" in r.stderr
