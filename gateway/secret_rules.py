"""How long a secret must be where the gateway checks a caller with it (bearer tokens, webhook
secrets, signing keys we choose): a short one can be guessed, and an empty one lets anyone
in. Checked when the config is loaded, so a bad one stops the start with the key named."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, SecretStr

# 16 characters. `leadgate init` writes 43 (secrets.token_urlsafe(32)); a UUID has 32.
MIN_SECRET_LENGTH = 16


def check_secret(value: SecretStr) -> SecretStr:
    # Never the value itself in the message: pydantic puts it beside the key path.
    if len(value.get_secret_value().strip()) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"too short: a secret must be at least {MIN_SECRET_LENGTH} characters"
            " (e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return value


def check_optional_secret(value: SecretStr | None) -> SecretStr | None:
    return None if value is None else check_secret(value)


LongSecret = Annotated[SecretStr, AfterValidator(check_secret)]
