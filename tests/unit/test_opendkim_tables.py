"""OpenDKIM dataset grammar (opendkim(8) DATA SETS, opendkim.conf(5) KeyTable/SigningTable/PeerList)."""
from __future__ import annotations

from pathlib import Path

import pytest

from authmilter.config.hostlist import HostList, ntop
from authmilter.config.opendkim import (
    Dataset,
    KeyTable,
    KeyTableEntry,
    SigningTable,
    expand_keyname,
    glob_to_regex,
    split_spec,
)
from authmilter.errors import ConfigError, DomainError


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- dataset specs ----------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("file:/etc/opendkim/KeyTable", ("file", "/etc/opendkim/KeyTable")),
    ("refile:/etc/opendkim/SigningTable", ("refile", "/etc/opendkim/SigningTable")),
    ("FILE:/x", ("file", "/x")),
    ("/etc/opendkim/KeyTable", ("file", "/etc/opendkim/KeyTable")),   # bare absolute path
    ("csl:a=b,c=d", ("csl", "a=b,c=d")),
    ("127.0.0.1", ("csl", "127.0.0.1")),                               # bare non-path: a list
])
def test_dataset_spec_types(spec, expected):
    assert split_spec(spec) == expected


@pytest.mark.parametrize("spec,reason", [
    ("ldap://ldap.example/dc=example", "ldap: datasets are not supported"),
    ("dsn:mysql://u@h/db/table=t", "dsn: datasets are not supported"),
    ("/etc/opendkim/keytable.db", "Berkeley DB datasets are not supported"),
    ("txt:/etc/x", "unknown dataset type 'txt'"),
])
def test_unsupported_dataset_types_name_the_setting(spec, reason):
    with pytest.raises(ConfigError) as exc:
        split_spec(spec, "/etc/authmilter.toml", "signing.key_table")
    assert reason in str(exc.value)
    assert str(exc.value).startswith("/etc/authmilter.toml: signing.key_table: ")


def test_missing_table_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"/nonexistent/KeyTable: file not found"):
        KeyTable.load("file:/nonexistent/KeyTable")


# -- file: grammar ------------------------------------------------------------------------

def test_file_comments_blank_lines_and_values(tmp_path):
    p = write(tmp_path, "t", "# comment\n\n   \nkey1 value one  # trailing comment\n"
                             "  key2\tvalue2\r\nkey3\nkey1 shadowed\n")
    ds = Dataset.open(f"file:{p}", icase=False)
    assert [(r.key, r.value, r.line) for r in ds.records] == [
        ("key1", "value one", 4), ("key2", "value2", 5), ("key3", None, 6), ("key1", "shadowed", 7)]
    assert ds.get("key1").value == "value one"        # the first equal key wins
    assert ds.get("KEY1") is None                      # KeyTable lookups are case-sensitive


def test_file_has_no_continuation_lines(tmp_path):
    """An indented line is a record of its own (dkimf_db_open trims each line), never a continuation."""
    p = write(tmp_path, "t", "a b\n  c d\n")
    ds = Dataset.open(f"file:{p}", icase=True)
    assert ds.get("c").value == "d" and ds.get("a").value == "b"


def test_icase_dataset_folds_ascii_only(tmp_path):
    p = write(tmp_path, "t", "Alice@Example.COM k\n")
    ds = Dataset.open(f"file:{p}", icase=True)
    assert ds.get("alice@example.com").value == "k"


def test_csl_items_and_values():
    ds = Dataset.open("csl: a = b ,c,,d=e:f", icase=False)
    assert [(r.key, r.value) for r in ds.records] == [("a", "b"), ("c", None), ("d", "e:f")]
    assert ds.records[2].where() == "csl item 3"


# -- refile: grammar ------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,subject,hit", [
    ("*@example.com", "alice@example.com", True),
    ("*@example.com", "alice@sub.example.com", False),
    ("*@example.com", "alice@exampleXcom", False),         # "." is literal
    ("alice+tag@*", "alice+tag@example.com", True),        # "+" is literal
    ("alice+tag@*", "aliceetag@example.com", False),
    ("*", "anything@at.all", True),
    ("*@*.example.com", "a@b.c.example.com", True),
    ("ALICE@*", "alice@example.com", True),                # SigningTable: REG_ICASE
    ("user?@x.test", "use@x.test", True),                  # other ERE syntax keeps its meaning
    ("[ab]ob@x.test", "bob@x.test", True),
    ("a@x.test|b@y.test", "a@x.test.evil", True),          # "^a|b$": each side anchored on one end only
])
def test_refile_patterns_as_dkimf_mkregexp(pattern, subject, hit):
    assert bool(glob_to_regex(pattern, icase=True).search(subject)) is hit


