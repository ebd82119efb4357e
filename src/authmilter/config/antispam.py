"""The tables ``[greylist]``, ``[dnsbl]`` and ``[dnswl]`` name, loaded once per runtime:
postgrey allow-list files and parsed zone specs. A file that cannot be read stops
start-up (ConfigError naming it)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .dnslists import ZoneSpec, parse_zone
from .postgrey import ClientAllowList, RecipientAllowList
from .schema import Settings


@dataclass(frozen=True)
class AntispamTables:
    clients: ClientAllowList = field(default_factory=ClientAllowList)
    recipients: RecipientAllowList = field(default_factory=RecipientAllowList)
    dnsbl: tuple[ZoneSpec, ...] = ()
    dnswl: tuple[ZoneSpec, ...] = ()

    @classmethod
    def load(cls, settings: Settings) -> AntispamTables:
        g = settings.greylist
        return cls(
            clients=ClientAllowList.load(g.whitelist_clients) if g.enabled else ClientAllowList(),
            recipients=RecipientAllowList.load(g.whitelist_recipients) if g.enabled else RecipientAllowList(),
            dnsbl=tuple(parse_zone(z) for z in settings.dnsbl.zones),
            dnswl=tuple(parse_zone(z) for z in settings.dnswl.zones),
        )
