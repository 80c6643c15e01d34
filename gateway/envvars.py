"""LEADGATE_* environment variables that are no setting: refused (a typo), with a hint when
one is close, unless they are a container platform's own (Kubernetes service variables).

The rule is documented in docs/configuration.md ("Environment variables").
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection

ENV_PATH = "LEADGATE_CONFIG"

# Kubernetes gives every pod variables for each Service of its namespace, named after the
# Service: one called "leadgate" (or "leadgate-redis") yields LEADGATE_SERVICE_HOST,
# LEADGATE_SERVICE_PORT, LEADGATE_PORT, LEADGATE_PORT_8080_TCP_ADDR, ...; Docker's links
# make the same PORT ones. They are not settings and must not stop the gateway.
_SERVICE_VARIABLE = re.compile(
    r"LEADGATE_(?:(?P<service>[A-Z0-9_]+?)_)?"
    r"(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)"
)


def _is_service_variable(key: str, known: Collection[str]) -> bool:
    name = key.upper()
    match = _SERVICE_VARIABLE.fullmatch(name)
    if match is None or "__" in name:
        return False
    # LEADGATE_SERVER_PORT is a setting with one underscore too few, not a Service.
    service = match.group("service") or ""
    return service.split("_", 1)[0] not in known


def ignored_env(known: Collection[str]) -> list[str]:
    """LEADGATE_* variables that are a container platform's, not ours: ignored (with a
    warning at start) rather than refused. `known`: the settings' top-level names, upper."""
    found = (k for k in os.environ if k.upper().startswith("LEADGATE_"))
    return sorted(k for k in found if _is_service_variable(k, known))


def unknown_env(known: Collection[str]) -> list[str]:
    """LEADGATE_* variables that name no setting: a typo there would be silently ignored."""
    problems = []
    for key in sorted(os.environ):
        if not key.upper().startswith("LEADGATE_") or key.upper() == ENV_PATH:
            continue
        if _is_service_variable(key, known):
            continue
        rest = key[len("LEADGATE_") :].upper()
        head, sep, tail = rest.partition("__")
        if head in known:
            continue
        hint = _did_you_mean(head, sep + tail, known)
        problems.append(f"environment {key}: no setting of that name{hint}")
    return problems


def _did_you_mean(head: str, tail: str, known: Collection[str]) -> str:
    # One underscore where two belong: LEADGATE_SERVER_PORT.
    for section in sorted(known, key=len, reverse=True):
        if not tail and head.startswith(section + "_"):
            return f" (did you mean LEADGATE_{section}__{head[len(section) + 1 :]}?)"
    close = difflib.get_close_matches(head, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean LEADGATE_{close[0]}{tail}?)" if close else ""
