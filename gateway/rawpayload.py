"""Bounds on the raw payload an event keeps for audit (LeadEvent.raw).

The raw payload is what the sender sent, kept so a person can see it later. Unbounded,
it is a way to fill the disk: a public form takes any extra field, and one client
within the rate limit posting 1 MiB of extra fields a time stores about 20 MB a minute.
So what is kept is cut to MAX_BYTES of JSON, MAX_ITEMS entries per object or list and
MAX_DEPTH levels, and the kept payload says what was cut:

    {"name": "...", ..., "_truncated": {"bytes": 1048590, "keys_dropped": 912,
                                         "strings_cut": 1}}

Payloads within the bounds (every real one) are kept as they are, byte for byte.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_BYTES = 64 * 1024
MAX_ITEMS = 200
MAX_DEPTH = 10
MAX_KEY = 200  # characters of an object key
TRUNCATED = "_truncated"


def bound_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` itself when it is within the bounds, else a bounded copy saying what was cut."""
    try:
        size: int | None = len(orjson.dumps(raw))
    except (TypeError, orjson.JSONEncodeError):  # deeper than the encoder goes, odd types
        size = None
    if size is not None and size <= MAX_BYTES and _within_shape(raw):
        return raw
    cutter = _Cutter()
    kept = cutter.container(raw, 1)
    assert isinstance(kept, dict)
    report: dict[str, int] = {"bytes": size} if size is not None else {}
    report.update({k: v for k, v in cutter.cut.items() if v})
    kept[TRUNCATED] = report
    return kept


def _within_shape(raw: dict[str, Any]) -> bool:
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        item, depth = stack.pop()
        if len(item) > MAX_ITEMS or depth > MAX_DEPTH:
            return False
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
        if isinstance(item, dict) and any(len(str(k)) > MAX_KEY for k in item):
            return False
    return True


class _Cutter:
    """A copy within a byte budget (JSON size, roughly: a few bytes of punctuation per
    entry are counted generously), walking in order so the first fields are the kept ones."""

    def __init__(self) -> None:
        self.budget = MAX_BYTES - 200  # room for the report itself
        self.cut = {"keys_dropped": 0, "items_dropped": 0, "strings_cut": 0, "too_deep": 0}

    def container(self, value: dict[str, Any] | list[Any], depth: int) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            entries = list(value.items())
            for i, (key, item) in enumerate(entries):
                name = str(key)[:MAX_KEY]
                cost = len(name.encode()) + 4
                if i >= MAX_ITEMS or cost > self.budget:
                    self.cut["keys_dropped"] += len(entries) - i
                    break
                self.budget -= cost
                out[name] = self.value(item, depth)
            return out
        items: list[Any] = []
        for i, item in enumerate(value):
            if i >= MAX_ITEMS or self.budget < 8:
                self.cut["items_dropped"] += len(value) - i
                break
            self.budget -= 1
            items.append(self.value(item, depth))
        return items

    def value(self, item: Any, depth: int) -> Any:
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                self.cut["too_deep"] += 1
                self.budget -= 4
                return None
            self.budget -= 2
            return self.container(item, depth + 1)
        if isinstance(item, str):
            size = len(item.encode("utf-8", "surrogatepass"))
            if size + 2 > self.budget:
                self.cut["strings_cut"] += 1
                keep = max(0, self.budget - 2) // 4  # characters: up to 4 bytes each
                item = item[:keep]
                size = len(item.encode("utf-8", "surrogatepass"))
            self.budget -= size + 2
            return item
        if item is None or isinstance(item, bool | int | float):
            self.budget -= 24
            return item
        text = str(item)[:200]  # a type JSON does not have: its text
        self.budget -= len(text) + 2
        return text