@pytest.mark.parametrize("pattern,reason", [
    (r"a\.b@*", "backslashes and POSIX bracket classes are not supported"),
    ("[[:alpha:]]*@x", "backslashes and POSIX bracket classes are not supported"),
    ("(a@*", "is not a valid expression"),
])
def test_refile_unsupported_or_broken_patterns_name_file_and_line(tmp_path, pattern, reason):
    p = write(tmp_path, "st", f"# header\n{pattern} key\n")
    with pytest.raises(ConfigError) as exc:
        Dataset.open(f"refile:{p}", icase=True)
    assert str(exc.value).startswith(f"{p}:2: ") and reason in str(exc.value)


def test_refile_indented_line_is_an_error_not_a_continuation(tmp_path):
    """OpenDKIM reads an empty pattern for an indented refile line and ignores it silently."""
    p = write(tmp_path, "st", "*@example.com k1\n    *@example.org k2\n  # only a comment\n")
    with pytest.raises(ConfigError) as exc:
        SigningTable.load(f"refile:{p}")
    assert exc.value.line == 2 and exc.value.file == str(p)
    assert "starts with white space" in str(exc.value)


def test_refile_matches_in_file_order(tmp_path):
    p = write(tmp_path, "st", "*@*.example.com k-any\nalice@sub.example.com k-alice\n*@sub.example.com k-sub\n")
    st = SigningTable.load(f"refile:{p}")
    assert [k for k, _ in st.lookup("alice@sub.example.com")] == ["k-any"]
    assert [k for k, _ in st.lookup("alice@sub.example.com", multiple=True)] == ["k-any", "k-alice", "k-sub"]
    assert st.lookup("alice@example.com") == []


# -- KeyTable ---------------------------------------------------------------------------------

def test_keytable_entries(tmp_path):
    p = write(tmp_path, "kt", "# name domain:selector:keypath\n"
                              "sel._domainkey.example.com  Example.COM:sel:/etc/keys/example.private\n"
                              "pct  %:s2026:/etc/keys/%/s2026.private\n"
                              "rel  example.net:rel:./keys/rel.private\n"
                              "colon example.net:c:/keys/with:colon.private\n"
                              "inline example.net:ed:MC4CAQAwBQYDK2VwBCIEIEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE=\n")
    kt = KeyTable.load(str(p))
    e = kt.get("sel._domainkey.example.com")
    assert (e.domain, e.selector, e.keypath) == ("example.com", "sel", "/etc/keys/example.private")
    assert e.where == f"file:{p}:2"
    assert kt.get("SEL._domainkey.example.com") is None
    assert kt.get("colon").keypath == "/keys/with:colon.private"   # the last field takes the rest
    assert kt.get("inline").inline and not kt.get("rel").inline
    assert kt.get("pct").per_domain and not kt.get("rel").per_domain


@pytest.mark.parametrize("line,reason", [
    ("k1", "expected 'domain:selector:keypath' after the key name"),
    ("k1 example.com:sel", "expected 'domain:selector:keypath'"),
    ("k1 example.com::/k", "expected 'domain:selector:keypath'"),
    ("k1 exa_mple.com:sel:/k", "bad signing domain"),
    ("k1 example.com:s%l:/k", "bad selector"),
    ("k1 example.com:sel:keys/k.private", "must be absolute or start with ./ or ../"),
])
def test_keytable_syntax_errors_name_file_and_line(tmp_path, line, reason):
    p = write(tmp_path, "kt", f"ok example.com:ok:/k\n\n{line}\n")
    with pytest.raises(ConfigError) as exc:
        KeyTable.load(f"file:{p}")
    assert str(exc.value).startswith(f"{p}:3: ") and reason in str(exc.value)


def test_keytable_csl():
    kt = KeyTable.load("csl:k1=example.com:s1:/keys/k1.private,k2=example.org:s2:/keys/k2.private")
    assert kt.get("k2") == KeyTableEntry("k2", "example.org", "s2", "/keys/k2.private")


def test_expand_keyname_percent():
    pct_domain = KeyTableEntry("n", "%", "sel", "/keys/%/sel.private")
    assert expand_keyname(pct_domain, "example.org") == ("example.org", "sel", "/keys/example.org/sel.private")
    fixed = KeyTableEntry("n", "example.com", "sel", "/keys/%.private")     # % in a path is the d= domain
    assert expand_keyname(fixed, "other.org") == ("example.com", "sel", "/keys/example.com.private")
    relative = KeyTableEntry("n", "%", "sel", "./keys/%.private")            # only absolute paths substitute
    assert expand_keyname(relative, "x.org") == ("x.org", "sel", "./keys/%.private")
    with pytest.raises(DomainError):
        expand_keyname(pct_domain, "")


