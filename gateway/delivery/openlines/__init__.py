"""Bitrix24 Open Lines: sellers answer leadgate's chats where they already work.

leadgate installs itself into the portal as a local application (Open Lines connectors
work only for an installed application, never for an inbound webhook), registers an
`imconnector` connector on one line, mirrors every inbound chat message into it and takes
the sellers' answers back as events.

Why this lives in the core's delivery, not in connectors/: Open Lines is not a channel a
customer writes in (it has no Channel, makes no LeadEvent, no lead); it is the CRM side of
conversations, the counterpart of the Bitrix24 sink. It talks to the same portal through
the same leaky bucket, and it must take part in the store's transactions (its OAuth tokens,
its outbox rows, a seller's answer queued on the customer's conversation), which
connectors may not touch.

    settings.py  the [openlines] section
    form.py      Bitrix24's form bodies (data[MESSAGES][0][im][chat_id]=...) as nested dicts
    oauth.py     the OAuth server: renewing the application's tokens
    tokens.py    the tokens kept durably, renewed by one replica at a time; the line's state
    client.py    REST calls with the application's token, renewed on expired_token
    steps.py     `leadgate openlines setup`: register, activate, bind events, check the CRM
    routes.py    the install handler, the event handler, the connector's settings page
    events.py    the connector events read (sellers' answers, dialog finish)
    intake.py    a verified event made durable before the 200 (the inbox)
    answers.py   a seller's answer queued on the customer's conversation (inbox handler)
    bbcode.py    the operator's BB-code as plain text
    names.py     customers' names cleaned to Bitrix24's rule
    payload.py   what send.messages and send.status.delivery are given
    links.py     the chat and leadgate's CRM lead, linked both ways
    mirror.py    the worker: customers' messages into the line, delivery reports back
    metrics.py   its metrics
    service.py   wiring into the app
"""
