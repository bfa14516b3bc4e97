"""What the features (chat, presence, live data) build on.

A feature subclasses :class:`Feature` and uses the hub only through
:class:`HubServices`, the narrow interface the hub offers its features
(both in ``realtime.feature``); it never imports ``realtime.hub``. The
composition root (``realtime.server``) builds the features and plugs them in.
``namespace_of`` makes the refusals every channel command starts with.
"""

from __future__ import annotations

from realtime.feature import EVENTS, EventHook, Feature, Handler, HubServices, PublishHook, namespace_of

__all__ = ["EVENTS", "EventHook", "Feature", "Handler", "HubServices", "PublishHook", "namespace_of"]
