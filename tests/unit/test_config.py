"""Config is validated data: errors name file, key and reason; the example covers every key."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from authmilter.config.schema import iter_schema, load_settings, settings_from_dict
from authmilter.config.sockets import parse_socket
from authmilter.errors import ConfigError
from authmilter.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
AUTHMILTER = [sys.executable, "-m", "authmilter.cli"]


def write(tmp_path, text):
    p = tmp_path / "authmilter.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,key,reason", [
    ('sokcet = "unix:/x"\n', "sokcet", "unknown key (did you mean socket?)"),
    ('[dns]\ntimeout_s = "5"\n', "dns.timeout_s", "expected a number"),
    ('[dns]\nservers = ["1.2.3.4:99999"]\n', "dns.servers", "bad server"),
    ('[signing]\nmultiple_signatures = 1\n', "signing.multiple_signatures", "expected true or false"),
    ('[verify]\ndmarc_mode = "rfc4408"\n', "verify.dmarc_mode", "must be one of rfc9989, rfc7489"),
    ('[policy]\non_dmarc_reject = "discard"\n', "policy.on_dmarc_reject", "must be one of"),
    ('socket = "tcp:25"\n', "socket", "unknown socket type"),
    ('socket_mode = "rw"\n', "socket_mode", "octal"),
    ('[signing]\ninternal_hosts = ["10.0.0.0/33"]\n', "signing.internal_hosts", "bad prefix length"),
    ('[verify]\ntrusted_relays = ["relay.example"]\n', "verify.trusted_relays", "matched by address only"),
    ('[policy]\ntrusted_forwarders = ["10.1.2.3/8"]\n', "policy.trusted_forwarders", "host bits set"),
    ('dns = 5\n', "dns", "expected a table"),
    ('[dns]\nresult_cache_entries = -1\n', "dns.result_cache_entries", "must not be negative"),
])
def test_config_error_names_file_key_and_reason(tmp_path, text, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Runtime.load(load_settings(path))   # what start-up and check-config run
    assert info.value.file == str(path) and info.value.key == key
    assert reason in info.value.reason


def test_missing_file_and_syntax_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_settings(write(tmp_path, "socket = \n"))


def test_example_config_covers_every_key_with_its_default():
    data = tomllib.loads((REPO / "examples" / "authmilter.toml").read_text())
    flat = {}
    for k, v in data.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    for key, default, doc in iter_schema():
        assert key in flat, f"examples/authmilter.toml lacks {key}"
        value = tuple(flat[key]) if isinstance(flat[key], list) else flat[key]
        assert value == default, key
        assert doc, f"{key} has no doc"
    settings_from_dict(data, "example")


@pytest.mark.parametrize("spec,postfix", [
    ("unix:/run/a.sock", "unix:/run/a.sock"),
    ("local:/run/a.sock", "unix:/run/a.sock"),
    ("inet:8891@127.0.0.1", "inet:127.0.0.1:8891"),
    ("inet6:8891@::1", "inet:[::1]:8891"),
])
def test_socket_syntaxes_and_their_postfix_spelling(spec, postfix):
    assert parse_socket(spec).postfix() == postfix


def test_check_config_cli_exit_codes(tmp_path):
    good = write(tmp_path, 'socket = "inet:8891@127.0.0.1"\n[signing]\nenabled = false\n')
    out = subprocess.run(AUTHMILTER + ["check-config", "-c", str(good)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "smtpd_milters = inet:127.0.0.1:8891" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[dns]\ntimeout = 3\n')
    out = subprocess.run(AUTHMILTER + ["check-config", "-c", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    assert f"{bad}: dns.timeout: unknown key" in out.stderr


def test_internal_hosts_accept_opendkim_host_grammar():
    s = settings_from_dict({"signing": {"internal_hosts": ["10.0.0.0/8", "!10.1.0.0/16", "relay.example.com"]}})
    assert "!10.1.0.0/16" in s.signing.internal_hosts


def test_reload_refusal_names_the_key_that_would_fall_back_to_its_default():
    from authmilter.config.schema import reload_refusal, settings_from_dict

    old = settings_from_dict({"dns": {"servers": ["127.0.0.1:5353"]}, "signing": {"enabled": False}})
    assert reload_refusal(old, settings_from_dict({})) is not None                       # empty file
    why = reload_refusal(old, settings_from_dict({"signing": {"enabled": False}}))
    assert why is not None and "dns.servers" in why
    assert reload_refusal(old, settings_from_dict({"dns": {"servers": []}, "signing": {"enabled": False}})) is None
    assert reload_refusal(old, settings_from_dict({"dns": {"servers": ["127.0.0.1:5353"]},
                                                   "signing": {"enabled": False}, "authserv_id": "x"})) is None
