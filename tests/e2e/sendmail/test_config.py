"""The .mc lines `authmilter check-config` prints for Sendmail, as Sendmail reads them
(issue 16 item 3): what they put into sendmail.cf, that authmilter gets its macros even
from a .mc whose lists leave them out, and that F=T fails closed."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmilter.config.schema import load_settings
from authmilter.config.sendmail import MACROS, mc_lines

from ..harness import auth_results, free_port, header_values, make_message, wait_for
from . import dist
from .conftest import USERS
from .mta import Sendmail, queue_id_of

pytestmark = pytest.mark.e2e


def test_the_session_runs_on_exactly_the_printed_lines(sm):
    assert sm.milter_lines == mc_lines(load_settings(str(sm.milter.config)))
    mc = (sm.sendmail.dir / "sendmail.mc").read_text()
    assert "\n".join(sm.milter_lines) in mc


def test_sendmail_cf_has_the_filter_and_the_macro_lists(sm):
    cf = sm.sendmail.cf.read_text().splitlines()
    port = sm.milter.socket_spec.port
    assert f"Xauthmilter, S=inet:{port}@127.0.0.1, F=T, T=S:30s;R:2m;E:5m" in cf
    assert "O InputMailFilters=authmilter" in cf
    options = {"confMILTER_MACROS_CONNECT": "connect", "confMILTER_MACROS_ENVFROM": "envfrom"}
    for name, value in MACROS:
        assert f"O Milter.macros.{options[name]}={value}" in cf


@contextlib.contextmanager
def _another_sendmail(sm, lines: list[str]) -> Iterator[Sendmail]:
    """A second private Sendmail beside the session's, with other authmilter lines."""
    base = Path(tempfile.mkdtemp(prefix="authmilter-e2e-sendmail2-"))
    base.chmod(0o755)
    other = Sendmail(base, dist.ensure(), lines, users=USERS)
    try:
        other.start()
        yield other
    finally:
        other.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_macros_reach_authmilter_when_the_mc_lists_leave_them_out(sm, token):
    """A .mc that defines the lists for some other filter, without any name authmilter
    reads: Sendmail 8.17 still sends j, i and {auth_authen}, because authmilter asked for
    them at negotiation (smfi_setsymlist). Signing via AUTH, the queue id in the log line
    and the authserv-id from j all work."""
    filt = next(line for line in sm.milter_lines if line.startswith("INPUT_MAIL_FILTER"))
    lines = [filt, "define(`confMILTER_MACROS_CONNECT', `_')", "define(`confMILTER_MACROS_ENVFROM', `{mail_addr}')",
             "define(`confMILTER_MACROS_EOM', `{msg_id}')"]
    with _another_sendmail(sm, lines) as other:
        raw = make_message(token, from_="alice@example.com", subject="macros from setsymlist")
        reply = other.smtp(raw, mail_from="alice@example.com", client_ip="127.0.0.20", helo="laptop",
                           login=("alice@example.com", USERS["alice@example.com"]), msa=True)
        assert reply.accepted, reply
        qid = queue_id_of(reply)
        delivered = other.wait_delivered(token)
        assert [v for v in header_values(delivered, "DKIM-Signature") if "d=example.com" in v]
        line = wait_for(lambda: next((ln for ln in sm.milter.log_tail(400_000).splitlines()
                                      if f"{qid}: action=" in ln), None), f"log line for {qid}")
        assert "via=authenticated" in line

        token2 = token + "b"
        reply = other.smtp(make_message(token2, from_="bob@spfpass.test"), mail_from="bob@spfpass.test")
        assert reply.accepted, reply
        assert auth_results(other.wait_delivered(token2)), "authserv-id from j (mx.inbox.test)"


def test_authmilter_unreachable_is_a_temporary_failure(sm, token):
    """F=T: with nothing listening on the milter socket, Sendmail answers 4xx, and the
    `sendmail` command's message waits in the client queue instead of leaving unsigned."""
    dead = f"INPUT_MAIL_FILTER(`authmilter', `S=inet:{free_port()}@127.0.0.1, F=T, T=S:30s;R:2m;E:5m')"
    with _another_sendmail(sm, [dead]) as other:
        reply = other.smtp(make_message(token, from_="bob@spfpass.test"), mail_from="bob@spfpass.test")
        assert 400 <= reply.code < 500, reply
        other.sendmail(make_message(token + "b", from_="alice@example.com"), "alice@example.com")
        assert wait_for(lambda: list(other.client_queue_dir.glob("qf*")), "the MSP to keep the message queued")
        assert other.deliveries(token) == [] and other.deliveries(token + "b") == []