# -- SigningTable ----------------------------------------------------------------------------

def table(tmp_path: Path, text: str, kind: str = "file") -> SigningTable:
    return SigningTable.load(f"{kind}:{write(tmp_path, 'st', text)}")


FILE_TABLE = """\
alice@sub.example.com    k-full
sub.example.com          k-host
alice@.example.com       k-uparent
.example.com             k-parent
alice@.com               k-ucom
alice@*                  k-ustar
*                        k-star
"""


def test_file_lookup_order_is_full_host_then_parents_then_user_star_then_star(tmp_path):
    st = table(tmp_path, FILE_TABLE)
    hits = st.lookup("alice@sub.example.com", multiple=True)
    assert [k for k, _ in hits] == ["k-full", "k-host", "k-uparent", "k-parent", "k-ucom", "k-ustar", "k-star"]
    assert hits[2][1].endswith('"alice@.example.com" matched (user@.parent)')


@pytest.mark.parametrize("address,first", [
    ("alice@sub.example.com", "k-full"),
    ("bob@sub.example.com", "k-host"),
    ("alice@deep.sub.example.com", "k-uparent"),      # .sub.example.com is not listed
    ("bob@deep.example.com", "k-parent"),
    ("alice@example.net", "k-ustar"),
    ("alice@example.com", "k-ucom"),                  # the host is example.com: parents start at .com
    ("bob@example.net", "k-star"),
    ("Alice@SUB.EXAMPLE.COM", "k-full"),
])
def test_first_match_per_lookup_step(tmp_path, address, first):
    assert [k for k, _ in table(tmp_path, FILE_TABLE).lookup(address)] == [first]


def test_parent_walk_skips_the_host_itself(tmp_path):
    """'a.b.example.com' tries .b.example.com, .example.com, .com — never '.a.b.example.com'."""
    st = table(tmp_path, ".a.b.example.com k0\n.b.example.com k1\n")
    assert [k for k, _ in st.lookup("x@a.b.example.com", multiple=True)] == ["k1"]


def test_keyname_percent_and_signer_field(tmp_path):
    st = table(tmp_path, "* %:postmaster@%\n")
    m = st.matches("alice@Example.ORG")[0]
    assert (m.keyname, m.signer) == ("example.org", "postmaster@example.org")


def test_non_ascii_addresses_only_match_ascii_steps(tmp_path):
    st = table(tmp_path, "example.org k-host\n* k-star\n")
    assert [k for k, _ in st.lookup("jösé@example.org", multiple=True)] == ["k-host", "k-star"]
    assert [k for k, _ in st.lookup("x@bücher.example", multiple=True)] == ["k-star"]   # A-label domain


@pytest.mark.parametrize("address", ["", "no-at-sign", "@example.com", "user@", "user@bad..domain"])
def test_unusable_addresses_match_nothing(tmp_path, address):
    assert table(tmp_path, "* k\n").lookup(address) == []


@pytest.mark.parametrize("line", ["*@example.com k", "alice@*.example.com k", "*@* k"])
def test_wildcards_in_a_file_table_are_errors(tmp_path, line):
    p = write(tmp_path, "st", f"ok@example.com k\n{line}\n")
    with pytest.raises(ConfigError) as exc:
        SigningTable.load(f"file:{p}")
    assert str(exc.value).startswith(f"{p}:2: ") and "wildcards need refile:" in str(exc.value)


def test_signer_field_must_be_an_address(tmp_path):
    p = write(tmp_path, "st", "*@example.com k1:%\n")
    with pytest.raises(ConfigError, match=rf"{p}:1: .*i= signer '%' after ':' is not an address"):
        SigningTable.load(f"refile:{p}")


def test_pattern_without_key_name_is_an_error(tmp_path):
    p = write(tmp_path, "st", "*@example.com\n")
    with pytest.raises(ConfigError, match=rf"{p}:1: .*no KeyTable name"):
        SigningTable.load(f"refile:{p}")


def test_csl_signing_table():
    st = SigningTable.load("csl:example.org=k-org,*=k-star")
    assert [k for k, _ in st.lookup("a@example.org", multiple=True)] == ["k-org", "k-star"]


# -- InternalHosts ----------------------------------------------------------------------------

HOSTS = ["127.0.0.1", "10.0.0.0/8", "!10.1.0.0/16", "10.1.2.3", "[192.0.2.7]", "2001:db8::/32",
         "!2001:db8:1::/48", "::1", "relay.example.com", ".trusted.example.net", "!bad.trusted.example.net"]


