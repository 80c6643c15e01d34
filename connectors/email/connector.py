"""The email connector: one poller task per configured (mailbox, folder), one auto-reply
worker, a readiness check, and no HTTP routes.

A folder's poller is a singleton task: with several replicas, one holder of the lease
`task:email:<mailbox>:<folder>` reads it. The auto-reply worker serves the pollers of its
own process (their queue is in memory), so every process runs its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from aiohttp import web

from connectors.email.autoreply import RETRY_DELAYS, AutoReplier, Clock, Sender
from connectors.email.metrics import EmailMetrics
from connectors.email.poller import FolderPoller
from connectors.email.replay import replay
from connectors.email.settings import EmailSettings
from gateway.channels import ConnectorContext, ReplayRefused, StatusValue, TaskSpec
from gateway.models import Receipt
from gateway.store.base import QuarantineEntry
from gateway.texts import joined


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EmailConnector:
    name = "email"

    def __init__(
        self,
        ctx: ConnectorContext,
        settings: EmailSettings,
        *,
        clock: Clock = _utc_now,
        sender: Sender | None = None,
        retry_delays: tuple[float, ...] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = EmailMetrics(ctx.metrics.registry)
        own = self.own = settings.all_own_addresses()
        pipeline = self.pipeline = ctx.pipeline
        self.region = ctx.settings.phone_region
        self.replier: AutoReplier | None = None
        if settings.smtp is not None and settings.auto_reply.when != "never":
            self.replier = AutoReplier(
                smtp=settings.smtp,
                rules=settings.auto_reply,
                tz=pipeline.tz,
                checkpoints=pipeline,
                coordination=ctx.coordination,
                metrics=self.metrics,
                clock=clock,
                sender=sender,
                retry_delays=RETRY_DELAYS if retry_delays is None else retry_delays,
            )
        self.pollers = [
            FolderPoller(
                mailbox=name,
                settings=box,
                folder=folder,
                pipeline=pipeline,
                metrics=self.metrics,
                own_addresses=own,
                region=ctx.settings.phone_region,
                clock=clock,
                replier=self.replier,
            )
            for name, box in settings.mailboxes.items()
            for folder in box.folders
        ]

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return []

    def tasks(self) -> Sequence[TaskSpec]:
        jobs = [
            TaskSpec(f"email:{p.mailbox}:{p.folder}", p.run, singleton=True) for p in self.pollers
        ]
        if self.replier is not None:
            jobs.append(TaskSpec("email:auto-reply", self.replier.run, singleton=False))
        return jobs

    def readiness(self) -> str | None:
        return joined([p for poller in self.pollers if (p := poller.problem()) is not None])

    def status(self) -> Mapping[str, StatusValue]:
        """Each folder: connected and when last read, or since when it cannot connect."""
        return {poller.label: poller.status() for poller in self.pollers}

    async def replay_quarantined(self, entry: QuarantineEntry) -> Receipt | None:
        """A kept message, read again and taken as a customer's (a person released it: an
        auto-reply or a notification they judged to be a request, or mail an older version
        could not read). Its Message-ID is the key as always, so mail already taken is
        `replayed`, not doubled."""
        if "truncated_from_bytes" in entry.headers:
            raise ReplayRefused(
                f"only the first {len(entry.body)} of {entry.headers['truncated_from_bytes']} "
                "bytes were kept: open the message in the mailbox "
                f"({entry.headers.get('mailbox')}/{entry.headers.get('folder')}, "
                f"UID {entry.headers.get('uid')})"
            )
        return await replay(entry, self.pipeline, self.own, self.region)

    async def shutdown(self) -> None:
        return None


def build(ctx: ConnectorContext) -> EmailConnector | None:
    settings = ctx.settings.section(EmailSettings)
    if not settings.mailboxes:
        return None
    return EmailConnector(ctx, settings)
