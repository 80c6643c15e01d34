"""Where a folder has been read up to (the checkpoint), and how long to wait after a fault."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import orjson

# After a UIDVALIDITY change, mail is read again from this long before the last one taken.
RESYNC_MARGIN = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Position:
    """The checkpoint value: where this folder has been read up to."""

    uidvalidity: int
    last_uid: int = 0
    last_date: datetime | None = None  # INTERNALDATE of the last message taken
    catchup_since: date | None = None  # a catch-up takes mail that arrived since this day,
    catchup_until: int | None = None  # ... with UIDs up to this one

    def dumps(self) -> str:
        return orjson.dumps(
            {
                "uidvalidity": self.uidvalidity,
                "last_uid": self.last_uid,
                "last_date": self.last_date.isoformat() if self.last_date else None,
                "catchup_since": self.catchup_since.isoformat() if self.catchup_since else None,
                "catchup_until": self.catchup_until,
            }
        ).decode()

    @classmethod
    def loads(cls, text: str) -> Position:
        data = orjson.loads(text)
        return cls(
            uidvalidity=int(data["uidvalidity"]),
            last_uid=int(data.get("last_uid") or 0),
            last_date=datetime.fromisoformat(d) if (d := data.get("last_date")) else None,
            catchup_since=date.fromisoformat(d) if (d := data.get("catchup_since")) else None,
            catchup_until=data.get("catchup_until"),
        )

    @property
    def catching_up(self) -> bool:
        return self.catchup_until is not None and self.last_uid < self.catchup_until


class Backoff:
    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self.current = first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.most, self.current * 2)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = self.first
