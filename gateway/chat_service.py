"""Wiring of the chat side: the inbox worker and the message worker as supervised tasks
(every replica runs both; claims keep them apart), their metrics and readiness checks."""

from __future__ import annotations

from aiohttp import web

from gateway.channels import TaskSpec
from gateway.chat_metrics import ChatMetrics
from gateway.delivery.messages import MessageWorker
from gateway.inbox_worker import InboxWorker
from gateway.keys import COORDINATION, METRICS, PIPELINE, SETTINGS, STORE, SUPERVISOR
from gateway.ops import add_readiness_check

INBOX_WORKER = web.AppKey("inbox_worker", InboxWorker)
MESSAGE_WORKER = web.AppKey("message_worker", MessageWorker)


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    pipeline = app[PIPELINE]
    owner = app[COORDINATION].owner
    metrics = ChatMetrics(app[METRICS].registry)
    inbox = InboxWorker(app[STORE], pipeline.inbox, settings.inbox, metrics, owner=owner)
    messages = MessageWorker(
        app[STORE], pipeline.chats, settings.conversations, metrics, owner=owner
    )
    app[INBOX_WORKER] = inbox
    app[MESSAGE_WORKER] = messages
    add_readiness_check(app, "inbox", inbox.problem)
    add_readiness_check(app, "messages", messages.problem)
    app[SUPERVISOR].add(TaskSpec("inbox", inbox.run, singleton=False))
    app[SUPERVISOR].add(TaskSpec("messages", messages.run, singleton=False))
