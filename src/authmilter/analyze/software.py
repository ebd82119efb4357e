"""Which MTA wrote a Received header, and which version, from what it wrote about itself.

Read from the "by" clause comments (Postfix, Sendmail, Exim...), the "with" clause
(hMailServer, Microsoft SMTP Server) and Microsoft's ``id`` — the Exchange build, mapped
to product and update with the build numbers Microsoft publishes ("Exchange Server build
numbers and release dates"). A build missing from the tables is still named by its
product and service pack; nothing here guesses past what the header says.
"""
from __future__ import annotations

import re

from ..checks.received import ReceivedFields

__all__ = ["exchange_release", "software_of"]

# build (third component) -> update, per major.minor; every number from Microsoft's
# published list ("Exchange Server build numbers and release dates", also kept as
# ExchangeBuildNumbers.csv in Microsoft's Get-ExchangeBuildNumber repository). Security
# and hotfix updates change only the fourth component, so they read as their CU.
_EXCHANGE: dict[tuple[int, int], tuple[str, dict[int, str]]] = {
    (8, 0): ("Exchange 2007", {
        685: "RTM", 708: "UR1", 711: "UR2", 730: "UR3", 744: "UR4", 754: "UR5", 783: "UR6", 813: "UR7"}),
    (8, 1): ("Exchange 2007 SP1", {
        240: "", 263: "UR1", 278: "UR2", 291: "UR3", 311: "UR4", 336: "UR5", 340: "UR6", 359: "UR7",
        375: "UR8", 393: "UR9", 436: "UR10"}),
    (8, 2): ("Exchange 2007 SP2", {
        176: "", 217: "UR1", 234: "UR2", 247: "UR3", 254: "UR4", 305: "UR5"}),
    (8, 3): ("Exchange 2007 SP3", {
        83: "", 106: "UR1", 137: "UR2", 159: "UR3", 192: "UR4", 213: "UR5", 245: "UR6", 264: "UR7",
        279: "UR8", 297: "UR9", 298: "UR10", 327: "UR11", 342: "UR12", 348: "UR13", 379: "UR14",
        389: "UR15", 406: "UR16", 417: "UR17", 445: "UR18", 459: "UR19", 468: "UR20", 485: "UR21",
        502: "UR22", 517: "UR23"}),
    (14, 0): ("Exchange 2010", {
        639: "RTM", 682: "UR1", 689: "UR2", 694: "UR3", 702: "UR4", 726: "UR5"}),
    (14, 1): ("Exchange 2010 SP1", {
        218: "", 255: "UR1", 270: "UR2", 289: "UR3", 323: "UR4", 339: "UR5", 355: "UR6", 421: "UR7",
        438: "UR8"}),
    (14, 2): ("Exchange 2010 SP2", {
        247: "", 283: "UR1", 298: "UR2", 309: "UR3", 318: "UR4", 328: "UR5", 342: "UR6", 375: "UR7",
        390: "UR8"}),
    (14, 3): ("Exchange 2010 SP3", {
        123: "", 146: "UR1", 158: "UR2", 169: "UR3", 174: "UR4", 181: "UR5", 195: "UR6", 210: "UR7",
        224: "UR8", 235: "UR9", 248: "UR10", 266: "UR11", 279: "UR12", 294: "UR13", 301: "UR14",
        319: "UR15", 339: "UR16", 352: "UR17", 361: "UR18", 382: "UR19", 389: "UR20", 399: "UR21",
        411: "UR22", 417: "UR23", 419: "UR24", 435: "UR25", 442: "UR26", 452: "UR27", 461: "UR28",
        468: "UR29", 496: "UR30", 509: "UR31", 513: "UR32"}),
    (15, 0): ("Exchange 2013", {
        516: "RTM", 620: "CU1", 712: "CU2", 775: "CU3", 847: "SP1", 913: "CU5", 995: "CU6",
        1044: "CU7", 1076: "CU8", 1104: "CU9", 1130: "CU10", 1156: "CU11", 1178: "CU12",
        1210: "CU13", 1236: "CU14", 1263: "CU15", 1293: "CU16", 1320: "CU17", 1347: "CU18",
        1365: "CU19", 1367: "CU20", 1395: "CU21", 1473: "CU22", 1497: "CU23"}),
    (15, 1): ("Exchange 2016", {
        225: "RTM", 396: "CU1", 466: "CU2", 544: "CU3", 669: "CU4", 845: "CU5", 1034: "CU6",
        1261: "CU7", 1415: "CU8", 1466: "CU9", 1531: "CU10", 1591: "CU11", 1713: "CU12",
        1779: "CU13", 1847: "CU14", 1913: "CU15", 1979: "CU16", 2044: "CU17", 2106: "CU18",
        2176: "CU19", 2242: "CU20", 2308: "CU21", 2375: "CU22", 2507: "CU23"}),
    (15, 2): ("Exchange 2019", {
        196: "Preview", 221: "RTM", 330: "CU1", 397: "CU2", 464: "CU3", 529: "CU4", 595: "CU5", 659: "CU6",
        721: "CU7", 792: "CU8", 858: "CU9", 922: "CU10", 986: "CU11", 1118: "CU12", 1258: "CU13",
        1544: "CU14", 1748: "CU15"}),
}
# Builds of another product under a known major.minor: Exchange Server Subscription
# Edition continues 15.2 (its RTM is 15.2.2562, July 2025).
_PRODUCT_OF_BUILD: dict[tuple[int, int, int], str] = {(15, 2, 2562): "Exchange Server SE"}
_BUILD = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,6})\.(\d{1,6})")
_CLOUD = (".outlook.com", ".office365.com", ".outlook.cn", ".office365.us")
_SENDMAIL = re.compile(r"(\d+\.\d+\.\d+)(?:\.\d+)?/\d+\.\d+\.\d+.*")
_EXIM = re.compile(r"\bExim (\d[\w.]*)")
# products that name themselves in a comment, optionally with a version
_NAMED = re.compile(r"\b(Postfix|OpenSMTPD|qmail|Courier|MDaemon|Zimbra|Haraka|CommuniGate Pro|Kerio Connect|"
                    r"IceWarp|Axigen|SmarterMail|MailEnable|hMailServer|Halon|Sympa|Mailman)\b(?:[ /]v?(\d[\w.]*))?",
                    re.IGNORECASE)


