"""Tokens, channel permissions and API keys, on real JWTs signed with keys made here."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import msgpack  # type: ignore[import-untyped]  # no stubs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, RealtimeError
from realtime.auth import (
    ANONYMOUS,
    ApiKey,
    Identity,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    check_publish,
    check_subscribe,
    find_api_key,
    grant_matches,
    load_public_key,
)
from realtime.config import Settings
from realtime.namespaces import Namespace, OptionError, channel_users

NOW = 1_700_000_000.0
SECRET = "s" * 32


def pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def hs256_verifier(**kwargs: Any) -> TokenVerifier:
    return TokenVerifier(secret=SECRET, **kwargs)


def invalid(verify: Callable[[], object]) -> str:
    with pytest.raises(TokenInvalid) as info:
        verify()
    return str(info.value)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A token signed with HMAC-SHA256 over whatever header we like."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


# Connection tokens: algorithms and keys


def test_hs256_token() -> None:
    identity = hs256_verifier().verify_connection(hs256({"sub": "alice"}), now=NOW)
    assert identity == Identity("alice")
    assert not identity.anonymous


def test_rs256_token(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(public_key=pem(rsa_key))
    assert verifier.algorithms == ("RS256",)
    token = jwt.encode({"sub": "alice", "exp": NOW + 60}, rsa_key, algorithm="RS256")
    assert verifier.verify_connection(token, now=NOW) == Identity("alice", expires=NOW + 60)


def test_es256_token(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(public_key=pem(ec_key))
    assert verifier.algorithms == ("ES256",)
    token = jwt.encode({"sub": "bob", "iat": NOW - 5}, ec_key, algorithm="ES256")
    assert verifier.verify_connection(token, now=NOW) == Identity("bob", issued_at=NOW - 5)


def test_es384_key_gives_es384() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    verifier = TokenVerifier(public_key=pem(key))
    assert verifier.algorithms == ("ES384",)
    assert verifier.verify_connection(jwt.encode({"sub": "a"}, key, algorithm="ES384")).user == "a"


def test_secret_and_public_key_together(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(secret=SECRET, public_key=pem(ec_key))
    assert verifier.algorithms == ("HS256", "ES256")
    assert verifier.verify_connection(hs256({"sub": "a"})).user == "a"
    assert verifier.verify_connection(jwt.encode({"sub": "b"}, ec_key, algorithm="ES256")).user == "b"


def test_hs256_signed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    """The classic confusion attack: HS256 keyed with the (public) PEM text."""
    public = pem(rsa_key)
    token = forged({"alg": "HS256", "typ": "JWT"}, {"sub": "mallory"}, public.encode())
    assert invalid(lambda: TokenVerifier(public_key=public).verify_connection(token)) == "algorithm not allowed"
    both = TokenVerifier(secret=SECRET, public_key=public)
    assert invalid(lambda: both.verify_connection(token)) == "bad signature"


def test_none_algorithm_is_refused() -> None:
    token = jwt.encode({"sub": "mallory"}, "", algorithm="none")
    assert invalid(lambda: hs256_verifier().verify_connection(token)) == "algorithm not allowed"


def test_hs256_token_when_only_a_public_key_is_configured(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(public_key=pem(ec_key))
    assert invalid(lambda: verifier.verify_connection(hs256({"sub": "a"}))) == "algorithm not allowed"


def test_rs256_token_when_only_an_ec_key_is_configured(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = jwt.encode({"sub": "a"}, rsa_key, algorithm="RS256")
    assert invalid(lambda: TokenVerifier(public_key=pem(ec_key)).verify_connection(token)) == "algorithm not allowed"


def test_bad_signature(ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert invalid(lambda: hs256_verifier().verify_connection(hs256({"sub": "a"}, "x" * 32))) == "bad signature"
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"sub": "a"}, other, algorithm="ES256")
    assert invalid(lambda: TokenVerifier(public_key=pem(ec_key)).verify_connection(token)) == "bad signature"


def test_tampered_claims() -> None:
    header, _, signature = hs256({"sub": "alice"}).split(".")
    token = f"{header}.{b64(json.dumps({'sub': 'admin'}).encode())}.{signature}"
    assert invalid(lambda: hs256_verifier().verify_connection(token)) == "bad signature"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "....", "é.é.é"])
def test_malformed_token(token: str) -> None:
    assert invalid(lambda: hs256_verifier().verify_connection(token)) in ("malformed token", "algorithm not allowed")


def test_claims_that_are_not_an_object() -> None:
    token = forged({"alg": "HS256"}, [1, 2], SECRET.encode())  # type: ignore[arg-type]
    assert invalid(lambda: hs256_verifier().verify_connection(token)) == "malformed token"


def test_no_key_configured() -> None:
    assert invalid(lambda: TokenVerifier().verify_connection(hs256({"sub": "a"}))) == "no token key configured"


def test_message_never_echoes_the_token() -> None:
    token = hs256({"sub": "alice"}, "y" * 32)
    message = invalid(lambda: hs256_verifier().verify_connection(token))
    assert token not in message and "alice" not in message


def test_errors_map_to_codes() -> None:
    assert issubclass(TokenInvalid, RealtimeError) and issubclass(TokenExpired, RealtimeError)
    assert (TokenInvalid.code, TokenInvalid.close_code) == (ErrorCode.UNAUTHORIZED, CloseCode.UNAUTHORIZED)
    assert (TokenExpired.code, TokenExpired.close_code) == (ErrorCode.TOKEN_EXPIRED, CloseCode.TOKEN_EXPIRED)


# Connection tokens: claims


def test_expired() -> None:
    token = hs256({"sub": "a", "exp": NOW})
    with pytest.raises(TokenExpired, match="token expired"):
        hs256_verifier().verify_connection(token, now=NOW)
    assert hs256_verifier().verify_connection(token, now=NOW - 0.5).expires == NOW


def test_without_exp_never_expires() -> None:
    assert hs256_verifier().verify_connection(hs256({"sub": "a"}), now=1e12).expires is None


def test_expired_with_the_real_clock() -> None:
    with pytest.raises(TokenExpired):
        hs256_verifier().verify_connection(hs256({"sub": "a", "exp": 1000}))


def test_iat_in_the_future_is_accepted() -> None:
    """No leeway, so a slightly fast issuer clock must not break every token."""
    assert hs256_verifier().verify_connection(hs256({"sub": "a", "iat": NOW + 5}), now=NOW).issued_at == NOW + 5


def test_not_before() -> None:
    token = hs256({"sub": "a", "nbf": NOW + 10})
    assert invalid(lambda: hs256_verifier().verify_connection(token, now=NOW)) == "token not valid yet"
    assert hs256_verifier().verify_connection(token, now=NOW + 10).user == "a"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, "missing claim sub"),
        ({"sub": None}, "missing claim sub"),
        ({"sub": ""}, "sub must not be empty"),
        ({"sub": 42}, "sub must be a string"),
        ({"sub": "a", "exp": "tomorrow"}, "exp must be a number"),
        ({"sub": "a", "exp": True}, "exp must be a number"),
        ({"sub": "a", "exp": 10**400}, "exp must be a number"),
        ({"sub": "a", "iat": [1]}, "iat must be a number"),
        ({"sub": "a", "nbf": "now"}, "nbf must be a number"),
        ({"sub": "a", "channels": "live:*"}, "channels must be a list of strings"),
        ({"sub": "a", "channels": ["ok", 1]}, "channels must be a list of strings"),
        ({"sub": "a", "info": 2**70}, "info claim cannot be packed"),
    ],
)
def test_bad_claims(claims: dict[str, Any], reason: str) -> None:
    token = forged({"alg": "HS256", "typ": "JWT"}, claims, SECRET.encode())
    assert invalid(lambda: hs256_verifier().verify_connection(token, now=NOW)) == reason


def test_info_claim_is_packed_to_msgpack() -> None:
    info = {"name": "Alice", "tags": ["a", 1, 2.5, True, None]}
    identity = hs256_verifier().verify_connection(hs256({"sub": "a", "info": info}))
    assert identity.info is not None
    assert msgpack.unpackb(identity.info) == info


@pytest.mark.parametrize("info", ["text", 7, [], False])
def test_info_may_be_any_json_value(info: object) -> None:
    identity = hs256_verifier().verify_connection(hs256({"sub": "a", "info": info}))
    assert identity.info is not None and msgpack.unpackb(identity.info) == info


def test_without_info() -> None:
    assert hs256_verifier().verify_connection(hs256({"sub": "a", "info": None})).info is None


def test_channels_claim() -> None:
    identity = hs256_verifier().verify_connection(hs256({"sub": "a", "channels": ["news", "live:*"]}))
    assert identity.channels == ("news", "live:*")


def test_audience() -> None:
    verifier = hs256_verifier(audience="hub")
    assert verifier.verify_connection(hs256({"sub": "a", "aud": "hub"})).user == "a"
    assert verifier.verify_connection(hs256({"sub": "a", "aud": ["web", "hub"]})).user == "a"
    assert invalid(lambda: verifier.verify_connection(hs256({"sub": "a", "aud": "web"}))) == "wrong audience"
    assert invalid(lambda: verifier.verify_connection(hs256({"sub": "a"}))) == "missing claim aud"
    subscription = {"sub": "a", "channel": "c"}
    assert invalid(lambda: verifier.verify_subscription(hs256(subscription), user="a", channel="c")) == (
        "missing claim aud"
    )
    wrong = hs256({**subscription, "aud": "web"})
    assert invalid(lambda: verifier.verify_subscription(wrong, user="a", channel="c")) == "wrong audience"


@pytest.mark.parametrize("aud", ["hub", ["web", "hub"], 7])
def test_audience_in_token_but_not_configured(aud: object) -> None:
    """No token_audience: aud is not checked (every identity provider's tokens carry one)."""
    verifier = hs256_verifier()
    assert verifier.verify_connection(hs256({"sub": "a", "aud": aud})).user == "a"
    verifier.verify_subscription(hs256({"sub": "a", "channel": "c", "aud": aud}), user="a", channel="c")  # no raise


def test_issuer() -> None:
    verifier = hs256_verifier(issuer="https://auth.example")
    assert verifier.verify_connection(hs256({"sub": "a", "iss": "https://auth.example"})).user == "a"
    assert invalid(lambda: verifier.verify_connection(hs256({"sub": "a", "iss": "evil"}))) == "wrong issuer"
    assert invalid(lambda: verifier.verify_connection(hs256({"sub": "a"}))) == "missing claim iss"
    # Without a configured issuer, any iss is accepted.
    assert hs256_verifier().verify_connection(hs256({"sub": "a", "iss": "evil"})).user == "a"


# Anonymous connections


@pytest.mark.parametrize("token", [None, ""])
def test_anonymous_allowed(token: str | None) -> None:
    identity = hs256_verifier(allow_anonymous=True).verify_connection(token)
    assert identity is ANONYMOUS
    assert identity == Identity("") and identity.anonymous


def test_anonymous_allowed_without_any_key() -> None:
    assert TokenVerifier(allow_anonymous=True).verify_connection(None) is ANONYMOUS


@pytest.mark.parametrize("token", [None, ""])
def test_anonymous_refused(token: str | None) -> None:
    assert invalid(lambda: hs256_verifier().verify_connection(token)) == "token required"


def test_bad_token_is_refused_even_when_anonymous_is_allowed() -> None:
    verifier = hs256_verifier(allow_anonymous=True)
    assert invalid(lambda: verifier.verify_connection(hs256({"sub": "a"}, "z" * 32))) == "bad signature"


# Building a verifier


def test_from_settings(ec_key: ec.EllipticCurvePrivateKey) -> None:
    settings = Settings(
        token_secret=SECRET, token_public_key=pem(ec_key), token_audience="hub", token_issuer="me", allow_anonymous=True
    )
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.algorithms == ("HS256", "ES256")
    assert (verifier.audience, verifier.issuer, verifier.allow_anonymous) == ("hub", "me", True)
    assert verifier.verify_connection(hs256({"sub": "a", "aud": "hub", "iss": "me"})).user == "a"


def test_from_default_settings() -> None:
    verifier = TokenVerifier.from_settings(Settings())
    assert verifier.algorithms == ()
    assert invalid(lambda: verifier.verify_connection(None)) == "token required"


def test_short_secret() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(secret="s" * 31)


def test_unusable_public_keys() -> None:
    with pytest.raises(ValueError, match="expected a PEM public key"):
        load_public_key("not a key")
    with pytest.raises(ValueError, match="expected an RSA key of at least 2048 bits, got 1024"):
        load_public_key(pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    with pytest.raises(ValueError, match="expected an EC key on P-256, P-384 or P-521, got secp256k1"):
        load_public_key(pem(ec.generate_private_key(ec.SECP256K1())))
    with pytest.raises(ValueError, match="expected an RSA or EC public key"):
        load_public_key(pem(ed25519.Ed25519PrivateKey.generate()))


# Subscription tokens


def sub_token(claims: dict[str, Any]) -> str:
    return hs256({"sub": "alice", "channel": "vip:room", **claims})


def test_subscription_token() -> None:
    hs256_verifier().verify_subscription(sub_token({"exp": NOW + 1}), user="alice", channel="vip:room", now=NOW)


def test_subscription_token_for_another_channel() -> None:
    verify = lambda: hs256_verifier().verify_subscription(sub_token({}), user="alice", channel="vip:other")  # noqa: E731
    assert invalid(verify) == "token is for another channel"


def test_subscription_token_for_another_user() -> None:
    verify = lambda: hs256_verifier().verify_subscription(sub_token({}), user="bob", channel="vip:room")  # noqa: E731
    assert invalid(verify) == "token is for another user"


def test_subscription_token_expired() -> None:
    with pytest.raises(TokenExpired):
        hs256_verifier().verify_subscription(sub_token({"exp": NOW}), user="alice", channel="vip:room", now=NOW)


def test_subscription_token_without_channel() -> None:
    token = hs256({"sub": "alice"})  # a connection token
    verify = lambda: hs256_verifier().verify_subscription(token, user="alice", channel="vip:room")  # noqa: E731
    assert invalid(verify) == "missing claim channel"


def test_subscription_token_for_an_anonymous_connection() -> None:
    token = sub_token({"sub": ""})
    hs256_verifier().verify_subscription(token, user="", channel="vip:room")
    verify = lambda: hs256_verifier().verify_subscription(token, user="alice", channel="vip:room")  # noqa: E731
    assert invalid(verify) == "token is for another user"


def test_a_subscription_token_cannot_connect() -> None:
    """The ``channel`` claim marks a subscription token: it never stands in for a connection token
    (nor on refresh, which verifies the same way)."""
    verifier = hs256_verifier()
    assert invalid(lambda: verifier.verify_connection(sub_token({}), now=NOW)) == "a subscription token cannot connect"
    marked = hs256({"sub": "alice", "channel": None, "channels": ["vip:*"]})
    assert invalid(lambda: verifier.verify_connection(marked, now=NOW)) == "a subscription token cannot connect"


def test_a_connection_token_cannot_subscribe() -> None:
    """The reverse: a connection token, grants and all, has no ``channel``, so it is no subscription token."""
    token = hs256({"sub": "alice", "channels": ["vip:room"], "iat": NOW})
    assert hs256_verifier().verify_connection(token, now=NOW).user == "alice"
    verify = lambda: hs256_verifier().verify_subscription(token, user="alice", channel="vip:room")  # noqa: E731
    assert invalid(verify) == "missing claim channel"


# User ids


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("carol,eve", "it contains ',', the separator of users in channel names"),
        (",", "it contains ',', the separator of users in channel names"),
        ("carol eve", "it contains a character channel names forbid"),
        ("carol\u2028", "it contains a character channel names forbid"),
        ("carol\u200b", "it contains a character channel names forbid"),
        ("carol\x00", "it contains a character channel names forbid"),
        ("x" * 255, "longer than 254 characters"),
    ],
)
def test_user_ids_no_channel_can_name_are_refused(user: str, reason: str) -> None:
    token = hs256({"sub": user})
    assert (
        invalid(lambda: hs256_verifier().verify_connection(token, now=NOW)) == f"sub is not a usable user id: {reason}"
    )


