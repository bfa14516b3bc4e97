"""Who a connection is and what it may do: tokens, channel permissions, API keys.

Pure (no asyncio, no aiohttp): the hub's handlers call in here.

* :class:`TokenVerifier` (``TokenVerifier.from_settings(settings)``, once at
  startup) turns a connect token into an :class:`Identity`
  (:meth:`~TokenVerifier.verify_connection`, also on refresh) and checks
  subscription tokens (:meth:`~TokenVerifier.verify_subscription`). It raises
  :class:`TokenInvalid` or :class:`TokenExpired`.
* :func:`check_subscribe` and :func:`check_publish` raise ``CommandError``
  when the namespace's rules (``realtime.namespaces``) refuse.
* :func:`find_api_key` finds the :class:`ApiKey` a backend presented;
  :meth:`ApiKey.allows` checks its scopes.

Tokens are JWTs signed with HS256 (``token_secret``) or RS256/ES256
(``token_public_key``). Connection token claims: ``sub`` (the user, required,
non-empty), ``exp`` (optional: without it the token never expires), ``iat``,
``nbf`` (Unix times up to year 9999), ``info`` (any JSON value, kept as msgpack bytes), ``channels`` (grants:
exact channel names, or a prefix ending in ``*`` such as ``live:*``, see
:func:`grant_matches`), and ``aud``/``iss``,
checked when ``token_audience``/``token_issuer`` are set (the token must then
carry them, matching; unset, the claim is not checked, as identity providers put
``aud`` in every token). ``sub`` must be a user id
that user-limited channels can name (:func:`realtime.namespaces.user_id_problem`).
Subscription tokens carry ``sub`` (the connection's user) and ``channel`` (the
exact channel), plus the same ``exp``/``iat``/``nbf``/``aud``/``iss``. The
``channel`` claim is what makes a token a subscription token: a token carrying
it never connects (or refreshes), and one without it never subscribes, so one
kind cannot stand in for the other. No leeway: hub and token issuer need
synchronised clocks. Error messages never echo a token.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import jwt
import msgpack  # type: ignore[import-untyped]  # no stubs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import HMACAlgorithm

from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, RealtimeError

from .namespaces import Namespace, OptionError, channel_users, user_id_problem


class TokenSettings(Protocol):
    """The settings a :class:`TokenVerifier` is built from (``realtime.config.Settings`` has them)."""

    @property
    def token_secret(self) -> str | None: ...
    @property
    def token_public_key(self) -> str | None: ...
    @property
    def token_audience(self) -> str | None: ...
    @property
    def token_issuer(self) -> str | None: ...
    @property
    def allow_anonymous(self) -> bool: ...


#: Shortest accepted HS256 secret, in bytes (RFC 7518 section 3.2: at least the hash size).
MIN_SECRET_BYTES = 32
#: Smallest accepted RSA key, in bits (PyJWT warns below it).
MIN_RSA_BITS = 2048
#: The latest time claim accepted (9999-12-31T23:59:59Z).
MAX_TIME = 253_402_300_799
#: The JWT algorithm of an EC public key, by curve.
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

#: What an API key may be allowed to do; "users" covers status, disconnect,
#: unsubscribe and revoke; "metrics" GET /metrics on the main port. "*" in a key's scopes allows all of them.
SCOPES = ("publish", "history", "presence", "state", "users", "metrics")
ALL_SCOPES = "*"


# --- errors -------------------------------------------------------------------


class TokenError(RealtimeError):
    """A token was refused. ``code``/``close_code`` are what a refused *connection* token maps to."""

    code: ClassVar[ErrorCode]
    close_code: ClassVar[CloseCode]


class TokenInvalid(TokenError):
    """Malformed, badly signed, wrong audience/issuer/algorithm, bad claims, or no token key configured."""

    code = ErrorCode.UNAUTHORIZED
    close_code = CloseCode.UNAUTHORIZED


class TokenExpired(TokenError):
    """Well signed, but past its ``exp``: the client should get a fresh token."""

    code = ErrorCode.TOKEN_EXPIRED
    close_code = CloseCode.TOKEN_EXPIRED

    def __init__(self, message: str = "token expired") -> None:
        super().__init__(message)


# --- identities and tokens ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is, from its connection token (or anonymous)."""

    #: The token's ``sub``; "" for an anonymous connection.
    user: str
    #: The token's ``info`` claim (any JSON value) as msgpack bytes; None without one.
    info: bytes | None = None
    #: Channels granted by the ``channels`` claim: exact names, or prefixes ending in "*" ("live:*").
    channels: tuple[str, ...] = ()
    #: The token's ``exp`` (Unix time); None: it never expires.
    expires: float | None = None
    #: The token's ``iat`` (Unix time), if any.
    issued_at: float | None = None

    @property
    def anonymous(self) -> bool:
        return not self.user

    def grants(self, channel: str) -> bool:
        """Whether the token's ``channels`` claim grants ``channel`` (never for anonymous identities)."""
        return bool(self.user) and any(grant_matches(grant, channel) for grant in self.channels)


