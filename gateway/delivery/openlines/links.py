"""leadgate's CRM lead and the Open Lines chat, linked both ways.

Open Lines binds a chat to a CRM entity only through its own tracker (which leadgate
keeps out by default, so that it makes no second lead), and no REST method binds a chat
to an existing lead. So the link is made the way a seller follows it:
- chat -> lead: the chat's `url` is the CRM lead's card (Open Lines shows it in the chat's
  description), once the CRM delivery has made that lead;
- lead -> chat: one timeline comment on the CRM lead with the address of the chat in the
  line (`/online/?IM_DIALOG=chat<id>`), once per conversation and lead (the checkpoint
  `openlines:linked:<conversation id>` remembers it).
Both need the CRM sink to be Bitrix24 on the same portal; without it there is nothing
to link to. The comment is best effort: when it fails it is tried with the next message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.delivery.b24client import B24Error
from gateway.delivery.openlines.client import AppClient
from gateway.delivery.openlines.settings import OpenLinesSettings
from gateway.store.base import Store

log = logging.getLogger(__name__)

CRM_SINK = "bitrix24"


def linked_checkpoint(conversation_id: str) -> str:
    return f"openlines:linked:{conversation_id}"


class CrmLinks:
    def __init__(
        self, store: Store, client: AppClient, settings: OpenLinesSettings, *, enabled: bool
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.enabled = enabled  # the CRM sink is Bitrix24

    def lead_url(self, crm_id: str) -> str:
        return f"https://{self.settings.portal}/crm/lead/details/{crm_id}/"

    def chat_url(self, im_chat_id: str) -> str:
        return f"https://{self.settings.portal}/online/?IM_DIALOG=chat{im_chat_id}"

    async def crm_ids(self, lead_ids: Sequence[str]) -> dict[str, str]:
        """leadgate lead id -> its CRM lead id, for the leads already in Bitrix24."""
        wanted = [i for i in dict.fromkeys(lead_ids) if i]
        if not self.enabled or not wanted:
            return {}
        links = await self.store.lead_links(CRM_SINK, wanted)
        return {lead: link.remote_id for lead, link in links.items() if link.remote_id}

    async def comment(self, conversation_id: str, crm_id: str, im_chat_id: str, who: str) -> None:
        """The chat's address on the CRM lead, once per conversation and lead."""
        name = linked_checkpoint(conversation_id)
        if await self.store.get_checkpoint(name) == crm_id:
            return
        text = f"Чат с клиентом ({who}) в открытой линии: {self.chat_url(im_chat_id)}"
        try:
            await self.client.call(
                "crm.timeline.comment.add",
                {"fields": {"ENTITY_ID": crm_id, "ENTITY_TYPE": "lead", "COMMENT": text}},
            )
        except B24Error as exc:
            log.info("Open Lines: the chat link on CRM lead %s waits: %s", crm_id, exc)
            return
        await self.store.save_checkpoint(name, crm_id)