@pytest.mark.parametrize("user", ["x" * 254, "a#b", "a:b", "émile", "user@example.com", "[a]*?"])
def test_user_ids_that_fit_a_channel_name_are_accepted(user: str) -> None:
    assert hs256_verifier().verify_connection(hs256({"sub": user}), now=NOW).user == user
    assert Identity(user).user in (channel_users(f"user:#{user}") or ())


# Subscribe rules

ALICE = Identity("alice")
BOB = Identity("bob")


def refused(check: Callable[[], None], code: ErrorCode = ErrorCode.PERMISSION_DENIED) -> str:
    with pytest.raises(CommandError) as info:
        check()
    assert info.value.code == code
    return info.value.message


def subscribe(identity: Identity, channel: str, ns: Namespace, token: str | None = None) -> None:
    check_subscribe(identity, channel, ns, token, hs256_verifier(), now=NOW)


def test_subscribe_anyone() -> None:
    ns = Namespace(subscribe="anyone")
    subscribe(ANONYMOUS, "news", ns)
    subscribe(ALICE, "news", ns)


def test_subscribe_authenticated() -> None:
    ns = Namespace()
    subscribe(ALICE, "news", ns)
    assert refused(lambda: subscribe(ANONYMOUS, "news", ns)) == "anonymous connections are not allowed here"


