"""Channel namespaces: what a channel is (plain, chat, live, status) and who may use it.

A channel's namespace is the text before its first ``:`` (``chat:lobby`` is in
``chat``); a channel without a colon is in the default namespace, named ``""``
(``"default"`` in the TOML file). Namespaces are configured only in the TOML
file, as ``[namespaces.NAME]`` tables (``realtime.config``).

Call :func:`resolve` with ``Settings.namespaces`` to get a channel's
:class:`Namespace` (``None``: unknown namespace, refuse with UNKNOWN_CHANNEL),
then ``realtime.auth.check_subscribe`` / ``check_publish`` for permissions.
Pure: no I/O.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Literal

from protocol.errors import ProtocolError
from protocol.fields import check_channel
from protocol.limits import MAX_CHANNEL_LENGTH

Kind = Literal["plain", "chat", "live", "status"]
SubscribeRule = Literal["anyone", "authenticated", "user", "token"]
PublishRule = Literal["clients", "server"]
PushPreview = Literal["none", "text"]

KINDS: tuple[str, ...] = typing.get_args(Kind)
SUBSCRIBE_RULES: tuple[str, ...] = typing.get_args(SubscribeRule)
PUBLISH_RULES: tuple[str, ...] = typing.get_args(PublishRule)
PUSH_PREVIEWS: tuple[str, ...] = typing.get_args(PushPreview)

#: Names a configured namespace may have: no ':' (it ends the namespace) and no '#'.
NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class OptionError(ValueError):
    """An option of a namespace (or API key) is invalid: ``option`` names it, ``reason`` says why.

    ``realtime.config`` turns it into a one-line ConfigError naming
    ``namespaces.NAME.option``.
    """

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Namespace:
    """The options of one namespace; validated on construction (raises :class:`OptionError`).

    Options meant for one kind (typing for chat, client_write for live) may be
    given for any kind; they are simply unused there.
    """

    #: The namespace's name, the text before the channel's first ':'; "" is the default namespace.
    name: str = ""
    #: "plain": publications only. "chat": messages get ids, timestamps and their
    #: sender; sends are idempotent; typing notices and read receipts. "live":
    #: keyed state, sent as a snapshot on subscribe, then as deltas. "status":
    #: channel "<ns>:<user>" carries that user's online status (handlers/presence.py).
    kind: Kind = "plain"
    #: Who may subscribe. "anyone": every connection, anonymous ones included
    #: (when allow_anonymous is on). "authenticated": connections with a user.
    #: "user": only the users named after '#' in the channel ("user:#alice",
    #: "dm:#alice,bob"). "token": connections presenting a subscription token
    #: for that exact channel. Grants in the connection token's ``channels``
    #: claim allow a channel whatever this rule says.
    subscribe: SubscribeRule = "authenticated"
    #: Who may publish. "server": only the server API. "clients": also any
    #: connection that may subscribe to the channel.
    publish: PublishRule = "server"
    #: Publications kept per channel for recovery; None = the global history_size.
    history_size: int | None = None
    #: Seconds publications are kept; None = the global history_ttl.
    history_ttl: float | None = None
    #: Most bytes of publications a channel's history keeps (data and publisher info; the
    #: oldest go first, the newest is always kept): a few large publications cannot crowd
    #: out everything else, nor make every recovery too large to answer.
    history_max_bytes: int = 1024 * 1024
    #: Most channels of this namespace with subscribers on one node at once; a subscribe
    #: that would open one more is refused with LIMIT_EXCEEDED. (Per node: what a node can
    #: count without a round trip; channels nobody subscribes to hold no node state.)
    max_channels: int = 100_000
    #: Whether a resubscribing client may recover missed publications from history.
    recovery: bool = True
    #: Whether the channel keeps presence (who is subscribed).
    presence: bool = False
    #: Whether subscribers get join and leave events.
    join_leave: bool = False
    #: Seconds a leave waits, so that a quick reconnect produces no leave/join pair.
    presence_grace: float = 5.0
    #: chat: a user may send a typing notice at most this often (seconds) per channel.
    typing_interval: float = 1.0
    #: chat: a typing indicator expires this many seconds after the user's last notice.
    typing_timeout: float = 6.0
    #: chat: seconds during which a resent message id is recognised and not delivered twice.
    idempotency_window: float = 300.0
    #: Largest payload (bytes of data) a client may publish here; None = only max_frame_size limits it.
    max_message_size: int | None = None
    #: live: whether clients may set and patch keys (else only the server API writes).
    client_write: bool = False
    #: live: most updates per second per key delivered to one client, later ones
    #: conflated into the next; 0 delivers every change.
    max_rate: float = 0.0
    #: live: most bytes of state per channel: each key's UTF-8 bytes plus its value's (a
    #: deleted key, remembered for catching-up clients, counts its key). None: an eighth of
    #: the hub's max_queue_bytes, so that a snapshot always fits a client's queue, in JSON too.
    max_state_bytes: int | None = None
    #: live: most keys per channel (and most deleted keys remembered per channel).
    max_state_keys: int = 1000
    #: live: seconds a key lives after its last write (then it is deleted); 0: for ever.
    state_ttl: float = 86400.0
    #: chat: whether a message's offline members are sent to the ``[push] url`` (docs/integration.md).
    push: bool = False
    #: chat: what a push may show of the message: "none" (only that there is one) or "text"
    #: (the string field ``push_text_field`` of the message's data, cut to ``push_preview_length``).
    push_preview: PushPreview = "none"
    push_text_field: str = "text"
    push_preview_length: int = 100
    #: URL of the app's backend deciding every subscribe here (docs/integration.md); "": off.
    subscribe_proxy: str = ""
    #: URL of the app's backend checking (and possibly rewriting) every client publish here; "": off.
    publish_proxy: str = ""
    #: Seconds the proxies of this namespace may take; None = the global backend_timeout.
    proxy_timeout: float | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def history(self, default_size: int, default_ttl: float) -> tuple[int, float]:
        """(size, ttl) of this namespace's history, the global settings filling in what it leaves unset."""
        size = default_size if self.history_size is None else self.history_size
        ttl = default_ttl if self.history_ttl is None else self.history_ttl
        return size, ttl