@pytest.mark.parametrize("ip,name,inside", [
    ("127.0.0.1", "", True),
    ("::1", "", True),
    ("10.9.8.7", "", True),
    ("10.1.9.9", "", False),          # the negated /16 is more specific than the /8
    ("10.1.2.3", "", True),           # the exact address is more specific still
    ("192.0.2.7", "", True),          # entries may be bracketed
    ("[192.0.2.7]", "", True),        # and so may the client address
    ("2001:db8::25", "", True),
    ("2001:db8:1::25", "", False),
    ("::ffff:10.9.8.7", "", True),    # IPv4-mapped: checked as IPv4
    ("198.51.100.1", "relay.example.com", True),
    ("198.51.100.1", "RELAY.example.com", True),
    ("198.51.100.1", "mx.trusted.example.net", True),
    ("198.51.100.1", "bad.trusted.example.net", False),
    ("10.9.8.7", "bad.trusted.example.net", True),   # a negated name only ends the name check
    ("198.51.100.1", "example.com", False),
    (None, "", False),
    ("not-an-ip", "", False),
])
def test_host_list_membership(ip, name, inside):
    assert HostList.load(HOSTS).contains(ip, name) is inside


def test_host_list_from_files(tmp_path):
    f = write(tmp_path, "TrustedHosts", "# trusted\n127.0.0.1\n192.168.0.0/16  # LAN\n")
    r = write(tmp_path, "patterns", "198.51.100.*\n")
    hosts = HostList.load([f"file:{f}", f"refile:{r}", "csl:203.0.113.5,203.0.113.6"])
    assert hosts.contains("192.168.4.4") and hosts.contains("198.51.100.77") and hosts.contains("203.0.113.6")
    assert not hosts.contains("198.51.99.1")
    # OpenDKIM also asks a refile: host list for "ADDR/BITS" strings, so the pattern
    # matches 198.51.101.1 through its /22 network "198.51.100.0/22" (parity-tested).
    assert hosts.contains("198.51.101.1")


@pytest.mark.parametrize("entry,reason", [
    ("10.1.2.3/8", "host bits set; write 10.0.0.0/8"),
    ("192.0.2/24", "write all four octets"),
    ("2001:0db8::/32", "write '2001:db8::'"),
    ("1.2.3.4/33", "bad prefix length"),
    ("10.0.0.0/08", "bad prefix length"),
    ("mail.example.com/24", "a /prefix needs an IP address"),
    ("postmaster@example.com", "not an IP address, CIDR network or host name"),
    ("!", "empty entry"),
])
def test_host_entries_that_could_never_match_are_errors(tmp_path, entry, reason):
    with pytest.raises(ConfigError, match=reason) as exc:
        HostList.load([entry], source="/etc/authmilter.toml")
    assert exc.value.key == "signing.internal_hosts"
    p = write(tmp_path, "hosts", f"127.0.0.1\n{entry}\n")
    with pytest.raises(ConfigError) as exc:
        HostList.load([f"file:{p}"])
    assert (exc.value.file, exc.value.line) == (str(p), 2)


def test_ntop_matches_glibc_text_forms():
    import ipaddress

    assert ntop(ipaddress.ip_address("::ffff:192.0.2.1")) == "::ffff:192.0.2.1"
    assert ntop(ipaddress.ip_address("::192.0.2.1")) == "::192.0.2.1"
    assert ntop(ipaddress.ip_address("::1")) == "::1"
    assert ntop(ipaddress.ip_address("2001:DB8:0:0:1::1")) == "2001:db8::1:0:0:1"


def test_integer_address_walk_agrees_with_opendkims_string_walk(tmp_path):
    """Exact lists use an integer walk; with a refile pattern present the string walk runs."""
    import random

    never = write(tmp_path, "never", "no-such-host.invalid\n")
    fast = HostList.load(HOSTS)
    slow = HostList.load([*HOSTS, f"refile:{never}"])
    rng = random.Random(6376)
    candidates = ["127.0.0.1", "::1", "10.1.2.3", "192.0.2.7", "2001:db8:1::1", "::ffff:10.1.0.1"]
    candidates += [f"10.1.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(50)]
    candidates += [f"10.{rng.randrange(256)}.0.1" for _ in range(30)]
    candidates += [f"2001:db8:{rng.randrange(4):x}::{rng.randrange(65536):x}" for _ in range(50)]
    assert slow._patterns and not fast._patterns
    for ip in candidates:
        assert fast.contains_ip(ip) == slow.contains_ip(ip), ip