def test_subscribe_user() -> None:
    ns = Namespace("user", subscribe="user")
    subscribe(ALICE, "user:#alice", ns)
    assert refused(lambda: subscribe(BOB, "user:#alice", ns)) == "channel of other users"
    refused(lambda: subscribe(ANONYMOUS, "user:#alice", ns))
    refused(lambda: subscribe(ALICE, "user:alice", ns))  # no '#'
    refused(lambda: subscribe(ANONYMOUS, "user:#", ns))


def test_subscribe_user_list() -> None:
    ns = Namespace("dm", subscribe="user")
    subscribe(ALICE, "dm:#alice,bob", ns)
    subscribe(BOB, "dm:#alice,bob", ns)
    refused(lambda: subscribe(Identity("carol"), "dm:#alice,bob", ns))
    refused(lambda: subscribe(Identity("ali"), "dm:#alice,bob", ns))
    refused(lambda: subscribe(ANONYMOUS, "dm:#alice,,bob", ns))


def test_subscribe_token() -> None:
    ns = Namespace("vip", subscribe="token")
    subscribe(ALICE, "vip:room", ns, sub_token({}))
    assert refused(lambda: subscribe(ALICE, "vip:room", ns)) == "subscription token required"
    assert refused(lambda: subscribe(ALICE, "vip:room", ns, "")) == "subscription token required"
    message = refused(lambda: subscribe(ALICE, "vip:other", ns, sub_token({})))
    assert message == "invalid subscription token: token is for another channel"
    refused(lambda: subscribe(BOB, "vip:room", ns, sub_token({})))
    refused(lambda: subscribe(ALICE, "vip:room", ns, "garbage"))
    expired = sub_token({"exp": NOW - 1})
    assert refused(lambda: subscribe(ALICE, "vip:room", ns, expired), ErrorCode.TOKEN_EXPIRED) == (
        "subscription token expired"
    )


