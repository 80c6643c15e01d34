"""`leadgate` command line: serve, init, check-config, calendar, leads, outbox."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from gateway.config import ConfigError, Settings, load_settings, resolve_path
from gateway.identity import MaskingFilter


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream)
    # Every record passes the mask: no log line may carry a full phone or email.
    handler.addFilter(MaskingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import serving
    from gateway.store.sqlite import StoreLocked
    from gateway.web import create_app

    settings = _load(args)
    setup_logging(settings.log_level)
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    logging.getLogger("leadgate").info(
        "leadgate on http://%s:%d (store %s, %d sellers)",
        host,
        port,
        settings.store.path,
        len(settings.sellers),
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
    except StoreLocked as exc:
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
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    forms = ", ".join(settings.forms) or "none"
    print(
        f"{source or 'built-in defaults'}: ok — {len(settings.sellers)} seller(s), forms: {forms}, "
        f"store: {settings.store.path}, delivery: {settings.delivery.sink}, "
        f"order tokens: {len(settings.orders.tokens)}, "
        f"admin tokens: {len(settings.admin.tokens)}"
    )
    return 0


def cmd_calendar(args: argparse.Namespace) -> int:
    from gateway.cli import calendar

    return calendar.run(args, _load(args).calendar)


def cmd_leads(args: argparse.Namespace) -> int:
    from gateway.cli import leads

    return leads.run(args, _load(args))


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.cli import outbox

    return outbox.run(args, _load(args))


def cmd_inbox(args: argparse.Namespace) -> int:
    from gateway.cli import inbox

    return inbox.run(args, _load(args))


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli import calendar, inbox, leads, outbox

    parser = argparse.ArgumentParser(prog="leadgate", description=__doc__)
    parser.add_argument(
        "-c", "--config", help="config file (default: $LEADGATE_CONFIG, then ./leadgate.toml)"
    )
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
    inbox.add_parser(sub)
    sub.choices["inbox"].set_defaults(func=cmd_inbox)
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
    except ConfigError as exc:
        print(f"leadgate: bad config {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
