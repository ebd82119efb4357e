"""The three importers in a chain on Debian's default files, merging (-c), conflicts, and
refusing a file of the wrong kind. Through the console script, on real files."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from migrate_support import AUTHMILTER, check_config_here, run

from authmilter.config.schema import load_settings
from authmilter.migrate_common import merge

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def debian(tmp_path: Path) -> dict[str, Path]:
    """Debian's stock opendkim.conf with the three lines its comments ask the admin to set
    (a generated key), the sample opendmarc.conf (its Public Suffix List pointed at a copy
    here) and the sample policyd-spf.conf."""
    keys = tmp_path / "dkimkeys"
    keys.mkdir(mode=0o700)
    subprocess.run([AUTHMILTER, "genkey", "-d", "example.com", "-s", "2020", "-D", str(keys)], check=True,
                   capture_output=True, timeout=60)
    dkim = tmp_path / "opendkim.conf"
    dkim.write_text((DATA / "debian" / "opendkim.conf").read_text()
                    + f"Domain\t\t\texample.com\nSelector\t\t2020\nKeyFile\t\t\t{keys}/2020.private\n")
    psl = tmp_path / "public_suffix_list.dat"
    psl.write_text("// test list\ncom\nnet\norg\n")
    dmarc = tmp_path / "opendmarc.conf"
    dmarc.write_text((DATA / "migrate" / "opendmarc.conf").read_text()
                     .replace("/usr/share/publicsuffix/public_suffix_list.dat", str(psl)))
    return {"opendkim": dkim, "opendmarc": dmarc, "policyd-spf": DATA / "migrate" / "policyd-spf.conf",
            "keys": keys}


def test_three_imports_give_one_config_check_config_accepts(debian, tmp_path):
    cfg = tmp_path / "authmilter.toml"
    r1 = run("import-opendkim", str(debian["opendkim"]), "-o", str(cfg))
    assert r1.returncode == 0, r1.stderr
    r2 = run("import-opendmarc", str(debian["opendmarc"]), "-c", str(cfg), "-o", str(cfg))
    assert r2.returncode == 0, r2.stderr
    r3 = run("import-policyd-spf", str(debian["policyd-spf"]), "-c", str(cfg), "-o", str(cfg))
    assert r3.returncode == 0, r3.stderr

    s = load_settings(cfg)
    # OpenDKIM: one key for example.com, Debian's canonicalization and oversigning
    assert s.signing.enabled and s.signing.key_table.startswith("csl:example.com=example.com:2020:")
    assert s.signing.canonicalization == "relaxed/simple" and s.signing.oversign_headers == ("From",)
    # OpenDMARC (RejectFailures unset = false): nothing rejected, held or temp-failed on DMARC
    assert (s.policy.on_dmarc_reject, s.policy.on_dmarc_quarantine, s.policy.on_dns_error) == (
        "accept", "accept", "accept")
    assert s.verify.dmarc_mode == "rfc7489" and s.verify.public_suffix_list.endswith("public_suffix_list.dat")
    # policyd-spf: HELO and MAIL FROM fail rejected, temperror not deferred, loopback skipped
    p = s.policy
    assert (p.reject_spf_fail, p.reject_spf_results, p.reject_helo_spf, p.spf_temperror_tempfail) == (
        True, ("fail",), ("fail",), False)
    assert s.verify.add_received_spf and s.verify.spf_helo
    # OpenDMARC's IgnoreHosts 127.0.0.1 is already an internal host (signed, not checked);
    # policyd-spf's skip_addresses join the trusted forwarders
    assert s.signing.internal_hosts == ("127.0.0.1",)
    assert p.trusted_forwarders == ("127.0.0.0/8", "::ffff:127.0.0.0/104", "::1")
    # one process: the first import's socket and user are kept, the others reported
    assert s.socket == "local:/run/opendkim/opendkim.sock" and s.user == "opendkim"
    assert "conflict: socket:" in r2.stderr and "kept" in r2.stderr
    # example.com is signed: forged own-domain mail is now rejected, which none of the three did
    for r in (r1, r2, r3):
        assert "behaviour change: mail from outside claiming one of our signing domains" in r.stderr
    assert "OpenDMARC only applied the published policy of those domains" in r2.stderr
    assert "already signing.internal_hosts" in r2.stderr
    text = cfg.read_text()
    assert text.startswith("# authmilter configuration: ") and f"merged into {cfg}" in text
    # the earlier imports' notes travel with the file: OpenDKIM's dropped options are still listed
    assert "# | | - TrustAnchorFile /usr/share/dns/root.key" in text
    assert "# | Behaviour changes (what authmilter does differently from OpenDMARC with this config):" in text

    check = check_config_here(cfg, tmp_path)
    assert "signing domains: example.com" in check.stdout


def test_prefer_imported_takes_the_other_side_of_every_conflict(debian, tmp_path):
    cfg = tmp_path / "a.toml"
    assert run("import-opendkim", str(debian["opendkim"]), "-o", str(cfg)).returncode == 0
    out = tmp_path / "b.toml"
    r = run("import-opendmarc", str(debian["opendmarc"]), "-c", str(cfg), "-o", str(out), "--prefer-imported")
    assert r.returncode == 0, r.stderr
    s = load_settings(out)
    assert (s.socket, s.user, s.socket_mode) == ("local:/run/opendmarc/opendmarc.sock", "opendmarc", "0775")
    assert "kept the imported value" in r.stderr


def test_existing_config_is_validated_first_and_nothing_is_written(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\non_dmarc_reject = \"sometimes\"\n")
    out = tmp_path / "out.toml"
    r = run("import-policyd-spf", str(DATA / "migrate" / "policyd-spf.conf"), "-c", str(bad), "-o", str(out))
    assert r.returncode == 2 and "policy.on_dmarc_reject: must be one of" in r.stderr
    assert not out.exists()


def test_unwritable_output_is_exit_2_without_a_traceback(tmp_path):
    r = run("import-policyd-spf", str(DATA / "migrate" / "policyd-spf.conf"), "-o", str(tmp_path / "no" / "x.toml"))
    assert r.returncode == 2 and "cannot write: No such file or directory; nothing written" in r.stderr
    assert "Traceback" not in r.stderr


def test_merge_rules():
    existing = {"socket": "unix:/a", "policy": {"trusted_forwarders": ["10.0.0.1"], "on_dmarc_reject": "reject"},
                "signing": {"key_table": "csl:a=a:s:/k", "signing_table": "csl:*=a"}}
    imported = {"socket": "unix:/b", "log_level": "debug",
                "policy": {"trusted_forwarders": ["10.0.0.1", "192.0.2.0/24"], "on_dmarc_reject": "reject"},
                "signing": {"key_table": "csl:b=b:s:/k2", "signing_table": "csl:*=b"}}
    m = merge(existing, imported, prefer_imported=False, existing_name="E", imported_name="I")
    assert m.data["socket"] == "unix:/a" and m.data["log_level"] == "debug"
    assert m.data["policy"]["trusted_forwarders"] == ["10.0.0.1", "192.0.2.0/24"]      # joined, no conflict
    assert m.data["signing"] == existing["signing"]
    # one conflict for the socket, one for the key_table/signing_table pair; equal values are none
    assert [c.split(":")[0] for c in m.conflicts] == ["socket", "signing.key_table"]
    assert existing["policy"]["trusted_forwarders"] == ["10.0.0.1"]                   # input not modified
    m = merge(existing, imported, prefer_imported=True)
    assert m.data["socket"] == "unix:/b" and m.data["signing"] == imported["signing"]


# -- a file of the wrong kind ------------------------------------------------------------------

KIND_FILES = {
    "opendkim": DATA / "debian" / "opendkim.conf",
    "opendmarc": DATA / "migrate" / "opendmarc.conf",
    "policyd-spf": DATA / "migrate" / "policyd-spf.conf",
}


WRONG_KIND = [(f"import-{wanted}", given) for wanted in ("opendkim", "opendmarc", "policyd-spf")
              for given in ("opendkim", "opendmarc", "policyd-spf", "toml", "defaults", "binary") if given != wanted]


@pytest.mark.parametrize("command,given", WRONG_KIND)
def test_wrong_kind_is_refused_naming_the_right_command(tmp_path, command, given):
    if given in KIND_FILES:
        path = KIND_FILES[given]
    elif given == "toml":
        path = DATA.parent.parent / "examples" / "authmilter.toml"
    elif given == "defaults":
        path = DATA / "debian" / "default-opendkim"
    else:
        path = tmp_path / "a.out"
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + os.urandom(64))
    out = tmp_path / "out.toml"
    r = run(command, str(path), "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert not out.exists()
    right = {"opendkim": "use `authmilter import-opendkim", "opendmarc": "use `authmilter import-opendmarc",
             "policyd-spf": "use `authmilter import-policyd-spf", "toml": "use `authmilter check-config -c",
             "defaults": "import-opendkim reads /etc/default/opendkim with --defaults",
             "binary": "is a binary file"}[given]
    assert right in r.stderr and "nothing written" in r.stderr


def test_the_issue_case_opendmarc_conf_given_to_import_opendkim(tmp_path):
    """Issue 10: `import-opendkim opendmarc.conf` exited 0 and wrote a signing config."""
    out = tmp_path / "out.toml"
    r = run("import-opendkim", str(DATA / "migrate" / "opendmarc.conf"), "-o", str(out))
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.strip() == (f"authmilter import-opendkim: {DATA / 'migrate' / 'opendmarc.conf'} is an "
                                "opendmarc.conf (PublicSuffixList), not an opendkim.conf; use `authmilter "
                                f"import-opendmarc {DATA / 'migrate' / 'opendmarc.conf'}`; nothing written")


@pytest.mark.parametrize("text,kind", [
    ("Include /etc/opendkim.d/main.conf\n", "opendkim"),          # OpenDMARC has no Include
    ("Socket local:/run/x.sock\nUserID milter\n", "either"),      # both daemons spell these alike
    ("# only a comment\n\n", "empty"),
    ("Socket = local:/run/pyspf-milter/pyspf-milter.sock\n", "policyd-spf"),
    ('socket = "unix:/run/authmilter/authmilter.sock"\n', "authmilter"),
    ("POSTGREY_OPTS=\"--inet=10023\"\n", "postgrey"),
    ("hello world\n", "unknown"),
])
def test_sniff(tmp_path, text, kind):
    from authmilter.config.daemonconf import sniff

    p = tmp_path / "f"
    p.write_text(text)
    assert sniff(str(p)).kind == kind


def test_milter_only_options_are_accepted_by_both_milter_importers_only(tmp_path):
    p = tmp_path / "milter.conf"
    p.write_text("Socket local:/run/x.sock\nUserID milter\n")
    for command in ("import-opendkim", "import-opendmarc"):
        assert run(command, str(p)).returncode == 0
    r = run("import-policyd-spf", str(p))
    assert r.returncode == 2 and "names only milter options (Socket, UserID)" in r.stderr