def exchange_release(build: str) -> str | None:
    """Product and update of an Exchange build ("Exchange 2010 SP3 UR5"), None when the
    text is not a four-part build of a known major version. 15.20 and later are
    Exchange Online's own builds."""
    m = _BUILD.fullmatch(build)
    if not m:
        return None
    major, minor, third = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if major == 15 and minor >= 20:
        return "Exchange Online"
    if (major, minor, third) in _PRODUCT_OF_BUILD:
        return _PRODUCT_OF_BUILD[(major, minor, third)]
    known = _EXCHANGE.get((major, minor))
    if known is None:
        return None
    product, updates = known
    update = updates.get(third)
    if update is None:
        return f"{product} (build {third}, update not in our table)" if updates else product
    if update in ("", "RTM"):
        return product
    return f"{product} {update}"


def _cloud(name: str) -> bool:
    return name.lower().rstrip(".").endswith(_CLOUD)


def software_of(fields: ReceivedFields) -> str | None:
    """What the header's writer says it runs, in words, or None."""
    by = fields.by_name.lower().rstrip(".")
    build = fields.id if _BUILD.fullmatch(fields.id) else ""
    if fields.protocol == "Microsoft SMTP Server":
        release = exchange_release(build) if build else None
        if _cloud(by):
            role = " front end" if "frontend" in fields.via.lower().replace(" ", "") else ""
            product = release.split(" (")[0] if release else ""
            base = f", {product} code base" if product and product != "Exchange Online" else ""
            return f"Microsoft 365 Exchange Online{role} ({build or 'build unknown'}{base})"
        if release:
            return f"Microsoft {release} ({build})"
        return f"Microsoft Exchange ({build})" if build else "Microsoft Exchange"
    for comment in fields.comments:
        m = _EXIM.search(comment)
        if m:
            return f"Exim {m.group(1)}"
        m = _SENDMAIL.fullmatch(comment.strip())
        if m:
            return f"Sendmail {m.group(1)}"
    for text in (*fields.comments, fields.protocol):
        m = _NAMED.search(text)
        if m:
            return m.group(1) + (f" {m.group(2)}" if m.group(2) else "")
    if by.endswith(("google.com", "googlemail.com")) or (
            fields.by_ip and fields.by_name.lower().startswith("2002:a") and fields.protocol.upper() == "SMTP"):
        return "Google (Gmail)"
    if by.endswith(("amazonses.com", "amazonaws.com")):
        return "Amazon SES"
    if _cloud(by):
        return "Microsoft 365 Exchange Online"
    return None
