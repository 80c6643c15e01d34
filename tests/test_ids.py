"""gateway.ids: ULIDs python-ulid reads back, in the order they were made."""

from __future__ import annotations

import os
import time

import pytest
from ulid import ULID

from gateway import ids
from gateway.ids import new_id


def test_an_id_is_a_ulid_of_now() -> None:
    before = time.time()
    made = new_id()
    after = time.time()
    assert len(made) == 26
    parsed = ULID.from_str(made)
    assert str(parsed) == made
    assert before - 0.001 <= parsed.timestamp <= after + 0.001


def test_ids_sort_in_the_order_they_were_made_and_never_repeat() -> None:
    made = [new_id() for _ in range(50_000)]  # many share a millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_every_bit_is_written_as_python_ulid_writes_it() -> None:
    for value in (0, 1, (1 << 128) - 1, 0x0123456789ABCDEF0123456789ABCDEF, 1 << 80, (1 << 80) - 1):
        ms, rest = value >> 80, value & ((1 << 80) - 1)
        ours = ids._time_part(ms) + "".join(
            ids._PAIRS[rest >> shift & 1023] for shift in (70, 60, 50, 40, 30, 20, 10, 0)
        )
        assert ours == str(ULID.from_int(value))


def test_a_clock_stepping_back_still_makes_larger_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    first = new_id()
    earlier = ULID.from_str(first).milliseconds - 5_000
    monkeypatch.setattr(ids.time, "time_ns", lambda: earlier * 1_000_000)
    second, third = new_id(), new_id()
    assert first < second < third
    assert ULID.from_str(second).milliseconds == ULID.from_str(first).milliseconds


def test_random_bits_running_out_carry_into_the_next_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ms = ULID.from_str(new_id()).milliseconds + 10
    monkeypatch.setattr(ids.time, "time_ns", lambda: ms * 1_000_000)
    monkeypatch.setattr(ids, "_last", ms << 80 | ((1 << 80) - 2))
    last_random = new_id()
    carried = new_id()
    assert ULID.from_str(last_random).milliseconds == ms
    assert last_random.endswith("Z" * 16)
    assert ULID.from_str(carried).milliseconds == ms + 1
    assert carried.endswith("0" * 16)
    assert last_random < carried


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    new_id()  # the parent's pool of random bits is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    time.sleep(0.002)  # the parent's next ids in a later millisecond: fresh random bits
    parent = [new_id() for _ in range(3)]
    assert len(child) == 3
    # The random part, not the time: a shared pool would give the same 16 characters.
    assert {c[10:] for c in child}.isdisjoint(p[10:] for p in parent)
