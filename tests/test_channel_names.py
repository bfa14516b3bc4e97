"""Channel names follow the protocol's own rule (docs/protocol.md), the same on every Python version.

The rule is a fixed list of refused code points; nothing depends on the Unicode tables of the
Python that runs it (``str.isprintable`` and ``unicodedata`` differ between versions).
"""

from __future__ import annotations

import inspect
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from protocol import fields
from protocol.codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.fields import CHANNEL_FORBIDDEN, check_channel
from protocol.limits import MAX_CHANNEL_LENGTH
from protocol.messages import Subscribe

from .helpers import RunningHub
from .wsclient import RawClient

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()

ACCEPTED = {
    "private use (BMP)": "\ue000",
    "private use (last BMP)": "\uf8ff",
    "private use (plane 15)": "\U000f0000",
    "private use (plane 16, last)": "\U0010fffd",
    "unassigned (Greek block)": "\u0378",
    "unassigned (plane 3)": "\U0003fffd",
    "unassigned (plane 14, after the tags)": "\U000e0080",
    "emoji 15.0 shaking face": "\U0001fae8",
    "emoji 15.0 moose": "\U0001face",
    "emoji 15.0 wireless": "\U0001f6dc",
    "emoji 16.0 face with bags under eyes": "\U0001fae9",
    "emoji 16.0 harp": "\U0001fa89",
    "emoji 15.1 phoenix (a ZWJ sequence)": "\U0001f426\u200d\U0001f525",
    "emoji flag of England (tag sequence)": "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "zero-width non-joiner (Persian)": "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    "variation selector": "\u2764\ufe0f",
    "noncharacter": "\ufffe",
    "CJK": "頻道",
    "ASCII punctuation": "chat:lobby#42/fr",
}


@pytest.mark.parametrize("name", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_private_use_unassigned_and_recent_emoji_are_accepted(name: str) -> None:
    assert check_channel("room:" + name) == "room:" + name
    assert check_channel(name) == name


def test_some_accepted_names_were_refused_by_this_python_s_tables() -> None:
    """Why the rule cannot be ``isprintable``: it refuses private-use and (here) newer code points."""
    assert not "\ue000".isprintable()
    if sys.version_info < (3, 14):  # Python 3.14 is the first with Unicode 16.0 (U+1FAE9)
        assert not "\U0001fae9".isprintable()


REFUSED_SAMPLES = [chr(c) for c in (*range(0x20), 0x20, 0x7F, *range(0x80, 0xA1))] + [
    "\u00ad",
    "\u061c",
    "\u1680",
    "\u180e",
    "\u2000",
    "\u200a",
    "\u200b",
    "\u200e",
    "\u200f",
    "\u2028",
    "\u2029",
    "\u202a",
    "\u202e",
    "\u202f",
    "\u205f",
    "\u2060",
    "\u2066",
    "\u2069",
    "\u3000",
    "\ud800",
    "\udfff",
    "\ufeff",
    "\ufff9",
    "\ufffb",
]


@pytest.mark.parametrize("char", REFUSED_SAMPLES, ids=lambda c: f"U+{ord(c):04X}")
def test_controls_whitespace_surrogates_and_the_listed_format_characters_are_refused(char: str) -> None:
    for name in (char, f"a{char}b", f"ab{char}"):
        with pytest.raises(ProtocolError) as info:
            check_channel(name, "subscribe.channel", 7)
        assert info.value.code == ErrorCode.BAD_REQUEST and info.value.id == 7
        assert str(info.value) == "subscribe.channel must not contain whitespace or control characters"


def refused(code_point: int) -> bool:
    try:
        check_channel(chr(code_point))
    except ProtocolError:
        return True
    return False


def test_the_rule_is_exactly_the_list_over_all_of_unicode() -> None:
    listed = {c for lo, hi in CHANNEL_FORBIDDEN for c in range(lo, hi + 1)}
    assert {c for c in range(sys.maxunicode + 1) if refused(c)} == listed


def test_every_control_and_whitespace_of_this_python_is_in_the_list() -> None:
    """The list covers what this Python's tables call controls, separators and whitespace."""
    listed = {c for lo, hi in CHANNEL_FORBIDDEN for c in range(lo, hi + 1)}
    for c in range(sys.maxunicode + 1):
        if unicodedata.category(chr(c)) in ("Cc", "Cs", "Zs", "Zl", "Zp") or chr(c).isspace():
            assert c in listed, f"U+{c:04X}"


def test_the_documented_list_is_the_code_s() -> None:
    section = DOC[DOC.index("**Channel names**") :]
    section = section[: section.index("\n\n", section.index("| refused code points"))]
    documented = []
    for row in re.findall(r"^\| (U\+[0-9A-F]{4,6}(?:\u2013U\+[0-9A-F]{4,6})?) \|", section, re.M):
        lo, _, hi = row.partition("\u2013")
        documented.append((int(lo[2:], 16), int((hi or lo)[2:], 16)))
    assert tuple(documented) == CHANNEL_FORBIDDEN


def test_no_unicode_database_is_consulted() -> None:
    source = inspect.getsource(fields)
    assert "unicodedata" not in source and "isprintable" not in source


def test_length_is_counted_in_code_points() -> None:
    emoji = "\U0001fae8"  # 4 bytes in UTF-8, 2 UTF-16 units, one code point
    assert check_channel(emoji * MAX_CHANNEL_LENGTH) == emoji * MAX_CHANNEL_LENGTH
    with pytest.raises(ProtocolError, match="longer than 255"):
        check_channel(emoji * (MAX_CHANNEL_LENGTH + 1))


async def test_a_hub_subscribes_and_publishes_on_such_channels(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as client:
        for name in ("\ue000", "\U0001fae9", "\u0378", "\U0001f426\u200d\U0001f525"):
            await client.subscribe(name)
            await client.publish(name, "hi")
            assert (await client.publication()).channel == name
        reply = await client.command(Subscribe(0, "a\u2066b"))
        assert reply.error is not None and reply.error.code == ErrorCode.BAD_REQUEST
