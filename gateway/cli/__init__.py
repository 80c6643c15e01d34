"""`leadgate` command line: serve, init, check-config, calendar, leads, outbox, inbox,
quarantine, openlines, and the channels' own commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.client_settings import ClientSettings, load_client_settings
from gateway.config import (
    ConfigError,
    Settings,
    ignored_env,
    load_settings,
    resolve_path,
    store_name,
    store_problem,
)
from gateway.logs import setup_logging
from gateway.version import VERSION


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _load_client(args: argparse.Namespace) -> ClientSettings:
    """For the read-only commands: the store and calendar only (see ClientSettings)."""
    return load_client_settings(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import serving
    from gateway.redisconn import RedisNotDurable
    from gateway.store.sqlite import StoreLocked
    from gateway.store_durability import RedisUnreachable
    from gateway.web import create_app

    settings = _load(args)
    if problem := store_problem(settings.store):
        print(f"leadgate: {problem}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    log = logging.getLogger("leadgate")
    # store_name never shows the Redis URL's password.
    store = store_name(settings.store)
    if settings.store.kind == "redis":
        store += f", durability {settings.store.durability}"
    log.info(
        "leadgate %s on http://%s:%d (store %s, %d sellers)",
        VERSION,
        host,
        port,
        store,
        len(settings.sellers),
    )
    if ignored := ignored_env():
        log.warning(
            "ignoring %s: container service variables, not leadgate settings",
            ", ".join(ignored),
        )
    try:
        serving.run(
            create_app(settings),
            host,
            port,
            serving.limits(settings.server),
            # A body still uploading at SIGTERM would hold shutdown for aiohttp's default
            # 60 s; nothing of it is stored, and Docker kills after 10 s anyway.
            shutdown_timeout=8.0,
        )
    except (StoreLocked, RedisNotDurable, RedisUnreachable) as exc:
        # Startup refusals an operator fixes in a setting: the reason, not a traceback.
        print(f"leadgate: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.cli.init import render_config

    path = Path(args.output)
    if path.exists() and not args.force:
        print(f"leadgate: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    # Created owner-only from the first byte: it holds tokens.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(render_config())
    path.chmod(0o600)  # --force over an existing, wider file
    print(f"wrote {path}: review the sellers and tokens, then run `leadgate check-config`")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    source = resolve_path(args.config)
    try:
        settings = _load(args)
        # On this machine: the store's directory must exist (the config itself is fine).
        if problem := store_problem(settings.store):
            raise ConfigError(str(source or "built-in defaults"), [problem])
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    forms = ", ".join(settings.forms) or "none"
    if ignored := ignored_env():
        print(f"note: ignoring {', '.join(ignored)} (container service variables, not settings)")
    print(
        f"{source or 'built-in defaults'}: ok — {len(settings.sellers)} seller(s), forms: {forms}, "
        f"store: {store_name(settings.store)}, delivery: {settings.delivery.sink}, "
        f"order tokens: {len(settings.orders.tokens)}, "
        f"admin tokens: {len(settings.admin.tokens)}"
    )
    return 0


def cmd_calendar(args: argparse.Namespace) -> int:
    from gateway.cli import calendar

    return calendar.run(args, _load_client(args).calendar)


def cmd_leads(args: argparse.Namespace) -> int:
    from gateway.cli import leads

    return leads.run(args, _load_client(args))


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.cli import outbox

    return outbox.run(args, _load_client(args))


def cmd_quarantine(args: argparse.Namespace) -> int:
    from gateway.cli import quarantine

    return quarantine.run(args, _load_client(args))


def cmd_inbox(args: argparse.Namespace) -> int:
    from gateway.cli import inbox

    return inbox.run(args, _load(args))


def cmd_store(args: argparse.Namespace) -> int:
    from gateway.cli import store_copy

    return store_copy.run(args, _load_client(args))


def cmd_openlines(args: argparse.Namespace) -> int:
    from gateway.cli import openlines

    return openlines.run(args, _load(args))


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli import calendar, inbox, leads, openlines, outbox, quarantine, store_copy

    parser = argparse.ArgumentParser(prog="leadgate", description=__doc__)
    parser.add_argument(
        "-c", "--config", help="config file (default: $LEADGATE_CONFIG, then ./leadgate.toml)"
    )
    parser.add_argument("--version", action="version", version=f"leadgate {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    init = sub.add_parser("init", help="write a commented leadgate.toml with fresh tokens")
    init.add_argument("-o", "--output", default="leadgate.toml")
    init.add_argument("--force", action="store_true")
    init.set_defaults(func=cmd_init)

    check = sub.add_parser("check-config", help="validate the config; name every bad key")
    check.set_defaults(func=cmd_check_config)

    calendar.add_parser(sub)
    sub.choices["calendar"].set_defaults(func=cmd_calendar)
    leads.add_parser(sub)
    sub.choices["leads"].set_defaults(func=cmd_leads)
    outbox.add_parser(sub)
    sub.choices["outbox"].set_defaults(func=cmd_outbox)
    quarantine.add_parser(sub)
    sub.choices["quarantine"].set_defaults(func=cmd_quarantine)
    inbox.add_parser(sub)
    sub.choices["inbox"].set_defaults(func=cmd_inbox)
    openlines.add_parser(sub)
    sub.choices["openlines"].set_defaults(func=cmd_openlines)
    store_copy.add_parser(sub)
    sub.choices["store"].set_defaults(func=cmd_store)
    add_channel_commands(sub)
    return parser


def add_channel_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands the channel specs contribute (`leadgate telegram set-webhook ...`): each
    spec's `cli` hook adds its parsers and sets `channel_command` on them (gateway.channels
    ChannelCommand); the settings are loaded here, like for the core's commands."""
    from gateway.channels import specs

    for spec in specs():
        if spec.cli is None:
            continue
        before = set(sub.choices)
        spec.cli(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(func=cmd_channel)


def cmd_channel(args: argparse.Namespace) -> int:
    command = getattr(args, "channel_command", None)
    if command is None:  # a channel's command group given without its action
        print("leadgate: say which action (see --help)", file=sys.stderr)
        return 2
    code: int = command(args, _load(args))
    return code


def hoist_config(argv: Sequence[str]) -> list[str]:
    """Move `-c FILE` / `--config FILE` to the front, so it works after any subcommand
    (`leadgate leads list -c prod.toml`) without declaring it on every subparser."""
    rest: list[str] = []
    front: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg in ("-c", "--config"):
            front += [arg, next(items, "")]
        elif arg.startswith("--config="):
            front.append(arg)
        else:
            rest.append(arg)
    return front + rest


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(hoist_config(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
    except ConfigError as exc:
        print(f"leadgate: bad config {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `leadgate leads list | head`: the reader took what it wanted and left. End quietly,
        # like the shell's own tools; stdout goes to /dev/null so the interpreter's last flush
        # cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
