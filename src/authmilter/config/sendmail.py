"""The sendmail.mc lines that hook authmilter into Sendmail (`check-config` prints them,
examples/sendmail.mc shows them, tests/e2e/sendmail/ runs Debian's Sendmail 8.17 with them).

* ``INPUT_MAIL_FILTER`` with ``F=T``: when authmilter cannot be reached the client gets a
  temporary failure (fail closed; ``F=`` empty would pass mail unchecked and unsigned).
  ``T=E:`` must exceed ``[dns] message_budget_s``: the DNS work happens at end-of-message.
* The macro lists. authmilter reads ``j`` (the authserv-id when ``authserv_id`` is empty)
  and ``{daemon_name}`` (``sign_daemon_names``) at connect, ``i`` (the queue id of the log
  line) and ``{auth_type}``/``{auth_authen}`` (SMTP AUTH: outbound, and the key the user
  may sign with) at MAIL. Sendmail's default lists hold all of them, and authmilter also
  asks for them itself (``smfi_setsymlist``, honoured since 8.14; the e2e suite checks a
  Sendmail whose .mc lists omit every one). The defines below are those defaults, spelled
  out so an admin sees what is needed; a .mc that already defines these lists should keep
  the names in its own lists rather than take these (a ``define`` replaces the list for
  every filter of the host).
"""
from __future__ import annotations

from .schema import Settings
from .sockets import parse_socket

# Sendmail 8.17's defaults (cf/m4/cfhead.m4); authmilter's names are among them.
MACROS = (
    ("confMILTER_MACROS_CONNECT", "j, _, {daemon_name}, {if_name}, {if_addr}"),
    ("confMILTER_MACROS_ENVFROM",
     "i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}"),
)
READS = {"confMILTER_MACROS_CONNECT": ("j", "{daemon_name}"),
         "confMILTER_MACROS_ENVFROM": ("i", "{auth_type}", "{auth_authen}")}


def mc_lines(settings: Settings) -> list[str]:
    """The lines to add to sendmail.mc before its MAILER() lines (then rebuild sendmail.cf)."""
    spec = parse_socket(settings.socket)
    return [
        "dnl F=T: 4xx while authmilter is unreachable (fail closed); T=E: above [dns] message_budget_s",
        f"INPUT_MAIL_FILTER(`authmilter', `S={spec.sendmail()}, F=T, T=S:30s;R:2m;E:5m')",
        "dnl authmilter reads j, {daemon_name} (connect) and i, {auth_type}, {auth_authen} (MAIL):",
        "dnl Sendmail's default lists, below; if your .mc defines these lists, keep those names in them",
        *(f"define(`{name}', ``{value}'')" for name, value in MACROS),
        "dnl {daemon_name} is the DAEMON_OPTIONS Name= (MTA, MSA); SMTP AUTH alone marks mail outbound,",
        "dnl so list MSA in [signing] sign_daemon_names only if that port requires AUTH (M=Ea)",
    ]
