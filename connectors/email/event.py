"""A parsed customer mail -> the LeadEvent the pipeline accepts. Pure, like the parser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from connectors.email.message import Mail
from gateway.identity import find_phones
from gateway.models import Channel, Contact, LeadEvent

MAX_PHONES = 5


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message was read: which mailbox, folder and UID."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int


def oversize_note(size: int) -> str:
    return (
        f"Письмо слишком большое ({size / 1_048_576:.1f} МБ): в заявку взяты только заголовки,"
        " само письмо — в почтовом ящике."
    )


def mail_to_event(
    mail: Mail,
    origin: Origin,
    *,
    arrived_at: datetime | None,
    received_at: datetime,
    region: str = "RU",
    size: int | None = None,
    oversize: bool = False,
) -> LeadEvent:
    """`arrived_at` is the server's INTERNALDATE: unlike Date it is not the sender's clock."""
    person = mail.answer_to
    body = oversize_note(size or 0) if oversize else mail.body
    phones = find_phones(f"{mail.subject}\n{body}", region)[:MAX_PHONES]
    parts = []
    if mail.subject:
        parts.append(f"Тема: {mail.subject}")
    if body:
        parts.append(body)
    if mail.forwarded and not oversize:
        # Shown, not mined: a forwarded mail's phones (our own signature, when a customer
        # forwards our offer back) are not the customer's.
        parts.append(mail.forwarded)
    meta: dict[str, object] = {
        "subject": mail.subject,
        "mailbox": origin.mailbox,
        "folder": origin.folder,
        "uid": origin.uid,
        "uidvalidity": origin.uidvalidity,
        "message_id": mail.message_id,
    }
    if mail.message_id_derived:
        meta["message_id_derived"] = True
    if mail.reply_to is not None and mail.reply_to.address != mail.sender.address:
        meta["from"] = mail.sender.address
    if oversize:
        meta["oversize"] = True
    return LeadEvent(
        channel=Channel.EMAIL,
        external_id=mail.message_id,
        occurred_at=arrived_at or mail.date or received_at,
        received_at=received_at,
        contact=Contact(
            name=mail.person_name,
            phones=phones,
            emails=(person.address,) if person.address else (),
        ),
        text="\n\n".join(parts) or None,
        attachments=mail.attachments,
        source_detail=f"{origin.mailbox}/{origin.folder}",
        meta=meta,
        replies_to=tuple(i for i in mail.thread_ids if i != mail.message_id),
        raw={"headers": mail.headers, "size": size},
    )
