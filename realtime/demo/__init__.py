"""The demo chat page, served when ``demo = true``: for trying the hub, never in production.

``GET /demo`` is ``index.html`` of this directory, ``GET /demo/NAME`` its other files (the page's
script and style, and ``realtime.iife.js``: a copy of the JS SDK's browser bundle, so that a pip
install serves the page without npm). ``GET /demo/token?user=NAME`` signs a connection token for
any user name with ``token_secret``: typing and read receipts belong to a signed-in user, and the
page has no other way to get one. Anyone who can reach it can be anyone, so it answers only a hub
listening on a loopback address, asked from its own machine, with no proxy in between (a request
carrying ``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``, ``Via``... came through one); the Host check
(``allowed_hosts``) applies to every ``/demo`` path, against DNS rebinding.

Every answer carries a Content-Security-Policy that lets the page run only this hub's own scripts
and connect only to this hub: the page's origin is the hub's, so the Origin rule lets its
WebSocket in with no ``allowed_origins`` entry.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path

import jwt
from aiohttp import web

from protocol.codes import ErrorCode

from ..config import Settings
from ..hosts import is_loopback

PATH = "/demo"
#: Seconds a demo token lives; the page's getToken callback fetches a new one before it expires.
TOKEN_TTL = 900
#: The user names the token endpoint signs for: short, and nameable in every channel.
USER = re.compile(r"[A-Za-z0-9_.-]{1,32}")
#: The files served, by suffix; anything else in this directory (this module) is not.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: Headers a reverse proxy adds to what it forwards: the client's address (X-Forwarded-For,
#: Forwarded, X-Real-IP and the CDNs' own), the name and scheme it was asked for, Via. Each is
#: set by some common setup without the others (nginx adds none unless told; X-Real-IP alone
#: is a frequent choice), so any one of them means the request did not come from this machine.
PROXY_HEADERS = (
    "X-Forwarded-For",
    "Forwarded",
    "X-Real-IP",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Via",
    "True-Client-IP",
    "CF-Connecting-IP",
    "X-Client-IP",
)
#: A Host header that may be written into the policy as it is (the Host check ran before).
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
DIRECTORY = Path(__file__).resolve().parent


def content_security_policy(host: str, secure: bool) -> str:
    """Scripts, styles and images from the hub only, no inline code; connections to the hub only.

    ``connect-src 'self'`` covers ``ws:``/``wss:`` in current browsers (CSP level 3); the explicit
    WebSocket URL is for the ones that read it as http(s) only."""
    connect = "'self'"
    if _HOST.fullmatch(host):
        connect += f" {'wss' if secure else 'ws'}://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _headers(request: web.Request, content_type: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": content_security_policy(request.host, request.secure),
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _error(request: web.Request, code: ErrorCode, message: str, status: int) -> web.Response:
    body = json.dumps({"code": int(code), "message": message}, separators=(",", ":"))
    return web.Response(text=body, status=status, headers=_headers(request, "application/json"))


def signing_refused(settings: Settings, remote: str | None, headers: Mapping[str, str]) -> str:
    """Why ``GET /demo/token`` does not sign a token for a request from ``remote`` with ``headers``,
    or "" when it does: it needs token_secret, a hub listening on a loopback address, and a request
    from this machine that no proxy forwarded (a proxy adds one of :data:`PROXY_HEADERS`)."""
    if not settings.token_secret:
        return "no token_secret is set: the demo cannot sign users in"
    if not is_loopback(settings.host):
        return f"the hub listens on {settings.host}: demo tokens are signed only on a loopback address"
    if any(name in headers for name in PROXY_HEADERS):
        return "the request came through a proxy: demo tokens are signed only for this machine"
    try:
        local = ipaddress.ip_address((remote or "").split("%")[0]).is_loopback
    except ValueError:
        local = False
    return "" if local else "demo tokens are signed only for requests from this machine"


def setup_demo(app: web.Application, settings: Settings) -> None:
    """Add the demo routes to ``app``. The files are read now: the hub serves what it started with."""
    files = {
        path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(DIRECTORY.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }

    async def page(request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        if name not in files:
            raise web.HTTPNotFound()
        body, content_type = files[name]
        return web.Response(body=body, headers=_headers(request, content_type))

    async def token(request: web.Request) -> web.Response:
        refused = signing_refused(settings, request.remote, request.headers)
        if refused:
            return _error(request, ErrorCode.PERMISSION_DENIED, refused, 403)
        user = request.query.get("user", "")
        if not USER.fullmatch(user):
            return _error(request, ErrorCode.BAD_REQUEST, "user: 1 to 32 of A-Z a-z 0-9 _ . -", 400)
        now = int(time.time())
        claims: dict[str, object] = {"sub": user, "iat": now, "exp": now + TOKEN_TTL}
        # The hub refuses a token without the audience and issuer it is configured to check.
        if settings.token_audience:
            claims["aud"] = settings.token_audience
        if settings.token_issuer:
            claims["iss"] = settings.token_issuer
        signed = jwt.encode(claims, settings.token_secret or "", algorithm="HS256")
        body = json.dumps({"token": signed, "expires": now + TOKEN_TTL}, separators=(",", ":"))
        return web.Response(text=body, headers=_headers(request, "application/json"))

    app.router.add_get(PATH, page)
    app.router.add_get(PATH + "/", page)
    app.router.add_get(PATH + "/token", token)
    app.router.add_get(PATH + "/{name}", page)
