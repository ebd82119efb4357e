"""The shipped examples are usable as they stand."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import require

from authmilter.config.opendkim import KeyTable, SigningTable

REPO = Path(__file__).resolve().parents[2]
EX = REPO / "examples"


def test_systemd_unit_verifies(tmp_path):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze not installed")
    venv_bin = Path(sys.executable).with_name("authmilter")
    unit = tmp_path / "authmilter.service"
    unit.write_text((EX / "systemd" / "authmilter.service").read_text()
                    .replace("/usr/local/bin/authmilter", str(venv_bin)))
    # Documentation= names the man pages: systemd-analyze runs man(1) for each, so they are
    # installed (as `authmilter man` prints them) where this man looks.
    manpath = tmp_path / "man"
    for section, name in (("8", "authmilter.8"), ("5", "authmilter.toml.5")):
        (manpath / f"man{section}").mkdir(parents=True)
        page = subprocess.run([str(venv_bin), "man", "--section", section], capture_output=True, check=True).stdout
        (manpath / f"man{section}" / name).write_bytes(page)
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                         env={**os.environ, "MANPATH": str(manpath)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "man:authmilter(8)" in unit.read_text()
    text = unit.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -USR1 $MAINPID" in text


def test_example_tables_parse():
    kt = KeyTable.load("file:" + str(EX / "opendkim" / "KeyTable"))
    st = SigningTable.load("refile:" + str(EX / "opendkim" / "SigningTable"))
    names = [name for name, _ in st.lookup("alice@example.com", multiple=True)]
    assert names == ["2026a._domainkey.example.com", "ed._domainkey.example.com"]
    assert all(n in kt.entries for n in names)


def test_sendmail_and_postfix_snippets_name_the_same_socket_syntaxes():
    mc = (EX / "sendmail.mc").read_text()
    assert "INPUT_MAIL_FILTER(`authmilter'" in mc and "T=S:" in mc
    main_cf = (EX / "postfix" / "main.cf").read_text()
    assert "milter_default_action = tempfail" in main_cf
    assert "milter_macro_daemon_name=ORIGINATING" in (EX / "postfix" / "master.cf").read_text()


def test_sendmail_mc_is_what_check_config_prints():
    """examples/sendmail.mc = its `dnl` header + the lines `check-config` prints for the
    socket of examples/authmilter.toml (the e2e suite runs Sendmail with those lines)."""
    from authmilter.config.schema import load_settings
    from authmilter.config.sendmail import mc_lines

    lines = (EX / "sendmail.mc").read_text().splitlines()
    printed = mc_lines(load_settings(str(EX / "authmilter.toml")))
    assert lines[-len(printed):] == printed
    assert all(line.startswith("dnl ") for line in lines[:-len(printed)])
    assert "S=local:/run/authmilter/authmilter.sock" in printed[1]


def test_readme_sendmail_block_is_what_check_config_prints():
    from authmilter.config.schema import load_settings
    from authmilter.config.sendmail import mc_lines

    readme = (REPO / "README.md").read_text()
    block = readme.split("```m4\n", 1)[1].split("```", 1)[0].splitlines()
    assert block == mc_lines(load_settings(str(EX / "authmilter.toml")))