def grant_matches(grant: str, channel: str) -> bool:
    """Whether one grant of a ``channels`` claim covers ``channel``.

    The one syntax of grants: a grant ending in ``*`` covers every channel that
    starts with the text before that last ``*`` (``live:*``; ``*`` alone covers
    all); any other grant covers exactly the channel of that name. No other
    character is special (``?``, ``[``, ``]`` and a ``*`` before the end are
    literal), so a channel name is always its own grant.
    """
    if grant.endswith("*"):
        return channel.startswith(grant[:-1])
    return channel == grant


ANONYMOUS = Identity("")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_public_key(pem: str) -> tuple[PublicKey, str]:
    """Parse PEM text into (key, JWT algorithm): RSA -> RS256, EC -> ES256 (ES384/ES512 on P-384/P-521).

    Raises ``ValueError`` with a short reason; config reports it against ``token_public_key``.
    """
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("expected a PEM public key (RSA or EC)") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"expected an RSA key of at least {MIN_RSA_BITS} bits, got {key.key_size}")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"expected an EC key on P-256, P-384 or P-521, got {key.curve.name}")
        return key, algorithm
    raise ValueError("expected an RSA or EC public key")


def secret_bytes(secret: str) -> bytes:
    """The HS256 key of ``secret``; ``ValueError`` when shorter than :data:`MIN_SECRET_BYTES`."""
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"expected a secret of at least {MIN_SECRET_BYTES} bytes")
    return key


_JWT_ERRORS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.DecodeError, "malformed token"),
)


class _PreparedHMAC(HMACAlgorithm):
    """HS256 whose key is prepared once: PyJWT prepares the key on every decode, and for an
    HMAC secret that means scanning it for PEM, SSH and JWK shapes (a regex and a JSON
    parse), a fifth of a token's verification (py-spy)."""

    def __init__(self, secret: bytes) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._secret = secret
        self._prepared = super().prepare_key(secret)

    def prepare_key(self, key: str | bytes) -> bytes:
        return self._prepared if key is self._secret else super().prepare_key(key)


def _decoder(required: tuple[str, ...], hmac_secret: bytes | None, check_audience: bool) -> jwt.PyJWT:
    """A PyJWT decoder whose options are set once (PyJWT merges per-call options into new
    dicts on every decode) and whose HS256 key is prepared once."""
    decoder = jwt.PyJWT(
        options={
            "require": list(required),
            # Checked by TokenVerifier._decode: times against `now` (PyJWT would also refuse
            # an iat in the future, and PyJWT 2.8 checks no sub type).
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_sub": False,
            # Without token_audience, aud is not read: identity providers put one in every
            # token (PyJWT would refuse them all); with it, aud must name it.
            "verify_aud": check_audience,
        }
    )
    if hmac_secret is not None:
        jws = decoder._jws  # PyJWT's own JWS decoder: no public way to hand it a prepared key
        jws.unregister_algorithm("HS256")
        jws.register_algorithm("HS256", _PreparedHMAC(hmac_secret))
    return decoder


#: The claims each kind of token must carry.
_CONNECTION_CLAIMS = ("sub",)
_SUBSCRIPTION_CLAIMS = ("sub", "channel")


