"""Ids: ULIDs (48 bits of milliseconds, 80 random bits, in Crockford's base32), made fast.

Every accepted form makes two (its event and its lead), and python-ulid spends ~4 us on
one (a generator, a policy, a lock, a ULID instance and a base32 loop of 26 steps). Here
the 10 characters of the millisecond are written once per millisecond, and the 16 of the
80 random bits in 8 table lookups of 10 bits each: ~1 us.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's: no I, L, O, U
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10 bits as 2 characters
_RANDOM_BITS = 80
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1

_lock = threading.Lock()
_last = 0  # the last id made, as an int: ids only grow
# Random bits are read from the OS 400 ids at a time: one system call each, not one per id.
_POOL_BYTES = 4000
_pool = b""
_pool_at = _POOL_BYTES
_prefix_ms = -1
_prefix = ""


def _forget_pool() -> None:
    """A forked child must not hand out its parent's random bits: the same ids, twice."""
    global _pool_at, _last
    _pool_at, _last = _POOL_BYTES, 0


os.register_at_fork(after_in_child=_forget_pool)


def _time_part(ms: int) -> str:
    """The first 10 characters: 48 bits of milliseconds (the top character holds 3)."""
    return "".join(_PAIRS[ms >> shift & 1023] for shift in (40, 30, 20, 10, 0))


def new_id() -> str:
    """A ULID: sortable by creation time, safe to show, unique across replicas.

    Monotonic within this process, as python-ulid's default generator is: in the same
    millisecond (or when the clock steps back) the next id is the last one plus one, so
    ids made here sort in the order they were made.
    """
    global _last, _prefix_ms, _prefix, _pool, _pool_at
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms > _last >> _RANDOM_BITS:
            if _pool_at >= _POOL_BYTES:
                _pool, _pool_at = os.urandom(_POOL_BYTES), 0
            random = int.from_bytes(_pool[_pool_at : _pool_at + 10], "big")
            _pool_at += 10
            value = ms << _RANDOM_BITS | random
        else:
            value = _last + 1  # the random part overflowing carries into the time: still larger
        _last = value
        ms = value >> _RANDOM_BITS
        if ms != _prefix_ms:
            _prefix, _prefix_ms = _time_part(ms), ms
        prefix = _prefix
    r = value & _RANDOM_MASK
    p = _PAIRS
    return (
        prefix
        + p[r >> 70 & 1023]
        + p[r >> 60 & 1023]
        + p[r >> 50 & 1023]
        + p[r >> 40 & 1023]
        + p[r >> 30 & 1023]
        + p[r >> 20 & 1023]
        + p[r >> 10 & 1023]
        + p[r & 1023]
    )
