"""Revocations kept on disk, for the memory engine (``revocations_file``).

A revocation (``POST /api/revoke``) is a time per user, held by the engine's
key-value role (``Hub.revoke``, ``kv_set_max``: a later revoke never lowers an
earlier one). Redis keeps it across hub restarts; the memory engine forgets it
with the process, so with ``revocations_file`` set the hub also keeps every
revocation in that file: :meth:`RevocationFile.load` reads it at start (the hub
puts each time back into the engine) and :meth:`RevocationFile.record` rewrites
it after each revocation, before the API answers.

The file is JSON, ``{"revoked": {"<user>": <Unix seconds>, ...}}``, rewritten
whole: a temporary file in the same directory, flushed to disk, then renamed
over the old one (``os.replace``), so a crash leaves the old file or the new
one, never a part. It grows by one entry per revoked user; entries never
expire, since a token without ``iat`` stays refused for ever.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
from pathlib import Path

from protocol.errors import RealtimeError


class RevocationFileError(RealtimeError):
    """The revocations file cannot be read, parsed or written; the message is one line naming it."""


class RevocationFile:
    """The revocations of one hub, mirrored in ``path``; :meth:`load` once, then :meth:`record`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._times: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._dirty = False

    async def load(self) -> dict[str, float]:
        """The revocations in the file (user -> time); a missing file is created empty, so that
        a directory the hub cannot write to fails the start, not the first revocation."""
        self._times = await asyncio.to_thread(self._read)
        await asyncio.to_thread(self._write, dict(self._times))
        return dict(self._times)

    async def record(self, user: str, before: float) -> None:
        """Keep ``user``'s revocation time (the larger of ``before`` and the one kept); returns once
        the file on disk holds it. Concurrent calls share writes: each call's time is in the
        snapshot of a write that starts after the call, so N revocations cost at most N writes
        and usually far fewer."""
        self._times[user] = max(before, self._times.get(user, before))
        self._dirty = True
        async with self._lock:
            if self._dirty:  # else a write that began after our update has already stored it
                self._dirty = False
                try:
                    await asyncio.to_thread(self._write, dict(self._times))
                except BaseException:
                    self._dirty = True  # the calls waiting behind this one must try again
                    raise

    def _read(self) -> dict[str, float]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise RevocationFileError(f"cannot read revocations_file {self.path}: {_reason(exc)}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise RevocationFileError(f"invalid revocations_file {self.path}: not JSON") from None
        revoked = data.get("revoked") if isinstance(data, dict) else None
        if not isinstance(revoked, dict) or not all(_is_time(t) for t in revoked.values()):
            raise RevocationFileError(
                f'invalid revocations_file {self.path}: expected {{"revoked": {{user: Unix seconds}}}}'
            )
        return {user: float(t) for user, t in revoked.items()}

    def _write(self, times: dict[str, float]) -> None:
        body = json.dumps({"revoked": times}, ensure_ascii=False, sort_keys=True).encode()
        directory = self.path.parent
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            _fsync_directory(directory)  # the rename itself survives a power cut
        except OSError as exc:
            raise RevocationFileError(f"cannot write revocations_file {self.path}: {_reason(exc)}") from None


def _is_time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows): the rename is as durable as the platform makes it
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
