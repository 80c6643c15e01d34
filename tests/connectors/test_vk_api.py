"""Our VK API client against the stand-in, and the stand-in against VK's recorded answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from vk_standin import VkStandIn
from vk_support import GROUP, PEOPLE, TOKEN, USER_TOKEN, load, standin

from connectors.vk.api import ErrorKind, VkApi, VkError, error_kind, method_error
from connectors.vk.names import NameCache, display_name
from gateway.coordination import InProcessCoordination

__all__ = ["standin"]


def api_for(vk: VkStandIn, token: str = TOKEN, rps: float = 15.0, **kw: Any) -> VkApi:
    return VkApi(
        base=vk.url,
        token=SecretStr(token),
        version="5.199",
        timeout_seconds=5,
        coordination=kw.pop("coordination", InProcessCoordination()),
        bucket=str(GROUP),
        requests_per_second=rps,
        **kw,
    )


@pytest.fixture
async def api(standin: VkStandIn) -> AsyncIterator[VkApi]:
    client = api_for(standin)
    yield client
    await client.close()


# --- VK's error bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "kind"),
    [
        ("error_5_invalid_access_token.vkbottle-test.json", 5, ErrorKind.AUTH),
        ("error_5_user_blocked.vkbottle-test.json", 5, ErrorKind.AUTH),
        ("error_10_no_request_params.vkbottle-test.json", 10, ErrorKind.TRANSIENT),
        ("error_14_captcha.vkbottle-test.json", 14, ErrorKind.THROTTLED),
        ("error_100_invalid_param.vkbottle-test.json", 100, ErrorKind.PERMANENT),
    ],
)
def test_recorded_error_bodies_are_read_by_kind(name: str, code: int, kind: ErrorKind) -> None:
    error = method_error(load(name), "some.method")
    assert error is not None and error.code == code and error.kind is kind


def test_the_kinds_of_the_codes_that_matter() -> None:
    assert [error_kind(c) for c in (6, 9, 29)] == [ErrorKind.THROTTLED] * 3
    assert error_kind(901) is ErrorKind.CANNOT_WRITE
    assert error_kind(950) is ErrorKind.WINDOW_CLOSED
    assert error_kind(27) is ErrorKind.AUTH
    assert error_kind(914) is ErrorKind.PERMANENT


async def test_the_standins_errors_have_vks_shape(standin: VkStandIn) -> None:
    bad = api_for(standin, token="not-a-token")
    with pytest.raises(VkError) as caught:
        await bad.call("users.get", {"user_ids": [1]})
    await bad.close()
    assert caught.value.code == 5
    assert caught.value.message == "User authorization failed: invalid access_token (4)."
    # The same keys as the recorded body: error_code, error_msg, request_params with v.
    recorded = load("error_5_invalid_access_token.vkbottle-test.json")["error"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{standin.url}/method/users.get", data={"v": "5.199", "access_token": "x"}
        ) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    assert set(body["error"]) == set(recorded)
    assert {"key": "v", "value": "5.199"} in body["error"]["request_params"]


# --- calls -----------------------------------------------------------------------------------


async def test_a_call_sends_the_version_and_the_token(api: VkApi, standin: VkStandIn) -> None:
    users = await api.call("users.get", {"user_ids": [1, 463526827]})
    assert [u["first_name"] for u in users] == ["Павел", "Иван"]
    (params,) = standin.called("users.get")
    assert params["v"] == "5.199" and params["user_ids"] == "1,463526827"
    assert "access_token" not in params  # the stand-in's log leaves it out; it was sent


async def test_throttled_reads_are_tried_again_a_bounded_number_of_times(
    standin: VkStandIn,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    api = api_for(standin, sleep=sleep)
    standin.fail("users.get", 6, times=2)
    assert len(await api.call("users.get", {"user_ids": [1]}, retries=2)) == 1
    standin.fail("users.get", 6, times=3)
    with pytest.raises(VkError) as caught:
        await api.call("users.get", {"user_ids": [1]}, retries=2)
    assert caught.value.kind is ErrorKind.THROTTLED
    assert len(standin.called("users.get")) == 6  # 3 + 3, never more
    # A flood-control error (9) asks for minutes: not waited out in place.
    standin.fail("users.get", 9)
    with pytest.raises(VkError) as caught:
        await api.call("users.get", {"user_ids": [1]}, retries=2)
    assert caught.value.code == 9 and caught.value.retry_after >= 60
    await api.close()


async def test_a_send_is_never_repeated_by_the_client(api: VkApi, standin: VkStandIn) -> None:
    standin.fail("messages.send", 10)
    with pytest.raises(VkError) as caught:
        await api.call("messages.send", {"peer_id": 1, "random_id": 5, "message": "Здравствуйте"})
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert len(standin.called("messages.send")) == 1


async def test_the_budget_keeps_a_burst_under_vks_limit(standin: VkStandIn) -> None:
    api = api_for(standin, rps=15)
    started = time.monotonic()
    results = await asyncio.gather(
        *(api.call("users.get", {"user_ids": [1]}) for _ in range(30)), return_exceptions=True
    )
    elapsed = time.monotonic() - started
    await api.close()
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert elapsed >= 29 / 15 * 0.9  # spaced, not burst: the stand-in answered no 6


async def test_replicas_share_one_budget(standin: VkStandIn) -> None:
    shared = InProcessCoordination()
    a, b = api_for(standin, coordination=shared), api_for(standin, coordination=shared)
    results = await asyncio.gather(
        *(x.call("users.get", {"user_ids": [1]}) for _ in range(15) for x in (a, b)),
        return_exceptions=True,
    )
    await a.close()
    await b.close()
    assert [r for r in results if isinstance(r, BaseException)] == []


async def test_an_unreachable_api_is_transient() -> None:
    api = VkApi(
        base="http://127.0.0.1:9",
        token=SecretStr(TOKEN),
        version="5.199",
        timeout_seconds=2,
        coordination=InProcessCoordination(),
        bucket="x",
        requests_per_second=5,
    )
    with pytest.raises(VkError) as caught:
        await api.call("users.get", {"user_ids": [1]})
    await api.close()
    assert caught.value.kind is ErrorKind.TRANSIENT and caught.value.code is None
    assert TOKEN not in str(caught.value)


async def test_user_token_methods_refuse_a_community_token(api: VkApi, standin: VkStandIn) -> None:
    with pytest.raises(VkError) as caught:
        await api.call("leadForms.list", {"group_id": GROUP})
    assert caught.value.code == 27 and caught.value.kind is ErrorKind.AUTH
    user = api_for(standin, token=USER_TOKEN)
    assert await user.call("leadForms.list", {"group_id": GROUP}) == []
    await user.close()


# --- names -----------------------------------------------------------------------------------


def test_display_name_of_recorded_users() -> None:
    (durov,) = load("users_get.vkbottle-test.json")["response"]
    assert display_name(durov) == "Павел Дуров"
    assert (
        display_name({"id": 5, "first_name": "DELETED", "last_name": "", "deactivated": "deleted"})
        is None
    )


async def test_names_are_cached_and_bounded(api: VkApi, standin: VkStandIn) -> None:
    now = [0.0]
    cache = NameCache(api, size=2, ttl_seconds=60, clock=lambda: now[0])
    standin.users[42] = {"first_name": "X", "last_name": "Y", "deactivated": "banned"}
    assert await cache.names([463526827, 612444319, 42, 99999]) == {
        463526827: "Иван Петров",
        612444319: "Мария Смирнова",
    }
    assert len(standin.called("users.get")) == 1
    assert await cache.name(99999) is None  # unknown to VK: remembered, not asked again
    assert len(standin.called("users.get")) == 1
    assert await cache.name(463526827) == "Иван Петров"  # pushed out (size 2): asked again
    assert len(standin.called("users.get")) == 2
    now[0] = 120.0  # older than the ttl
    assert await cache.name(463526827) == "Иван Петров"
    assert len(standin.called("users.get")) == 3
    assert set(PEOPLE) >= {463526827, 612444319}
