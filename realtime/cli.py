"""The ``realtime`` command: ``realtime serve [flags]`` runs the hub.

:func:`main` parses flags, builds the settings with
:func:`realtime.config.load_settings`, sets up logging, then calls
``realtime.server.run``. Flag values are passed on as text, so the flags,
the environment and the config file are cast and checked by the same code.
"""

from __future__ import annotations

import argparse
import math
import sys

from . import __version__
from .config import CONFIG_ENV, ConfigError, Settings, env_name, flag_name, load_settings
from .logs import setup_logging

_DEFAULTS = Settings()

#: Settings that have a flag, with their help; the others are set by environment or file.
_FLAGS = {
    "host": ("HOST", "address to listen on"),
    "port": ("PORT", "TCP port to listen on; 0 picks a free one"),
    "log_level": ("LEVEL", "debug, info, warning or error"),
    "log_format": ("FORMAT", "text, or json for one JSON object per line"),
    "audit_log": ("FILE", "security events: a file (JSON lines), - for the main log, or empty for none"),
    "redis": ("URL", "redis://, rediss:// or unix:// URL: use the Redis engine, so that many hub nodes share it"),
    "redis_cluster": ("", "--redis names a node of a Redis Cluster"),
    "ping_interval": ("SECONDS", "seconds between pings; a peer silent for ~1.5x this is dropped"),
    "drain_window": ("SECONDS", "seconds over which shutdown spreads its disconnects"),
    "max_frame_size": ("BYTES", "largest WebSocket frame accepted from a client"),
    "allowed_origins": ("ORIGIN", "allowed Origin header, e.g. https://*.example.com or *; repeat for more"),
    "allowed_hosts": ("HOST", "allowed Host header, e.g. hub.example.com, *.example.com or *; repeat for more"),
    "demo": ("", "serve the demo chat page at /demo (for trying the hub only)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``realtime`` parser; ``serve`` flags have their setting's field name as ``dest``."""
    parser = argparse.ArgumentParser(
        prog="realtime",
        description="A WebSocket hub for mobile apps.",
        epilog="Settings come from flags, then REALTIME_* environment variables, then a TOML file, then defaults.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the hub until SIGINT or SIGTERM",
        description="Run the hub until SIGINT or SIGTERM, then shut down gracefully.",
        epilog="Every setting, with or without a flag, also has an environment variable"
        " (REALTIME_ + its name upper-cased, e.g. REALTIME_CONNECT_TIMEOUT) and a top-level key"
        " of the same name in the TOML file (connect_timeout = 10.0); see realtime/config.py.",
    )
    serve.add_argument(
        "--config", metavar="FILE", help=f"TOML file of settings, one top-level key per setting (env {CONFIG_ENV})"
    )
    for name, (metavar, text) in _FLAGS.items():
        default = getattr(_DEFAULTS, name)
        shown = "none" if default in (None, ()) else str(default).lower() if isinstance(default, bool) else default
        help = f"{text} (env {env_name(name)}, default {shown})"
        if isinstance(default, bool):  # a switch: given means true
            serve.add_argument(
                flag_name(name), dest=name, action="store_const", const=True, default=argparse.SUPPRESS, help=help
            )
            continue
        serve.add_argument(
            flag_name(name),
            dest=name,
            metavar=metavar,
            action="append" if name in ("allowed_origins", "allowed_hosts") else "store",
            default=argparse.SUPPRESS,  # only flags given reach load_settings
            help=help,
        )
    token = commands.add_parser(
        "token",
        help="print a connection token signed with the configured token_secret (for development)",
        description="Print an HS256 connection token for USER, signed with token_secret from the"
        " settings (e.g. --config quickstart.toml). Production tokens come from your own backend.",
    )
    token.add_argument("user", help="the user id (the sub claim)")
    token.add_argument("--config", metavar="FILE", help="TOML file of settings")
    token.add_argument("--ttl", type=_seconds, default=3600.0, help="seconds until it expires (default 3600)")
    token.add_argument("--info", metavar="JSON", help="the info claim, a JSON value shown to others")
    token.add_argument(
        "--channel", action="append", default=[], help="a channel grant: a name, or a prefix ending in * (repeatable)"
    )
    from .loadtest.runner import add_parser as add_loadtest_parser  # the load-test tool (docs/loadtest.md)

    add_loadtest_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``sys.argv[1:]`` by default); return the exit status.

    0 after a graceful shutdown or ``--help``; 2 for a usage or configuration
    error, printed as one ``realtime: ...`` line on stderr.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits for --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "token":
        return _token(args)
    if args.command == "loadtest":
        from .loadtest.runner import main as loadtest

        return loadtest(args)
    return _serve(args)


def _seconds(text: str) -> float:
    """A --ttl: a finite number of seconds above 0 (argparse makes the error a usage line)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1e10:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return value


def _token(args: argparse.Namespace) -> int:
    import json
    import time

    import jwt

    try:
        settings = load_settings(config_file=args.config)
        info = json.loads(args.info) if args.info is not None else None
    except (ConfigError, ValueError) as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    if not settings.token_secret:
        print("realtime: no token_secret is configured (try --config quickstart.toml)", file=sys.stderr)
        return 2
    now = int(time.time())
    claims: dict[str, object] = {"sub": args.user, "iat": now, "exp": now + int(args.ttl)}
    # The hub refuses a token without the audience and issuer it is configured to check.
    if settings.token_audience:
        claims["aud"] = settings.token_audience
    if settings.token_issuer:
        claims["iss"] = settings.token_issuer
    if info is not None:
        claims["info"] = info
    if args.channel:
        claims["channels"] = args.channel
    print(jwt.encode(claims, settings.token_secret, algorithm="HS256"))
    return 0


def _serve(args: argparse.Namespace) -> int:
    overrides = {name: value for name, value in vars(args).items() if name in _FLAGS}
    try:
        settings = load_settings(overrides, config_file=args.config)
    except ConfigError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, settings.node_name)
    try:
        from realtime.server import run  # imports aiohttp; not needed for --help or errors

        run(settings)
    except KeyboardInterrupt:  # ^C before the server installed its signal handlers
        return 130
    except ConfigError as exc:  # found only when the hub starts (the audit log cannot be opened)
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    return 0