def test_subscription_token_is_ignored_elsewhere() -> None:
    subscribe(ALICE, "news", Namespace(), "garbage")
    refused(lambda: subscribe(ANONYMOUS, "news", Namespace(), sub_token({"sub": ""})))


@pytest.mark.parametrize("rule", ["user", "token"])
def test_grants_allow_regardless_of_the_rule(rule: Any) -> None:
    ns = Namespace("live", subscribe=rule)
    granted = Identity("carol", channels=("news", "live:*"))
    subscribe(granted, "live:scores", ns)
    subscribe(granted, "live:#alice", ns)
    refused(lambda: subscribe(Identity("carol", channels=("live:a",)), "live:b", ns))


def test_grant_patterns() -> None:
    """Grants are exact names, or a prefix and a trailing "*"; nothing else is special."""
    identity = Identity("carol", channels=("news", "live:*"))
    assert identity.grants("news")
    assert not identity.grants("news2")
    assert identity.grants("live:scores") and identity.grants("live:")
    assert not identity.grants("LIVE:scores")  # case-sensitive
    assert not identity.grants("live")
    assert Identity("carol", channels=("*",)).grants("anything:at#all")


@pytest.mark.parametrize(
    ("grant", "literal", "not_granted"),
    [
        ("files:q?", "files:q?", ["files:qX", "files:q"]),  # ? is not "any one character"
        ("report[1]", "report[1]", ["report1"]),  # [seq] is not a set, and the name grants itself
        ("room:[ab]", "room:[ab]", ["room:a", "room:b"]),
        ("room:[!a]", "room:[!a]", ["room:b", "room:!"]),  # [!seq] is not a negated set
        ("a*b", "a*b", ["aXb", "ab"]),  # * before the end is literal
        ("live:**", "live:*x", ["live:x", "live:"]),  # only the last * is special: the prefix is "live:*"
    ],
)
def test_grant_metacharacters_are_literal(grant: str, literal: str, not_granted: list[str]) -> None:
    identity = Identity("carol", channels=(grant,))
    assert identity.grants(literal)
    for channel in not_granted:
        assert not identity.grants(channel), channel
    assert grant_matches(grant, literal)


