"""Namespaces: resolving a channel, the users a channel names, option validation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from realtime.namespaces import (
    OPTIONS,
    Namespace,
    Namespaces,
    OptionError,
    channel_users,
    default_namespaces,
    namespace_of,
    resolve,
)

# Resolution


@pytest.mark.parametrize(
    ("channel", "namespace"),
    [
        ("news", ""),
        ("chat:lobby", "chat"),
        ("chat:lobby:2", "chat"),
        ("user:#alice", "user"),
        ("#alice", ""),
        (":x", ""),
        ("", ""),
    ],
)
def test_namespace_of(channel: str, namespace: str) -> None:
    assert namespace_of(channel) == namespace


def test_resolve() -> None:
    chat = Namespace("chat", kind="chat")
    default = Namespace()
    namespaces = Namespaces([default, chat])
    assert resolve(namespaces, "chat:lobby") is chat
    assert resolve(namespaces, "news") is default
    assert resolve(namespaces, "live:scores") is None


def test_resolve_without_default_namespace() -> None:
    namespaces = Namespaces([Namespace("chat")])
    assert resolve(namespaces, "news") is None
    assert resolve(namespaces, "chat:x") is namespaces["chat"]


def test_resolve_accepts_any_mapping() -> None:
    assert resolve({"": Namespace()}, "news") == Namespace()


def test_default_namespaces() -> None:
    namespaces = default_namespaces()
    assert dict(namespaces) == {"": Namespace()}
    assert resolve(namespaces, "news") == Namespace()
    assert resolve(namespaces, "chat:lobby") is None


# Users named in a channel


@pytest.mark.parametrize(
    ("channel", "users"),
    [
        ("user:#alice", ("alice",)),
        ("dm:#alice,bob", ("alice", "bob")),
        ("dm:room#alice,bob", ("alice", "bob")),
        ("#alice", ("alice",)),
        ("dm:#alice,,bob,", ("alice", "bob")),
        ("user:#", ()),
        ("user:alice", None),
        ("news", None),
        ("a#b:c", None),  # the '#' is in the namespace part
        ("user:#a#b", ("a#b",)),
    ],
)
def test_channel_users(channel: str, users: tuple[str, ...] | None) -> None:
    assert channel_users(channel) == users


# Options


def test_defaults() -> None:
    ns = Namespace()
    assert (ns.name, ns.kind, ns.subscribe, ns.publish) == ("", "plain", "authenticated", "server")
    assert (ns.history_size, ns.history_ttl, ns.recovery) == (None, None, True)
    assert (ns.presence, ns.join_leave, ns.presence_grace) == (False, False, 5.0)
    assert (ns.typing_interval, ns.typing_timeout, ns.idempotency_window) == (1.0, 6.0, 300.0)
    assert (ns.max_message_size, ns.client_write, ns.max_rate) == (None, False, 0.0)


def test_options_are_every_field_but_the_name() -> None:
    assert set(OPTIONS) == {f.name for f in dataclasses.fields(Namespace)} - {"name"}


def test_every_option_is_in_the_guides_table() -> None:
    """docs/guide.md "Namespaces": one row names each option (a row may name several)."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()
    table = guide[guide.index("| option | default | meaning |") :].split("\n\n", 1)[0]
    named = {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert set(OPTIONS) - named == set()


def test_integers_for_float_options_become_floats() -> None:
    ns = Namespace(history_ttl=60, presence_grace=0, max_rate=10)
    assert ns.history_ttl == 60.0 and type(ns.history_ttl) is float
    assert type(ns.presence_grace) is float
    assert type(ns.max_rate) is float


def test_kind_specific_options_are_accepted_for_any_kind() -> None:
    ns = Namespace(kind="plain", client_write=True, max_rate=5, typing_interval=2, typing_timeout=10)
    assert ns.client_write and ns.max_rate == 5.0


def test_history_falls_back_to_the_global_settings() -> None:
    assert Namespace().history(100, 300.0) == (100, 300.0)
    assert Namespace(history_size=0).history(100, 300.0) == (0, 300.0)
    assert Namespace(history_size=5, history_ttl=1.5).history(100, 300.0) == (5, 1.5)


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Namespace().kind = "chat"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "option", "reason"),
    [
        ({"name": "a:b"}, "name", "expected letters, digits, '_', '.' or '-' (no ':' or '#')"),
        ({"name": "a#b"}, "name", "expected letters, digits, '_', '.' or '-' (no ':' or '#')"),
        ({"name": "a b"}, "name", "expected letters, digits, '_', '.' or '-' (no ':' or '#')"),
        ({"kind": "chatroom"}, "kind", "expected one of plain, chat, live, status"),
        ({"kind": 1}, "kind", "expected one of plain, chat, live, status"),
        ({"subscribe": "everyone"}, "subscribe", "expected one of anyone, authenticated, user, token"),
        ({"publish": "client"}, "publish", "expected one of clients, server"),
        ({"presence": "yes"}, "presence", "expected true or false"),
        ({"recovery": 1}, "recovery", "expected true or false"),
        ({"history_size": -1}, "history_size", "expected a number >= 0"),
        ({"history_size": 1.5}, "history_size", "expected an integer"),
        ({"history_size": True}, "history_size", "expected an integer"),
        ({"history_ttl": 0}, "history_ttl", "expected a number > 0"),
        ({"history_ttl": "60"}, "history_ttl", "expected a number"),
        ({"presence_grace": -0.1}, "presence_grace", "expected a number >= 0"),
        ({"presence_grace": float("nan")}, "presence_grace", "expected a number"),
        ({"typing_interval": float("inf")}, "typing_interval", "expected a number"),
        ({"typing_timeout": 0}, "typing_timeout", "expected a number > 0"),
        ({"typing_timeout": 1, "typing_interval": 2}, "typing_timeout", "expected a number >= typing_interval"),
        ({"idempotency_window": -1}, "idempotency_window", "expected a number >= 0"),
        ({"max_message_size": 0}, "max_message_size", "expected a number > 0"),
        ({"max_rate": -1}, "max_rate", "expected a number >= 0"),
        ({"client_write": None}, "client_write", "expected true or false"),
    ],
)
def test_invalid_options(options: dict[str, Any], option: str, reason: str) -> None:
    with pytest.raises(OptionError) as info:
        Namespace(**options)
    assert (info.value.option, info.value.reason) == (option, reason)
    assert isinstance(info.value, ValueError)