class TokenVerifier:
    """Verifies connection and subscription tokens against the configured keys.

    Build it once with :meth:`from_settings`. Both a secret and a public key may
    be configured; each token's ``alg`` header picks the one key made for that
    algorithm, so an HS256 token is never checked against a public key.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        allow_anonymous: bool = False,
    ) -> None:
        """``public_key`` is PEM text. Raises ``ValueError`` for a short secret or an unusable key."""
        keys: dict[str, bytes | PublicKey] = {}
        if secret is not None:
            keys["HS256"] = secret_bytes(secret)
        if public_key is not None:
            key, algorithm = load_public_key(public_key)
            keys[algorithm] = key
        self._keys = keys
        hmac_secret = keys.get("HS256")
        assert hmac_secret is None or isinstance(hmac_secret, bytes)
        self._decoders: dict[tuple[str, ...], jwt.PyJWT] = {
            required: _decoder(required, hmac_secret, audience is not None)
            for required in (_CONNECTION_CLAIMS, _SUBSCRIPTION_CLAIMS)
        }
        #: The one algorithm when one key is configured: a token's header need not be read
        #: first to pick the key (PyJWT refuses any other ``alg`` itself).
        self._only: tuple[str, bytes | PublicKey] | None = next(iter(keys.items())) if len(keys) == 1 else None
        self.audience = audience
        self.issuer = issuer
        self.allow_anonymous = allow_anonymous

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> TokenVerifier:
        return cls(
            secret=settings.token_secret,
            public_key=settings.token_public_key,
            audience=settings.token_audience,
            issuer=settings.token_issuer,
            allow_anonymous=settings.allow_anonymous,
        )

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The JWT algorithms accepted, e.g. ("HS256", "RS256"); empty when no key is configured."""
        return tuple(self._keys)

    def verify_connection(self, token: str | None, *, now: float | None = None) -> Identity:
        """The identity in a connect (or refresh) token; :data:`ANONYMOUS` for none when allowed.

        Raises :class:`TokenInvalid` or :class:`TokenExpired`. An invalid token is
        refused even when anonymous connections are allowed.
        """
        if not token:
            if self.allow_anonymous:
                return ANONYMOUS
            raise TokenInvalid("token required")
        claims = self._decode(token, _CONNECTION_CLAIMS, now)
        if "channel" in claims:  # the mark of a subscription token: it never connects
            raise TokenInvalid("a subscription token cannot connect")
        user = claims["sub"]
        if not user:
            raise TokenInvalid("sub must not be empty")
        problem = user_id_problem(user)
        if problem:
            raise TokenInvalid(f"sub is not a usable user id: {problem}")
        info = claims.get("info")
        if info is not None:
            try:
                info = msgpack.packb(info)
            except (OverflowError, ValueError, TypeError):
                raise TokenInvalid("info claim cannot be packed") from None
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise TokenInvalid("channels must be a list of strings")
        return Identity(
            user=user,
            info=info,
            channels=tuple(channels),
            expires=_time(claims, "exp"),
            issued_at=_time(claims, "iat"),
        )

    def verify_subscription(self, token: str, *, user: str, channel: str, now: float | None = None) -> None:
        """Check a subscription token for ``channel``, issued to ``user`` ("" for anonymous).

        Raises :class:`TokenInvalid` or :class:`TokenExpired`.
        """
        if not token:
            raise TokenInvalid("token required")
        claims = self._decode(token, _SUBSCRIPTION_CLAIMS, now)
        if claims["channel"] != channel:
            raise TokenInvalid("token is for another channel")
        if claims["sub"] != user:
            raise TokenInvalid("token is for another user")

    def _decode(self, token: str, required: tuple[str, ...], now: float | None) -> dict[str, Any]:
        if not self._keys:
            raise TokenInvalid("no token key configured")
        if not isinstance(token, str):
            raise TokenInvalid("malformed token")
        try:
            if self._only is not None:
                algorithm, key = self._only
            else:
                named = jwt.get_unverified_header(token).get("alg")
                found = self._keys.get(named) if isinstance(named, str) else None
                if found is None or not isinstance(named, str):
                    raise TokenInvalid("algorithm not allowed")
                algorithm, key = named, found
            claims = self._decoders[required].decode(
                token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer, leeway=0
            )
        except jwt.MissingRequiredClaimError as exc:
            raise TokenInvalid(f"missing claim {exc.claim}") from None
        except jwt.PyJWTError as exc:
            reason = next((text for kind, text in _JWT_ERRORS if isinstance(exc, kind)), "invalid token")
            raise TokenInvalid(reason) from None
        for claim in required:
            if not isinstance(claims[claim], str):
                raise TokenInvalid(f"{claim} must be a string")
        now = time.time() if now is None else now
        _time(claims, "iat")
        not_before = _time(claims, "nbf")
        if not_before is not None and now < not_before:
            raise TokenInvalid("token not valid yet")
        expires = _time(claims, "exp")
        if expires is not None and now >= expires:
            raise TokenExpired()
        return claims


def _time(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"{name} must be a number")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise TokenInvalid(f"{name} must be a number")
    if not 0 <= seconds <= MAX_TIME:  # replies carry exp as a uint64; no real token is past year 9999
        raise TokenInvalid(f"{name} must be a Unix time between 0 and {MAX_TIME}")
    return seconds


# --- channel permissions ------------------------------------------------------