#: Options a ``[namespaces.NAME]`` table may set (the name comes from the table).
OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(Namespace) if f.name != "name")


class Namespaces(Mapping[str, Namespace]):
    """An immutable, hashable mapping of namespace name -> :class:`Namespace`.

    Built from the namespaces themselves, so keys always equal ``ns.name``;
    two namespaces with one name raise ``ValueError``.
    """

    __slots__ = ("_items",)

    def __init__(self, namespaces: Iterable[Namespace] = ()) -> None:
        items: dict[str, Namespace] = {}
        for ns in namespaces:
            if ns.name in items:
                raise ValueError(f"two namespaces named {ns.name!r}")
            items[ns.name] = ns
        self._items = items

    def __getitem__(self, name: str) -> Namespace:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"Namespaces({list(self._items.values())!r})"


def default_namespaces() -> Namespaces:
    """What a config without namespaces gets: the default namespace "" with default options."""
    return Namespaces([Namespace()])


def namespace_of(channel: str) -> str:
    """The namespace name of ``channel``: the text before its first ':', or "" without one."""
    name, colon, _ = channel.partition(":")
    return name if colon else ""


def resolve(namespaces: Mapping[str, Namespace], channel: str) -> Namespace | None:
    """The namespace of ``channel``, or None when it is not configured (refuse: UNKNOWN_CHANNEL)."""
    return namespaces.get(namespace_of(channel))


#: The separator of users in a user-limited channel name ("dm:#alice,bob").
USER_SEPARATOR = ","


def channel_users(channel: str) -> tuple[str, ...] | None:
    """The users a channel names after '#' (``dm:#alice,bob`` -> ("alice", "bob")); None without '#'.

    Only the part after the namespace counts. Empty names are dropped, so an
    anonymous connection (user "") never matches.
    """
    rest = channel.partition(":")[2] if ":" in channel else channel
    _, hash_, users = rest.partition("#")
    if not hash_:
        return None
    return tuple(user for user in users.split(USER_SEPARATOR) if user)