def test_grants_never_apply_to_anonymous_identities() -> None:
    anonymous = Identity("", channels=("*",))
    assert not anonymous.grants("news")
    refused(lambda: subscribe(anonymous, "news", Namespace()))


# Publish rule


def test_publish_server_only() -> None:
    ns = Namespace(subscribe="anyone", publish="server")
    assert refused(lambda: check_publish(ALICE, "news", ns)) == "only the server publishes here"
    refused(lambda: check_publish(Identity("a", channels=("*",)), "news", ns))
    refused(lambda: check_publish(ALICE, "news", ns, subscribed=True))


def test_publish_clients() -> None:
    check_publish(ANONYMOUS, "news", Namespace(subscribe="anyone", publish="clients"))
    check_publish(ALICE, "news", Namespace(publish="clients"))
    refused(lambda: check_publish(ANONYMOUS, "news", Namespace(publish="clients")))


def test_publish_clients_who_may_subscribe() -> None:
    ns = Namespace("dm", subscribe="user", publish="clients")
    check_publish(ALICE, "dm:#alice,bob", ns)
    assert refused(lambda: check_publish(Identity("carol"), "dm:#alice,bob", ns)) == "channel of other users"
    check_publish(Identity("carol", channels=("dm:*",)), "dm:#alice,bob", ns)


