"""The small pieces of the Meta connector: the name cache's bounds, the [meta] settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings
from pydantic import ValidationError

from connectors.meta.graph import GraphError
from connectors.meta.names import NameCache, profile_name
from connectors.meta.settings import MetaSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_names_are_bounded_and_expire() -> None:
    clock = Clock()
    cache = NameCache(size=2, ttl_seconds=60, clock=clock)
    asked: list[str] = []

    def fetcher(person: str):  # type: ignore[no-untyped-def]
        async def fetch() -> str | None:
            asked.append(person)
            return person.upper()

        return fetch

    assert await cache.name("p", "a", fetcher("a")) == ("A", "fetched")
    assert await cache.name("p", "a", fetcher("a")) == ("A", "cached")
    await cache.name("p", "b", fetcher("b"))
    await cache.name("p", "c", fetcher("c"))  # a is the least recently used: it goes
    assert len(cache) == 2
    assert await cache.name("p", "a", fetcher("a")) == ("A", "fetched")
    clock.now += 61
    assert await cache.name("p", "a", fetcher("a")) == ("A", "fetched")
    assert asked == ["a", "b", "c", "a", "a"]


async def test_a_refusal_rests_the_account_a_failure_rests_the_person() -> None:
    clock = Clock()
    cache = NameCache(size=10, ttl_seconds=60, clock=clock)

    async def refused() -> str | None:
        raise GraphError(403, "(#200) no", code=200)

    async def hiccup() -> str | None:
        raise GraphError(500, "try later", code=2)

    async def works() -> str | None:
        return "Анна"

    assert await cache.name("p", "a", refused) == (None, "refused")
    assert await cache.name("p", "b", works) == (None, "refused")  # the whole account rests
    assert await cache.name("q", "b", works) == ("Анна", "fetched")
    clock.now += 3601
    assert await cache.name("p", "b", works) == ("Анна", "fetched")
    assert await cache.name("p", "c", hiccup) == (None, "failed")
    assert await cache.name("p", "c", works) == (None, "cached")  # not asked again at once
    clock.now += 301
    assert await cache.name("p", "c", works) == ("Анна", "fetched")


def test_profile_names() -> None:
    assert profile_name({"first_name": "Иван", "last_name": "Петров"}) == "Иван Петров"
    assert profile_name({"first_name": "Иван"}) == "Иван"
    assert profile_name({"name": " Anna K "}) == "Anna K"
    assert profile_name({"name": "", "username": "anna.k"}) == "@anna.k"
    assert profile_name({"id": "1"}) is None


def test_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        meta={
            "app_secret": "0123456789abcdef",
            "verify_token": "a-verify-token-of-ours",
            "pages": [{"id": 153125381133, "token": "EAAx"}],
        },
    )
    meta = settings.section(MetaSettings)
    assert meta.pages[0].id == "153125381133"  # an integer in TOML is the same id
    assert "EAAx" not in repr(meta)
    assert meta.graph_api_version == "v25.0" and meta.enabled
    assert not make_settings(tmp_path).section(MetaSettings).enabled


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"pages": [{"id": "1", "token": "t"}]}, "app_secret and verify_token"),
        ({"app_secret": "short"}, "at least 16"),
        ({"graph_api_version": "25"}, "Graph API version"),
        ({"graph_base": "ftp://x"}, "http"),
        (
            {
                "app_secret": "0123456789abcdef",
                "verify_token": "0123456789abcdef",
                "pages": [{"id": "1", "token": "t"}, {"id": "1", "token": "u"}],
            },
            "configured twice",
        ),
        ({"pages": [{"id": "me", "token": "t"}]}, "Meta id"),
    ],
)
def test_bad_settings(section: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MetaSettings.model_validate(section)
    assert words in str(caught.value)
