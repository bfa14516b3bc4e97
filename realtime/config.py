"""Hub settings: one dataclass, read and validated in one place.

Precedence: command-line flags > ``REALTIME_*`` environment variables > one
TOML file > the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    #: Redis URL for the Redis engine; None runs the in-memory engine (one process).
    redis: str | None = None
    #: Seconds between server pings; a peer silent for about 1.5x this is dropped.
    ping_interval: float = 25.0
    #: Seconds a new connection has to send its connect command.
    connect_timeout: float = 10.0
    #: Largest WebSocket frame accepted from a client, in bytes.
    max_frame_size: int = 65536
    #: Bytes that may wait for one client before it is disconnected as slow.
    max_queue_bytes: int = 1024 * 1024
    #: Most channels one connection may subscribe to.
    max_subscriptions: int = 128
    #: Allowed values of the Origin header ("*" allows any, "https://*.example.com"
    #: a wildcard); requests without Origin (native apps) are always allowed, and an
    #: empty list allows only the hub's own host.
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    #: Seconds over which shutdown spreads its disconnects, against reconnect storms.
    drain_window: float = 5.0
    #: Publications kept per channel for recovery, and for how long (seconds).
    history_size: int = 100
    history_ttl: float = 300.0
