"""REST calls as the installed application: the access token in the body, renewed on
expired_token, within the same leaky bucket as the CRM delivery to that portal.

With OAuth the token travels as the `auth` parameter (the docs' cURL (OAuth) examples put
it in the JSON body): never in the URL, so no access log or error quotes it. Answers and
errors are the portal's usual ones (gateway.delivery.b24client), read in an application's
terms: 401 expired_token means "renew and repeat" (once), WRONG_AUTH_TYPE (403) means the
method wants an application and got something else, method_confirm_waiting (401) that an
administrator must confirm the application's access.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.coordination import Coordination
from gateway.delivery.b24client import B24Error, LeakyBucket, classify, post_method
from gateway.delivery.http_session import LazySession
from gateway.delivery.openlines.settings import OpenLinesSettings
from gateway.delivery.openlines.tokens import AppTokens, TokenKeeper
from gateway.delivery.sink import masked

# Renew and repeat once; a second refusal is a halt.
RENEW_CODES = frozenset({"expired_token", "invalid_token"})
APP_HALT_CODES = frozenset({"WRONG_AUTH_TYPE", "method_confirm_waiting", "NO_AUTH_FOUND"})


def app_classify(status: int | None, code: str) -> str:
    if code in RENEW_CODES:
        return "renew"
    if code in APP_HALT_CODES:
        return "halt"
    return classify(status, code)


def bucket_portal(settings: OpenLinesSettings) -> str:
    """The bucket's key: the host the REST calls go to, as the CRM sink keys its own
    (gateway.delivery.b24client.portal_of), so both take from one budget per portal."""
    return (urlsplit(settings.rest_base).hostname or "portal").lower()


class AppClient:
    def __init__(
        self,
        settings: OpenLinesSettings,
        keeper: TokenKeeper,
        coordination: Coordination,
        *,
        burst: int,
        rate: float,
        full: bool,
        operation_wait: float = 60.0,
        record: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.keeper = keeper
        self.bucket = LeakyBucket(coordination, bucket_portal(settings), burst, rate, full=full)
        self._http = LazySession(settings.timeout_seconds)
        self._operation_wait = operation_wait
        self._record = record or (lambda outcome: None)

    async def close(self) -> None:
        await self._http.close()

    def base(self, tokens: AppTokens) -> str:
        """The REST base: api_base when configured, else the portal's own endpoint as the
        last token answer named it (it follows a portal that changed its address)."""
        if self.settings.api_base is not None:
            return self.settings.rest_base
        endpoint = tokens.client_endpoint
        return endpoint if endpoint.endswith("/") else endpoint + "/"

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """`result` of one method, or B24Error (kind halt, throttle, retry, permanent)."""
        tokens = await self.keeper.current()
        try:
            return await self._call(tokens, method, params or {})
        except B24Error as exc:
            if exc.kind != "renew":
                raise
        tokens = await self.keeper.refresh(tokens)
        try:
            return await self._call(tokens, method, params or {})
        except B24Error as exc:
            if exc.kind == "renew":  # a token just renewed refused again: a person must look
                exc.kind = "halt"
            raise

    async def call_with(
        self, access_token: str, base: str, method: str, params: Mapping[str, Any]
    ) -> Any:
        """One method with a given token (the installation check, before anything is kept)."""
        body = await self._post(access_token, base, method, params)
        return body.get("result")

    async def _call(self, tokens: AppTokens, method: str, params: Mapping[str, Any]) -> Any:
        body = await self._post(tokens.access_token, self.base(tokens), method, params)
        return body.get("result")

    async def _post(
        self, access_token: str, base: str, method: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        def mask(text: str) -> str:
            return masked(text, access_token)

        return await post_method(
            await self._http.get(),
            f"{base}{method}.json",
            {**params, "auth": access_token},
            bucket=self.bucket,
            mask=mask,
            record=self._record,
            operation_wait=self._operation_wait,
            kind_of=app_classify,
        )
