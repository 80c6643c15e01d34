"""The pull fallback for lead forms: leadForms.getLeads for applications no event brought.

VK may fail to deliver a lead_forms_new event (our server was down past VK's retries, the
Callback API server was paused or set up after the form went live). Every
catch_up_minutes a singleton task lists the community's forms (leadForms.list, which also
gives each form's questions) and pages through each form's leads. A lead becomes the same
event as its callback would have (external id `<group>:lead:<lead_id>`), so one that came
both ways is stored once.

The checkpoint `vk:<group>:lead_forms:<form>` is the highest lead id taken. The order of
getLeads pages is not documented, so nothing depends on it: lead ids at or below the
checkpoint are skipped wherever they are, and paging stops early only when a page is
plainly newest-first and already reaches below the checkpoint. The very first run takes
the leads of the last first_sync_days only (a new install does not import a year of old
applications) and sets the checkpoint past every lead it saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connectors.vk import parse
from connectors.vk.api import ErrorKind, VkApi, VkError
from connectors.vk.handler import CHANNEL, Community, EventHandler
from connectors.vk.metrics import VkMetrics
from gateway.models import Outcome
from gateway.pipeline import Pipeline

log = logging.getLogger(__name__)

PAGE_SIZE = 200  # getLeads limit: 1..1000
MAX_PAGES = 50  # per form and run: 10 000 leads, then the next run goes on


def checkpoint_key(group_id: int, form_id: int) -> str:
    return f"vk:{group_id}:lead_forms:{form_id}"


class LeadFormCatchUp:
    def __init__(
        self,
        *,
        community: Community,
        api: VkApi,
        handler: EventHandler,
        pipeline: Pipeline,
        metrics: VkMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Any] = asyncio.sleep,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.community = community
        self.api = api
        self.handler = handler
        self.pipeline = pipeline
        self.metrics = metrics
        self.clock = clock
        self._sleep = sleep
        self.page_size = page_size
        self.max_pages = max_pages
        # What /readyz says about the catch-up (None: the last run went through).
        self.problem: str | None = None

    @property
    def name(self) -> str:
        return f"vk:{self.community.key}:lead-forms"

    async def run(self) -> None:
        """Until cancelled: a run, then the pause. A VK error is reported, not raised: the
        task is healthy, the token or VK is not, and the next run tries again."""
        interval = self.community.settings.catch_up_minutes * 60
        while True:
            try:
                await self.run_once()
                self.problem = None
            except VkError as exc:
                self.problem = f"lead-form catch-up: {exc}"
                level = logging.ERROR if exc.kind is ErrorKind.AUTH else logging.WARNING
                log.log(level, "vk %s: %s", self.community.key, self.problem)
            await self._sleep(interval)

    async def run_once(self) -> int:
        """One pass over the community's forms; the number of leads no event had brought."""
        s = self.community.settings
        forms = await self.api.call("leadForms.list", {"group_id": s.group_id}, retries=2)
        wanted = set(s.lead_form_ids)
        found = 0
        for form in forms if isinstance(forms, list) else []:
            if not isinstance(form, Mapping) or not isinstance(form.get("form_id"), int):
                continue
            if wanted and form["form_id"] not in wanted:
                continue
            found += await self._form(form)
        self.metrics.last_catch_up.labels(self.community.key).set(self.clock().timestamp())
        return found

    async def _form(self, form: Mapping[str, Any]) -> int:
        s = self.community.settings
        form_id: int = form["form_id"]
        form_name = form.get("name") if isinstance(form.get("name"), str) else None
        questions = {
            q["key"]: q["label"]
            for q in form.get("questions") or []
            if isinstance(q, Mapping)
            and isinstance(q.get("key"), str)
            and isinstance(q.get("label"), str)
        }
        key = checkpoint_key(s.group_id, form_id)
        stored = await self.pipeline.get_checkpoint(key)
        mark = int(stored) if stored and stored.isdigit() else None
        now = self.clock()
        since = now - timedelta(days=s.first_sync_days)
        highest = mark or 0
        found = 0
        token: str | None = None
        for _ in range(self.max_pages):
            params: dict[str, Any] = {
                "group_id": s.group_id,
                "form_id": form_id,
                "limit": self.page_size,
                "next_page_token": token,
            }
            page = await self.api.call("leadForms.getLeads", params, retries=2)
            leads = page.get("leads") if isinstance(page, Mapping) else None
            if not isinstance(leads, list) or not leads:
                break
            ids = []
            for lead in leads:
                lead_id = lead.get("lead_id") if isinstance(lead, Mapping) else None
                if not isinstance(lead_id, int) or isinstance(lead_id, bool):
                    continue
                ids.append(lead_id)
                highest = max(highest, lead_id)
                if mark is not None and lead_id <= mark:
                    continue
                at = _date(lead)
                if mark is None and at is not None and at < since:
                    continue
                found += await self._take(lead, form_id, form_name, questions, now)
            next_token = page.get("next_page_token")
            token = next_token if isinstance(next_token, str) and next_token else None
            newest_first = len(ids) > 1 and ids == sorted(ids, reverse=True)
            if token is None or (mark is not None and newest_first and ids[-1] <= mark):
                break
        if highest > (mark or 0):
            await self.pipeline.save_checkpoint(key, str(highest))
        return found

    async def _take(
        self,
        lead: Mapping[str, Any],
        form_id: int,
        form_name: str | None,
        questions: Mapping[str, str],
        now: datetime,
    ) -> int:
        s = self.community.settings
        common: dict[str, Any] = {
            "group_id": s.group_id,
            "community": s.label,
            "received_at": now,
            "region": self.handler.region,
            "questions": questions,
            "form_id": form_id,
            "form_name": form_name,
            "via": "catch_up",
        }
        try:
            event = parse.parse_lead_form(lead, **common)
            if event.contact.name is None:
                user = event.meta.get("vk_user_id")
                name = await self.handler.name_of(self.community, user)
                if name is not None:
                    event = parse.parse_lead_form(lead, name=name, **common)
        except parse.ObjectInvalid as exc:
            body = orjson.dumps({"form_id": form_id, "lead": lead})
            await self.pipeline.quarantine(CHANNEL, f"leadForms.getLeads: {exc}", body)
            return 0
        receipt = await self.pipeline.accept(event)
        if receipt.outcome is Outcome.REPLAYED:
            return 0
        self.metrics.catch_up_leads.labels(self.community.key).inc()
        log.info("vk %s: lead form %s: a lead no event had brought", self.community.key, form_id)
        return 1


def _date(lead: Mapping[str, Any]) -> datetime | None:
    value = lead.get("date")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None
