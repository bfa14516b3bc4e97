"""What the features (chat, presence, live data) build on.

A feature subclasses :class:`Feature` and uses the hub only through
:class:`HubServices`, the narrow interface the hub offers its features
(both in ``realtime.feature``); it never imports ``realtime.hub``. The
composition root (``realtime.server``) builds the features and plugs them in.
Checks that more than one feature makes live here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.codes import ErrorCode
from protocol.errors import CommandError
from realtime.feature import EVENTS, EventHook, Feature, Handler, HubServices, PublishHook

if TYPE_CHECKING:
    from realtime.namespaces import Namespace

__all__ = ["EVENTS", "EventHook", "Feature", "Handler", "HubServices", "PublishHook", "namespace_of"]


def namespace_of(hub: HubServices, channel: str, kind: str | None = None) -> Namespace:
    """The namespace of ``channel``: UNKNOWN_CHANNEL when none is configured for it,
    BAD_REQUEST when it is not of ``kind`` (the command does not apply to the channel)."""
    ns = hub.namespace(channel)
    if ns is None:
        raise CommandError(ErrorCode.UNKNOWN_CHANNEL, "unknown namespace")
    if kind is not None and ns.kind != kind:
        raise CommandError(ErrorCode.BAD_REQUEST, f"not a {kind} channel")
    return ns
