"""realtime.backend.signing: what every request to the app's backend carries, and how a backend checks it."""

from __future__ import annotations

import hashlib
import hmac

from realtime.backend.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signature, verify

BODY = b'{"event":"channel.occupied","channel":"chat:1"}'
NOW = 1_764_680_000


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1764680000." + BODY, hashlib.sha256).hexdigest()
    assert signature(b"s3cret", NOW, BODY) == expected
    headers = sign([b"s3cret"], "evt-1", NOW, BODY)
    assert headers == {ID_HEADER: "evt-1", TIMESTAMP_HEADER: "1764680000", SIGNATURE_HEADER: "v1=" + expected}


def test_a_backend_accepts_what_was_signed_and_nothing_else() -> None:
    headers = sign([b"s3cret"], "evt-1", NOW, BODY)
    ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify([b"s3cret"], ts, sig, BODY, now=NOW + 10)
    assert not verify([b"other"], ts, sig, BODY, now=NOW)
    assert not verify([b"s3cret"], ts, sig, BODY + b" ", now=NOW)
    assert not verify([b"s3cret"], str(NOW + 1), sig, BODY, now=NOW)  # the timestamp is signed too
    assert not verify([b"s3cret"], ts, sig, BODY, now=NOW + 301)  # too old: a replay
    assert not verify([b"s3cret"], ts, sig, BODY, now=NOW - 301)
    assert not verify([b"s3cret"], "-1", sig, BODY, now=NOW)
    assert not verify([b"s3cret"], ts, "", BODY, now=NOW)
    assert not verify([b"s3cret"], ts, sig.replace("v1=", "v0="), BODY, now=NOW)


def test_secrets_rotate_one_entry_per_secret() -> None:
    headers = sign([b"new", b"old"], "evt-2", NOW, BODY)
    ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert sig.count("v1=") == 2
    assert verify([b"old"], ts, sig, BODY, now=NOW)  # a backend still on the old secret
    assert verify([b"new"], ts, sig, BODY, now=NOW)  # one already on the new one
    assert not verify([b"neither"], ts, sig, BODY, now=NOW)