#: Longest user id: one that fits the shortest user-limited channel name, "#" + the id.
MAX_USER_ID_LENGTH = MAX_CHANNEL_LENGTH - 1


def user_id_problem(user: str) -> str:
    """Why ``user`` cannot be a connection's user id, or "" when it can.

    Every user id must be nameable in a user-limited channel: "#" + the id must
    be a valid channel name (protocol.fields.check_channel: at most
    :data:`MAX_USER_ID_LENGTH` characters, none of the code points channel
    names forbid) and the id must not hold the separator ",". Otherwise the
    user could never have a channel of her own, and ``carol,eve``'s channel
    would be read as carol's and eve's.
    """
    if USER_SEPARATOR in user:
        return f"it contains {USER_SEPARATOR!r}, the separator of users in channel names"
    try:
        check_channel("#" + user)
    except ProtocolError:
        if len(user) > MAX_USER_ID_LENGTH:
            return f"longer than {MAX_USER_ID_LENGTH} characters"
        return "it contains a character channel names forbid"
    return ""


# --- validation ---------------------------------------------------------------

_ENUMS: dict[str, tuple[str, ...]] = {
    "kind": KINDS,
    "subscribe": SUBSCRIBE_RULES,
    "publish": PUBLISH_RULES,
    "push_preview": PUSH_PREVIEWS,
}
_BOOLS = ("recovery", "presence", "join_leave", "client_write", "push")
#: Number options: (integer?, may be None?, smallest allowed, smallest excluded?)
_NUMBERS: dict[str, tuple[bool, bool, float, bool]] = {
    "history_size": (True, True, 0, False),
    "history_ttl": (False, True, 0, True),
    "presence_grace": (False, False, 0, False),
    "typing_interval": (False, False, 0, False),
    "typing_timeout": (False, False, 0, True),
    "idempotency_window": (False, False, 0, False),
    "max_message_size": (True, True, 0, True),
    "history_max_bytes": (True, False, 0, True),
    "max_channels": (True, False, 0, True),
    "max_rate": (False, False, 0, False),
    "max_state_bytes": (True, True, 0, True),
    "max_state_keys": (True, False, 0, True),
    "state_ttl": (False, False, 0, False),
    "push_preview_length": (True, False, 0, True),
    "proxy_timeout": (False, True, 0, True),
}


def _validate(ns: Namespace) -> None:
    """Check every option's type and range; integers given for float options become floats."""
    if not isinstance(ns.name, str) or (ns.name and not NAME.fullmatch(ns.name)):
        raise OptionError("name", "expected letters, digits, '_', '.' or '-' (no ':' or '#')")
    for option, allowed in _ENUMS.items():
        value = getattr(ns, option)
        if not isinstance(value, str) or value not in allowed:
            raise OptionError(option, f"expected one of {', '.join(allowed)}")
    for option in _BOOLS:
        if not isinstance(getattr(ns, option), bool):
            raise OptionError(option, "expected true or false")
    for option, (integer, optional, low, exclusive) in _NUMBERS.items():
        value = getattr(ns, option)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise OptionError(option, "expected an integer" if integer else "expected a number")
        if not integer:
            if not math.isfinite(value):
                raise OptionError(option, "expected a number")
            object.__setattr__(ns, option, float(value))
        if value < low or (exclusive and value == low):
            raise OptionError(option, f"expected a number {'>' if exclusive else '>='} {low}")
    if not isinstance(ns.push_text_field, str) or not ns.push_text_field:
        raise OptionError("push_text_field", "expected the name of a field of the message's data")
    if ns.push and ns.kind != "chat":
        raise OptionError("push", 'the offline push hook is for chat namespaces (kind = "chat")')
    for option in ("subscribe_proxy", "publish_proxy"):
        url = getattr(ns, option)
        if not isinstance(url, str) or (url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url, re.IGNORECASE)):
            raise OptionError(option, "expected an http:// or https:// URL, or '' (off)")
    if ns.typing_timeout < ns.typing_interval:
        raise OptionError("typing_timeout", "expected a number >= typing_interval")
