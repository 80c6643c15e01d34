"""The JSON receipt every accepting endpoint answers with."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.models import Outcome, Receipt


def receipt_response(receipt: Receipt) -> web.Response:
    # 200 for a replay (nothing new happened), 201 when this request made or joined a lead.
    status = 200 if receipt.outcome is Outcome.REPLAYED else 201
    return web.Response(
        status=status,
        body=orjson.dumps(
            {
                "event_id": receipt.event_id,
                "lead_id": receipt.lead_id,
                "outcome": receipt.outcome.value,
            }
        ),
        content_type="application/json",
    )
