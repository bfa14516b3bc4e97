"""The Python blocks of docs/sdks.md run as they stand against a quick-start hub."""

from __future__ import annotations

import pytest

from realtime.client import Client

from .helpers import RunningHub
from .test_doc_blocks import hub, python_blocks, run_block

__all__ = ["hub"]  # the quick-start hub fixture

BLOCKS = python_blocks("docs/sdks.md")
EXPECTED = [["hi True"], ["one 1", "1"], ["True", "refused: 107"]]


def test_every_block_is_checked() -> None:
    assert len(BLOCKS) == len(EXPECTED)


@pytest.mark.parametrize(("block", "expected"), list(zip(BLOCKS, EXPECTED, strict=True)))
async def test_sdks_block(hub: RunningHub, block: str, expected: list[str]) -> None:
    out = await run_block(block, {"Client": Client, "url": hub.url})
    assert out.splitlines() == expected