def test_publish_on_token_namespaces_needs_a_subscription_or_grant() -> None:
    ns = Namespace("vip", subscribe="token", publish="clients")
    assert refused(lambda: check_publish(ALICE, "vip:room", ns)) == "subscribe first"
    check_publish(ALICE, "vip:room", ns, subscribed=True)
    check_publish(Identity("carol", channels=("vip:room",)), "vip:room", ns)


# API keys

KEYS = (
    ApiKey("backend", "k-backend-0123456789", frozenset({"publish", "history"})),
    ApiKey("admin", "k-admin-0123456789", frozenset({"*"})),
)


def test_find_api_key() -> None:
    assert find_api_key(KEYS, "k-backend-0123456789") is KEYS[0]
    assert find_api_key(KEYS, "k-admin-0123456789") is KEYS[1]
    assert find_api_key(KEYS, "k-admin-012345678") is None
    assert find_api_key(KEYS, "") is None
    assert find_api_key(KEYS, "\udcff") is None  # undecodable text does not raise
    assert find_api_key((), "k-admin-0123456789") is None


def test_scopes() -> None:
    backend, admin = KEYS
    assert backend.allows("publish") and backend.allows("history")
    assert not backend.allows("users") and not backend.allows("state")
    assert all(admin.allows(scope) for scope in ("publish", "history", "presence", "state", "users"))


def test_api_key_repr_hides_the_key() -> None:
    assert "k-backend" not in repr(KEYS[0])
    assert "backend" in repr(KEYS[0])


def test_api_key_scopes_are_frozen() -> None:
    key = ApiKey("a", "k", ["publish"])  # type: ignore[arg-type]
    assert key.scopes == frozenset({"publish"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.key = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "key", "scopes", "option", "reason"),
    [
        ("", "k", ["*"], "name", "expected a non-empty string"),
        (1, "k", ["*"], "name", "expected a non-empty string"),
        ("a", "", ["*"], "key", "expected a non-empty string"),
        ("a", None, ["*"], "key", "expected a non-empty string"),
        ("a", "k", [], "scopes", "expected at least one of publish, history, presence, state, users, metrics, *"),
        ("a", "k", "*", "scopes", "expected a list of strings"),
        ("a", "k", [1], "scopes", "expected a list of strings"),
        (
            "a",
            "k",
            ["publsh"],
            "scopes",
            "unknown scope 'publsh': expected publish, history, presence, state, users, metrics or *",
        ),
    ],
)
def test_invalid_api_keys(name: Any, key: Any, scopes: Any, option: str, reason: str) -> None:
    with pytest.raises(OptionError) as info:
        ApiKey(name, key, scopes)
    assert (info.value.option, info.value.reason) == (option, reason)