def check_subscribe(
    identity: Identity,
    channel: str,
    ns: Namespace,
    sub_token: str | None,
    verifier: TokenVerifier,
    *,
    now: float | None = None,
) -> None:
    """Raise ``CommandError`` unless ``identity`` may subscribe to ``channel`` in ``ns``.

    A grant in the connection token (:meth:`Identity.grants`) allows any
    channel. Otherwise ``ns.subscribe`` decides; refusals are
    PERMISSION_DENIED (anonymous connections on "authenticated" namespaces too:
    they are connected, just not allowed here), except an expired subscription
    token: TOKEN_EXPIRED, so the client fetches a new one. ``sub_token`` is only
    read on "token" namespaces.
    """
    if identity.grants(channel):
        return
    if ns.subscribe == "token":
        if not sub_token:
            raise CommandError(ErrorCode.PERMISSION_DENIED, "subscription token required")
        try:
            verifier.verify_subscription(sub_token, user=identity.user, channel=channel, now=now)
        except TokenExpired:
            raise CommandError(ErrorCode.TOKEN_EXPIRED, "subscription token expired") from None
        except TokenInvalid as exc:
            raise CommandError(ErrorCode.PERMISSION_DENIED, f"invalid subscription token: {exc}") from None
        return
    denied = _rule_denies(identity, channel, ns)
    if denied:
        raise CommandError(ErrorCode.PERMISSION_DENIED, denied)


def check_publish(identity: Identity, channel: str, ns: Namespace, *, subscribed: bool = False) -> None:
    """Raise PERMISSION_DENIED unless ``identity`` may publish to ``channel`` from a client.

    Needs ``ns.publish == "clients"`` and the right to subscribe. On "token"
    namespaces that right is shown by a grant or by being subscribed (pass
    ``subscribed=True``: the subscription token was checked then).
    """
    if ns.publish != "clients":
        raise CommandError(ErrorCode.PERMISSION_DENIED, "only the server publishes here")
    if identity.grants(channel):
        return
    if ns.subscribe == "token":
        if not subscribed:
            raise CommandError(ErrorCode.PERMISSION_DENIED, "subscribe first")
        return
    denied = _rule_denies(identity, channel, ns)
    if denied:
        raise CommandError(ErrorCode.PERMISSION_DENIED, denied)


def _rule_denies(identity: Identity, channel: str, ns: Namespace) -> str:
    """Why the "anyone"/"authenticated"/"user" rule refuses, or "" when it allows."""
    if ns.subscribe == "anyone":
        return ""
    if ns.subscribe == "authenticated":
        return "" if identity.user else "anonymous connections are not allowed here"
    if ns.subscribe == "user":
        return "" if identity.user in (channel_users(channel) or ()) else "channel of other users"
    return "permission denied"


# --- API keys -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A backend's key to the server API; validated on construction (raises ``OptionError``)."""

    #: Shown in logs instead of the key.
    name: str
    #: The secret itself (never in repr).
    key: str = field(repr=False)
    #: What the key allows: some of :data:`SCOPES`, or "*" for all (any iterable of strings is frozen).
    scopes: frozenset[str]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise OptionError("name", "expected a non-empty string")
        if not isinstance(self.key, str) or not self.key:
            raise OptionError("key", "expected a non-empty string")
        scopes = self.scopes
        if not isinstance(scopes, (list, tuple, set, frozenset)) or not all(isinstance(scope, str) for scope in scopes):
            raise OptionError("scopes", "expected a list of strings")
        object.__setattr__(self, "scopes", frozenset(scopes))
        if not scopes:
            raise OptionError("scopes", f"expected at least one of {', '.join(SCOPES)}, {ALL_SCOPES}")
        for scope in sorted(self.scopes):
            if scope not in SCOPES and scope != ALL_SCOPES:
                raise OptionError("scopes", f"unknown scope {scope!r}: expected {', '.join(SCOPES)} or {ALL_SCOPES}")

    def allows(self, scope: str) -> bool:
        """Whether this key may be used for ``scope`` (one of :data:`SCOPES`)."""
        return ALL_SCOPES in self.scopes or scope in self.scopes


def find_api_key(keys: Iterable[ApiKey], presented: str) -> ApiKey | None:
    """The key whose secret is ``presented``, or None.

    Compares digests with ``hmac.compare_digest`` against every key, without
    stopping at a match, so timing reveals neither a key's bytes nor its length
    nor its position.
    """
    digest = _digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(digest, _digest(key.key)) and found is None:
            found = key
    return found


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