def test_zero_is_allowed_where_it_means_off() -> None:
    ns = Namespace(history_size=0, presence_grace=0, typing_interval=0, idempotency_window=0, max_rate=0)
    assert ns.history_size == 0


# The immutable mapping


def test_namespaces_mapping() -> None:
    chat = Namespace("chat", kind="chat")
    namespaces = Namespaces([Namespace(), chat])
    assert list(namespaces) == ["", "chat"]
    assert len(namespaces) == 2
    assert namespaces["chat"] is chat
    assert "live" not in namespaces
    assert namespaces == {"": Namespace(), "chat": chat}
    assert namespaces == Namespaces([chat, Namespace()])
    assert hash(namespaces) == hash(Namespaces([chat, Namespace()]))
    assert "chat" in repr(namespaces)


def test_namespaces_are_immutable() -> None:
    namespaces = Namespaces([Namespace()])
    with pytest.raises(TypeError):
        namespaces["x"] = Namespace("x")  # type: ignore[index]
    with pytest.raises(AttributeError):
        namespaces.extra = 1  # type: ignore[attr-defined]


def test_two_namespaces_with_one_name() -> None:
    with pytest.raises(ValueError, match="two namespaces named 'chat'"):
        Namespaces([Namespace("chat"), Namespace("chat", kind="chat")])
