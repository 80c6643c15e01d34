"""A local Telegram Bot API server for tests, following Telegram's documented contract.

What it does, as core.telegram.org/bots/api and the open-source server
(tdlib/telegram-bot-api) describe it (facts and their sources:
tests/connectors/fixtures/telegram/SOURCES.md):
- `POST|GET /bot<token>/<method>` with parameters as a query, a form or JSON, answering
  `{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": ...,
  "parameters": {...}}` with HTTP status N; an unknown token gets 401 `Unauthorized`, an
  unknown method 404 `Not Found: method not found`;
- getMe (the recorded getMe of the fixtures), setWebhook (secret_token 1-256 of
  A-Za-z0-9_-, "Webhook was set" / "Webhook is already set"), deleteWebhook,
  getWebhookInfo (pending_update_count, last_error_date, last_error_message);
- getUpdates: offset confirms every update below it; long polling up to `timeout`; 409
  while a webhook is set; a newer getUpdates ends a waiting one with 409 "terminated by
  other getUpdates request";
- webhook delivery: updates are POSTed with the secret in
  `X-Telegram-Bot-Api-Secret-Token`, up to `max_connections` at once but one chat's
  updates one at a time, in order; anything but 2xx (or no answer) is retried later, and
  the error shows in getWebhookInfo;
- sendMessage: 1-4096 characters, 400 `chat not found` for a chat that never wrote,
  403 `bot was blocked by the user` / `user is deactivated`, 429 with
  `parameters.retry_after` when a test throttles a chat;
- getFile and /file/bot<token>/<path> downloads;
- `lose_answers(method)`: the next call does its work (a message is sent) and the
  connection closes unanswered — what a client sees when its timeout or a proxy cuts in.

Deliberate differences, for a test machine without TLS or public ports: webhook URLs may
be plain http on any port (Telegram wants https on 443, 80, 88 or 8443), and retry delays
are short (Telegram's grow to a minute or two).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

FIXTURES = Path(__file__).parent / "connectors" / "fixtures" / "telegram"
SECRET_CHARS = re.compile(r"^[A-Za-z0-9_-]*$")
MAX_TEXT = 4096


def fixture(name: str) -> dict[str, Any]:
    """A recorded payload (its source is in fixtures/telegram/SOURCES.md)."""
    data: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return data


def recorded_error(name: str) -> tuple[int, dict[str, Any]]:
    body = fixture(f"responses/{name}")
    return int(body["error_code"]), body


class ApiFailure(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class Sent:
    bot: str  # the bot's token
    chat_id: int
    text: str
    message_id: int
    reply_markup: dict[str, Any] | None
    at: float


@dataclass
class BotState:
    token: str
    me: dict[str, Any]
    webhook_url: str = ""
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int = 40
    updates: list[dict[str, Any]] = field(default_factory=list)  # not yet confirmed
    next_update_id: int = 100_000
    last_error_date: int | None = None
    last_error_message: str | None = None
    poller: asyncio.Future[None] | None = None  # the waiting getUpdates, if any
    new_update: asyncio.Event = field(default_factory=asyncio.Event)
    next_message_id: int = 1
    delivered: list[int] = field(default_factory=list)  # update ids acknowledged by 2xx


class BotApiStandin:
    def __init__(self, *, retry_delay: float = 0.1) -> None:
        self.bots: dict[str, BotState] = {}
        self.known_chats: set[int] = set()
        self.blocked: set[int] = set()
        self.deactivated: set[int] = set()
        self.throttled: dict[int, list[int]] = {}  # chat -> retry_after of the next sends
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, content)
        self.sent: list[Sent] = []
        self.calls: list[tuple[str, str]] = []  # (token, method)
        self.retry_delay = retry_delay
        self.lost: dict[str, int] = {}  # method -> calls still to do, then leave unanswered
        # Called with each update id a webhook acknowledged, right after its 2xx (a test
        # hook: the kill test kills the server there, between receipt and handling).
        self.on_delivered: Callable[[int], None] | None = None
        self._runner: web.AppRunner | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    # --- set-up -----------------------------------------------------------------------------

    def add_bot(self, token: str, me: dict[str, Any] | None = None) -> BotState:
        if me is None:
            me = dict(fixture("responses/getMe.yandex-music-token-issue-26.json")["result"])
            me["id"] = int(token.split(":")[0])
        state = BotState(token=token, me=me)
        self.bots[token] = state
        return state

    def push(self, token: str, update: dict[str, Any]) -> int:
        """Telegram receives something for the bot: an update, numbered if it has no id."""
        state = self.bots[token]
        update = dict(update)
        if "update_id" not in update:
            update["update_id"] = state.next_update_id
        state.next_update_id = max(state.next_update_id, update["update_id"]) + 1
        for key in ("message", "edited_message"):
            # A malformed update (a test's poison) names no chat the Bot API would know.
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.known_chats.add(int(update[key]["chat"]["id"]))
        state.updates.append(update)
        state.new_update.set()
        return int(update["update_id"])

    def lose_answers(self, method: str, times: int = 1) -> None:
        """The next call(s) of `method` (any case) do their work, then the connection is
        closed before a byte of the answer is sent (a timeout, a proxy dying)."""
        self.lost[method.lower()] = self.lost.get(method.lower(), 0) + times

    def throttle(self, chat_id: int, *retry_after: int) -> None:
        """The next sends to `chat_id` get 429 with these retry_after values."""
        self.throttled.setdefault(chat_id, []).extend(retry_after)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        self._pusher = asyncio.create_task(self._push_loop())
        return self.url

    async def stop(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- the API ----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        self.calls.append((token, method))
        state = self.bots.get(token)
        try:
            if state is None:
                raise ApiFailure(*_error("error_401_unauthorized.pyTelegramBotAPI-issue-168.json"))
            params = await _params(request)
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                raise ApiFailure(404, "Not Found: method not found")
            result, description = await handler(state, params)
        except ApiFailure as failure:
            body: dict[str, Any] = {
                "ok": False,
                "error_code": failure.code,
                "description": failure.description,
            }
            if failure.parameters:
                body["parameters"] = failure.parameters
            return web.Response(
                status=failure.code, body=orjson.dumps(body), content_type="application/json"
            )
        answer: dict[str, Any] = {"ok": True, "result": result}
        if description:
            answer["description"] = description
        if self.lost.get(method.lower()):
            self.lost[method.lower()] -= 1
            assert request.transport is not None
            request.transport.close()  # the work is done; the caller never hears of it
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _m_getme(self, state: BotState, params: dict[str, Any]) -> tuple[Any, str | None]:
        return state.me, None

    async def _m_setwebhook(
        self, state: BotState, params: dict[str, Any]
    ) -> tuple[Any, str | None]:
        url = str(params.get("url", ""))
        secret = params.get("secret_token")
        if secret is not None:
            secret = str(secret)
            if len(secret) > 256:
                raise ApiFailure(400, "Bad Request: secret token is too long")
            if not SECRET_CHARS.match(secret):
                raise ApiFailure(400, "Bad Request: secret token contains unallowed characters")
        if url and not url.startswith(("http://", "https://")):
            raise ApiFailure(
                400,
                "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
            )
        same = url == state.webhook_url and (secret or None) == state.secret_token
        if state.poller is not None and not state.poller.done():
            state.poller.set_exception(ApiFailure(409, "Conflict: terminated by other setWebhook"))
        state.webhook_url = url
        state.secret_token = secret or None
        if "allowed_updates" in params:
            state.allowed_updates = list(params["allowed_updates"])
        if "max_connections" in params:
            state.max_connections = int(params["max_connections"])
        if _flag(params.get("drop_pending_updates")):
            state.updates.clear()
        state.new_update.set()
        if not url:
            return True, "Webhook is already deleted" if same else "Webhook was deleted"
        return True, "Webhook is already set" if same else "Webhook was set"

    async def _m_deletewebhook(
        self, state: BotState, params: dict[str, Any]
    ) -> tuple[Any, str | None]:
        was = bool(state.webhook_url)
        state.webhook_url = ""
        state.secret_token = None
        if _flag(params.get("drop_pending_updates")):
            state.updates.clear()
        return True, "Webhook was deleted" if was else "Webhook is already deleted"

    async def _m_getwebhookinfo(
        self, state: BotState, params: dict[str, Any]
    ) -> tuple[Any, str | None]:
        info: dict[str, Any] = {
            "url": state.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(state.updates),
        }
        if state.webhook_url:
            info["max_connections"] = state.max_connections
        if state.allowed_updates is not None:
            info["allowed_updates"] = state.allowed_updates
        if state.last_error_date is not None:
            info["last_error_date"] = state.last_error_date
            info["last_error_message"] = state.last_error_message
        return info, None

    async def _m_getupdates(
        self, state: BotState, params: dict[str, Any]
    ) -> tuple[Any, str | None]:
        if state.webhook_url:
            raise ApiFailure(*_error("error_409_webhook_active.TelegramBotAPI-errors.json"))
        offset = int(params.get("offset", 0) or 0)
        limit = max(1, min(100, int(params.get("limit", 100) or 100)))
        timeout = max(0, int(params.get("timeout", 0) or 0))
        if offset > 0:
            # "An update is considered confirmed as soon as getUpdates is called with an
            # offset higher than its update_id."
            state.updates = [u for u in state.updates if u["update_id"] >= offset]
        if state.poller is not None and not state.poller.done():
            state.poller.set_exception(
                ApiFailure(*_error("error_409_getupdates_conflict.pyTelegramBotAPI-issue-987.json"))
            )
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.poller = me
        deadline = time.monotonic() + timeout
        try:
            while not state.updates and time.monotonic() < deadline:
                state.new_update.clear()
                waiter = asyncio.ensure_future(state.new_update.wait())
                done, _ = await asyncio.wait(
                    {waiter, me}, timeout=deadline - time.monotonic(), return_when="FIRST_COMPLETED"
                )
                waiter.cancel()
                if me in done:
                    me.result()  # raises the 409 a newer call set
                if state.webhook_url:
                    raise ApiFailure(409, "Conflict: terminated by other setWebhook")
        finally:
            if state.poller is me:
                state.poller = None
        if me.done() and me.exception() is not None:
            raise me.exception()  # type: ignore[misc]
        return state.updates[:limit], None

    async def _m_sendmessage(
        self, state: BotState, params: dict[str, Any]
    ) -> tuple[Any, str | None]:
        try:
            chat_id = int(params["chat_id"])
        except (KeyError, ValueError):
            raise ApiFailure(400, "Bad Request: chat_id is empty") from None
        text = str(params.get("text", ""))
        if not text.strip():
            raise ApiFailure(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise ApiFailure(
                *_error("error_400_message_too_long.revanced-magisk-module-issue-262.json")
            )
        if chat_id not in self.known_chats:
            raise ApiFailure(*_error("error_400_chat_not_found.TelegramBotAPI-errors.json"))
        if chat_id in self.blocked:
            raise ApiFailure(*_error("error_403_bot_blocked.catbot-issue-24.json"))
        if chat_id in self.deactivated:
            raise ApiFailure(*_error("error_403_user_deactivated.TelegramBotAPI-errors.json"))
        if self.throttled.get(chat_id):
            wait = self.throttled[chat_id].pop(0)
            raise ApiFailure(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        markup = params.get("reply_markup")
        message_id = state.next_message_id
        state.next_message_id += 1
        self.sent.append(Sent(state.token, chat_id, text, message_id, markup, time.monotonic()))
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": state.me,
            "chat": {"id": chat_id, "type": "private", "first_name": "Customer"},
            "date": int(time.time()),
            "text": text,
        }
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            # Message.reply_markup is an InlineKeyboardMarkup only: a reply keyboard (the
            # contact button) is shown to the user, not returned.
            message["reply_markup"] = markup
        return message, None

    async def _m_getfile(self, state: BotState, params: dict[str, Any]) -> tuple[Any, str | None]:
        file_id = str(params.get("file_id", ""))
        if file_id not in self.files:
            raise ApiFailure(400, "Bad Request: invalid file_id")
        path, content = self.files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": f"u{abs(hash(file_id)) % 10**8}",
            "file_size": len(content),
            "file_path": path,
        }, None

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self.bots:
            return web.Response(status=401, text="Unauthorized")
        path = request.match_info["path"]
        for stored_path, content in self.files.values():
            if stored_path == path:
                return web.Response(body=content, content_type="application/octet-stream")
        return web.Response(status=404, text="Not Found")

    # --- webhook delivery -------------------------------------------------------------------

    async def _push_loop(self) -> None:
        """Deliver pending updates, several at once (up to max_connections) but never two
        of one chat at a time, so a chat's updates arrive in order."""
        flying: dict[int, asyncio.Task[None]] = {}  # id(update) -> its delivery
        try:
            await self._push_rounds(flying)
        finally:
            for task in list(flying.values()):
                task.cancel()

    async def _push_rounds(self, flying: dict[int, asyncio.Task[None]]) -> None:
        while True:
            for state in list(self.bots.values()):
                if not state.webhook_url:
                    continue
                busy_chats = {_chat_of(u) for u in state.updates if id(u) in flying}
                for update in list(state.updates):
                    if len(flying) >= state.max_connections:
                        break
                    chat = _chat_of(update)
                    if id(update) in flying or chat in busy_chats:
                        continue
                    busy_chats.add(chat)
                    task = asyncio.create_task(self._deliver(state, update))
                    flying[id(update)] = task
                    task.add_done_callback(_forget(flying, id(update)))
            await asyncio.sleep(0.005)

    async def _deliver(self, state: BotState, update: dict[str, Any]) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if state.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = state.secret_token
        try:
            async with self._session.post(
                state.webhook_url,
                data=orjson.dumps(update),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    with contextlib.suppress(ValueError):
                        state.updates.remove(update)
                    state.delivered.append(int(update["update_id"]))
                    if self.on_delivered is not None:
                        self.on_delivered(int(update["update_id"]))
                    return
                error = f"Wrong response from the webhook: {resp.status} {resp.reason}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = "Connection refused" if isinstance(exc, OSError) else "Connection timed out"
        state.last_error_date = int(time.time())
        state.last_error_message = error
        await asyncio.sleep(self.retry_delay)


def _forget(flying: dict[int, Any], key: int) -> Callable[[Any], None]:
    return lambda _task: flying.pop(key, None)


def _chat_of(update: dict[str, Any]) -> Any:
    for key in ("message", "edited_message"):
        if key in update:
            return update[key].get("chat", {}).get("id")
    return None


def _error(name: str) -> tuple[int, str]:
    code, body = recorded_error(name)
    return code, str(body["description"])


def _flag(value: Any) -> bool:
    return value in (True, "true", "True", "1", 1)


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            params.update(await request.json())
        else:
            form = await request.post()
            for key, value in form.items():
                params[key] = value if isinstance(value, str) else value.file.read()
    # aiogram sends lists and objects as JSON text inside the form.
    for key in ("allowed_updates", "reply_markup"):
        if isinstance(params.get(key), str):
            params[key] = orjson.loads(params[key])
    return params


@contextlib.asynccontextmanager
async def running(**kw: Any) -> AsyncIterator[BotApiStandin]:
    standin = BotApiStandin(**kw)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()
