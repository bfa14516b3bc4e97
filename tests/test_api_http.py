"""The HTTP side of the server API with real sockets: compressed bodies, refusals that leave a body
unread, malformed requests, and what reaches the log.

A refusal before the body is read (401, 403, 413 by Content-Length, 415) closes the connection and
leaves the body unread; a compressed body is expanded only after authentication, a piece at a
time, and only up to the body limit: a gzip bomb costs the hub next to nothing, key or no key, and
``/healthz`` keeps answering. Latencies are printed (``pytest -s``) and asserted with a wide margin.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import io
import logging
import socket
import statistics
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest

from protocol.codes import ErrorCode
from realtime.api import API, ENCODINGS, INFLATE_CHUNK

from .helpers import HubFactory, RunningHub, until
from .test_api import ALL, MAX_FRAME, NAMESPACES, PUBLISH_ONLY, assert_error, auth

#: The body limit of the ``api`` hub (max_frame_size is small: MAX_BODY holds).
LIMIT = 1024 * 1024
#: What /healthz must answer within while a bomb is sent (docs/guide.md); asserted on the median
#: probe, the worst probe within WORST (a loaded 2-core machine).
HEALTHZ_BOUND = 0.1
WORST = 1.0
PUBLISH = orjson.dumps({"channel": "news", "data": 1})


@pytest.fixture
async def api(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(api_keys=(ALL, PUBLISH_ONLY), namespaces=NAMESPACES, max_frame_size=MAX_FRAME)


@functools.cache
def gzip_bomb(mib: int = 1024) -> bytes:
    """About 1 KiB of gzip per MiB of zeros: 1 MiB of gzip expanding to 1 GiB by default.

    Cheap to make: after a full flush deflate starts afresh, so each MiB of zeros compresses to the
    same block, made once and repeated; only the CRC is computed over the whole (a fraction of a second).
    """
    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * mib + deflate.flush() + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


def test_the_bomb_is_what_it_claims() -> None:
    assert gzip.decompress(gzip_bomb(3)) == bytes(3 << 20)
    bomb = gzip_bomb()
    assert len(bomb) < 1.1 * LIMIT
    start = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bomb[:8192])
    assert len(start) > 4 << 20 and not start.strip(b"\x00")  # and on, up to 1 GiB


# --- a raw HTTP client ------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    #: The server closed the connection after the answer (EOF or reset).
    closed: bool
    #: Body bytes the client managed to hand to its kernel before it stopped.
    sent: int = 0

    def json(self) -> dict[str, object]:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        decoded = orjson.loads(self.body)
        assert isinstance(decoded, dict)
        return decoded


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 16384) -> Iterable[bytes]:
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def pieces(body: bytes, size: int = 16384) -> Iterable[bytes]:
    return (body[i : i + size] for i in range(0, len(body), size))


async def raw_exchange(port: int, head: bytes, body: Iterable[bytes] = (), *, timeout: float = 10) -> Answer:
    """Send ``head`` then ``body`` (stopping if the server closes), read the answer, and see whether
    the server closes the connection after it. Plain non-blocking socket calls: unlike a stream
    reader, ``recv`` returns an answer that arrived before a reset."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sent = 0

    async def send() -> None:
        nonlocal sent
        try:
            await loop.sock_sendall(sock, head)
            for chunk in body:
                await loop.sock_sendall(sock, chunk)
                sent += len(chunk)
        except OSError:  # the server closed the connection: the rest stays unsent
            pass

    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            sender = asyncio.create_task(send())
            data = b""
            while b"\r\n\r\n" not in data:
                got = await loop.sock_recv(sock, 65536)
                assert got, f"closed without an answer: {data!r}"
                data += got
            raw_head, _, rest = data.partition(b"\r\n\r\n")
            status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                got = await loop.sock_recv(sock, 65536)
                assert got, "closed in the middle of the answer"
                rest += got
            closed = False
            try:
                async with asyncio.timeout(2):
                    while await loop.sock_recv(sock, 65536):
                        pass
                closed = True
            except ConnectionError:
                closed = True
            except TimeoutError:
                pass
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            return Answer(int(status_line.split()[1]), headers, rest[:length], closed, sent)
    finally:
        sock.close()


@dataclass
class Probes:
    """/healthz asked every few milliseconds; each answer's latency."""

    latencies: list[float] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.latencies)

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    def check(self, label: str) -> None:
        print(
            f"\n{label}: /healthz {len(self.latencies)} probes, median {self.median * 1000:.1f} ms, "
            f"worst {self.worst * 1000:.1f} ms"
        )
        assert self.median < HEALTHZ_BOUND and self.worst < WORST, self.latencies


async def probe_healthz(hub: RunningHub, probes: Probes, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set() or len(probes.latencies) < 5:
            started = time.perf_counter()
            async with session.get(hub.http_url + "/healthz") as r:
                assert r.status == 200
                await r.read()
            probes.latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)


@dataclass
class Run:
    answers: list[Answer]
    during: Probes
    after: Probes
    cpu: float
    elapsed: float


async def bomb_run(hub: RunningHub, head: bytes, body: list[bytes], copies: int = 1) -> Run:
    """Send ``copies`` of a request at once while probing /healthz, then probe it again."""
    during, after, stop = Probes(), Probes(), asyncio.Event()
    prober = asyncio.create_task(probe_healthz(hub, during, stop))
    await asyncio.sleep(0.05)
    cpu, started = time.process_time(), time.perf_counter()
    try:
        answers = await asyncio.gather(*(raw_exchange(hub.port, head, body) for _ in range(copies)))
    finally:
        stop.set()
        await prober
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
    stop = asyncio.Event()
    stop.set()
    await probe_healthz(hub, after, stop)
    return Run(list(answers), during, after, cpu, elapsed)


def report(label: str, run: Run) -> None:
    sent = ", ".join(f"{a.sent} B" for a in run.answers)
    print(f"\n{label}: {run.elapsed * 1000:.0f} ms, process CPU {run.cpu * 1000:.0f} ms, body sent {sent}")
    run.during.check(label + ", while sent")
    run.after.check(label + ", after")


# --- compressed bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("copies", [1, 4])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_gzip_bomb_without_a_key_is_refused_unread(api: RunningHub, copies: int, framing: str) -> None:
    bomb = gzip_bomb()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    if framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        body = list(chunked(bomb))
    else:
        headers["Content-Length"] = str(len(bomb))
        body = list(pieces(bomb))
    run = await bomb_run(api, request_head("POST", "/api/publish", headers), body, copies)
    report(f"bomb without a key x{copies} ({framing})", run)
    for answer in run.answers:
        assert_error(answer.status, answer.json(), 401, ErrorCode.UNAUTHORIZED)
        assert answer.headers["connection"] == "close" and answer.closed


async def test_a_gzip_bomb_with_a_key_is_413_at_the_limit(api: RunningHub) -> None:
    """Chunked, so no Content-Length refuses it first: it is expanded up to the limit, and no further."""
    headers = {**auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    head = request_head("POST", "/api/publish", {**headers, "Transfer-Encoding": "chunked"})
    run = await bomb_run(api, head, list(chunked(gzip_bomb())))
    report("bomb with a key (chunked)", run)
    (answer,) = run.answers
    body = answer.json()
    assert_error(answer.status, body, 413, ErrorCode.LIMIT_EXCEEDED)
    assert body["message"] == f"request body larger than {LIMIT} bytes once decompressed"
    assert answer.headers["connection"] == "close" and answer.closed
    # With its Content-Length (over the limit): 413 before a byte is read.
    bomb = gzip_bomb()
    head = request_head("POST", "/api/publish", {**headers, "Content-Length": str(len(bomb))})
    answer = await raw_exchange(api.port, head, pieces(bomb))
    assert_error(answer.status, answer.json(), 413, ErrorCode.LIMIT_EXCEEDED)
    assert answer.closed


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZIP", lambda raw: gzip.compress(raw[:10]) + gzip.compress(raw[10:])),  # two gzip members
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", lambda raw: zlib.compress(raw, wbits=-zlib.MAX_WBITS)),  # raw deflate, as some clients send
        ("identity", lambda raw: raw),
        ("gzip, identity", gzip.compress),
    ],
)
async def test_accepted_encodings(api: RunningHub, encoding: str, compress: Callable[[bytes], bytes]) -> None:
    body = compress(PUBLISH)
    headers = {**auth(), "Content-Type": "application/json", "Content-Encoding": encoding}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(api.http_url + "/api/publish", data=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["offset"] >= 1


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip", "gzip, br"])
async def test_other_encodings_are_415(api: RunningHub, encoding: str) -> None:
    body = b"x" * (4 * LIMIT)  # larger than the limit: refused for its encoding before its length
    head = request_head(
        "POST",
        "/api/publish",
        {**auth(), "Content-Type": "application/json", "Content-Encoding": encoding, "Content-Length": str(len(body))},
    )
    answer = await raw_exchange(api.port, head, pieces(body))
    assert_error(answer.status, answer.json(), 415, ErrorCode.BAD_REQUEST)
    assert answer.headers["accept-encoding"] == ", ".join(ENCODINGS) == "gzip, deflate"
    assert answer.closed  # refused before reading: the body is left unread


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        ("gzip", b"not compressed"),
        ("gzip", gzip.compress(PUBLISH)[:-12]),  # truncated
        ("gzip", gzip.compress(PUBLISH) + b"junk"),
        ("deflate", zlib.compress(PUBLISH) + b"junk"),
        ("deflate", b"\x78\x9c\xff\xff\xff"),
    ],
)
async def test_a_corrupt_compressed_body_is_a_400_logged_in_one_line(
    api: RunningHub, caplog: pytest.LogCaptureFixture, encoding: str, raw: bytes
) -> None:
    caplog.set_level(logging.INFO)
    head = request_head(
        "POST",
        "/api/publish",
        {**auth(), "Content-Type": "application/json", "Content-Encoding": encoding, "Content-Length": str(len(raw))},
    )
    answer = await raw_exchange(api.port, head, [raw])
    assert_error(answer.status, answer.json(), 400, ErrorCode.BAD_REQUEST)
    assert not answer.closed  # read to its end: the connection stays
    lines = [r for r in caplog.records if "could not be decompressed" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in lines] == [(logging.INFO, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_the_expanded_size_counts_against_the_limit(api: RunningHub) -> None:
    fits = orjson.dumps({"channel": "news", "data": "x" * 1000})
    too_big = orjson.dumps({"channel": "news", "data": "x" * LIMIT})
    headers = {**auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(api.http_url + "/api/publish", data=gzip.compress(fits), headers=headers) as r:
            assert r.status == 200
        async with session.post(api.http_url + "/api/publish", data=gzip.compress(too_big), headers=headers) as r:
            assert_error(r.status, await r.json(), 413, ErrorCode.LIMIT_EXCEEDED)


# --- refusals leave the body unread ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, ErrorCode.UNAUTHORIZED),
        ({"Authorization": "apikey wrong"}, 401, ErrorCode.UNAUTHORIZED),
        (auth(PUBLISH_ONLY), 403, ErrorCode.PERMISSION_DENIED),
        ({**auth(), "Content-Type": "text/plain"}, 415, ErrorCode.BAD_REQUEST),
        ({**auth(), "Content-Length": str(LIMIT + 1)}, 413, ErrorCode.LIMIT_EXCEEDED),
    ],
)
async def test_refused_before_the_body_the_connection_closes(
    api: RunningHub, headers: dict[str, str], status: int, code: ErrorCode
) -> None:
    length = int(headers.get("Content-Length", str(LIMIT)))
    head = request_head(
        "POST", "/api/revoke", {"Content-Type": "application/json", "Content-Length": str(length), **headers}
    )
    answer = await raw_exchange(api.port, head, pieces(b" " * length))
    assert_error(answer.status, answer.json(), status, code)
    assert answer.headers["connection"] == "close" and answer.closed


async def test_a_refusal_whose_body_arrived_whole_keeps_the_connection(api: RunningHub) -> None:
    """Nothing left to drain: the connection stays for the next request."""
    json = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(api.http_url + "/api/publish", data=PUBLISH, headers=json) as r:
                assert_error(r.status, await r.json(), 401, ErrorCode.UNAUTHORIZED)
                assert r.headers.get("Connection", "").lower() != "close"
        async with session.post(api.http_url + "/api/publish", data=PUBLISH, headers={**auth(), **json}) as r:
            assert r.status == 200


async def test_authentication_comes_before_the_length_check(api: RunningHub) -> None:
    head = request_head("POST", "/api/publish", {"Content-Type": "application/json", "Content-Length": "99999999"})
    answer = await raw_exchange(api.port, head, [b"{}"])
    assert_error(answer.status, answer.json(), 401, ErrorCode.UNAUTHORIZED)
    assert answer.closed


# --- client faults in the log ----------------------------------------------------------------------


async def test_a_client_that_leaves_mid_body_logs_no_traceback(
    api: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for encoding in ("identity", "gzip"):
        _, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(
            request_head(
                "POST",
                "/api/publish",
                {**auth(), "Content-Type": "application/json", "Content-Encoding": encoding, "Content-Length": "5000"},
            )
            + gzip.compress(PUBLISH)[:20]
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()
        await until(
            lambda: sum("left after" in r.getMessage() for r in caplog.records) == (1 if encoding == "identity" else 2)
        )
    lines = [r for r in caplog.records if "left after" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in lines] == [(logging.INFO, None)] * 2
    assert lines[0].getMessage() == "api POST /api/publish: the client left after 20 bytes of the body"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


MALFORMED = [
    # (what is sent, what the log line names)
    (
        b"POST /api/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization apikey all-scopes-secret\r\n\r\n",
        "malformed request",
    ),
    (
        b"POST /api/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: apikey all-scopes-secret\x01\r\n\r\n",
        "malformed",
    ),
    (
        b"POST /api/publish HTTP/1.1\r\nHost: localhost\r\nX-Key: " + b"all-scopes-secret" * 600 + b"\r\n\r\n",
        "too long",
    ),
    (b"POST /api/pub lish?key=all-scopes-secret HTTP/1.1\r\nHost: localhost\r\n\r\n", "request"),
    (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nall-scopes-secret garbage\r\n\r\n", "request line"),
    (b"\x16\x03\x01all-scopes-secret\r\n\r\n", "invalid method"),  # TLS to the HTTP port: first request
]


@pytest.mark.parametrize(("raw", "named"), MALFORMED, ids=[named for _, named in MALFORMED])
async def test_a_malformed_request_is_one_log_line_without_the_key(
    api: RunningHub, caplog: pytest.LogCaptureFixture, raw: bytes, named: str
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(raw)
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n")  # aiohttp's own answer, in text
    await until(lambda: any(r.name == "aiohttp.server" for r in caplog.records))
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1 and records[0].levelno <= logging.INFO and not records[0].exc_info
    line = records[0].getMessage()
    assert line.startswith("http: refused ") and named in line and "\n" not in line, line
    assert ALL.key not in caplog.text and ALL.key not in line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


# --- every error answer is the JSON error map ------------------------------------------------------


async def test_every_error_status_of_the_api_is_the_json_error_map(api: RunningHub) -> None:
    big = orjson.dumps({"channel": "news", "data": "x" * LIMIT})
    cases: list[tuple[str, str, dict[str, str], bytes, int, ErrorCode]] = [
        ("POST", "/api/publish", auth(), b"{", 400, ErrorCode.BAD_REQUEST),
        ("POST", "/api/publish", {}, PUBLISH, 401, ErrorCode.UNAUTHORIZED),
        ("GET", "/api/history?channel=news", auth(PUBLISH_ONLY), b"", 403, ErrorCode.PERMISSION_DENIED),
        (
            "POST",
            "/api/publish",
            auth(),
            orjson.dumps({"channel": "nope:1", "data": 1}),
            404,
            ErrorCode.UNKNOWN_CHANNEL,
        ),
        ("GET", "/api/nothing", auth(), b"", 404, ErrorCode.UNKNOWN_COMMAND),
        ("GET", "/api", auth(), b"", 404, ErrorCode.UNKNOWN_COMMAND),
        ("DELETE", "/api/openapi.json", {}, b"", 405, ErrorCode.BAD_REQUEST),
        ("PUT", "/api/publish", auth(), PUBLISH, 405, ErrorCode.BAD_REQUEST),
        (
            "POST",
            "/api/state/set",
            auth(),
            orjson.dumps({"channel": "live:1", "key": "k", "value": 1, "version": 7}),
            409,
            ErrorCode.CONFLICT,
        ),
        ("POST", "/api/publish", auth(), big, 413, ErrorCode.LIMIT_EXCEEDED),  # read past the limit
        ("POST", "/api/publish", {**auth(), "Content-Type": "text/csv"}, PUBLISH, 415, ErrorCode.BAD_REQUEST),
        ("POST", "/api/publish", {**auth(), "Content-Encoding": "br"}, PUBLISH, 415, ErrorCode.BAD_REQUEST),
    ]
    async with aiohttp.ClientSession() as session:
        for method, path, headers, body, status, code in cases:
            h = {"Content-Type": "application/json", **headers}
            data = io.BytesIO(body) if body else None
            async with session.request(method, api.http_url + path, data=data, headers=h) as r:
                assert r.content_type == "application/json", (method, path, await r.text())
                assert_error(r.status, await r.json(), status, code)
        # 503: the OpenAPI document not installed.
        app = api.server.app
        assert app is not None
        app[API].openapi = None
        async with session.get(api.http_url + "/api/openapi.json") as r:
            assert_error(r.status, await r.json(), 503, ErrorCode.NOT_AVAILABLE)


async def test_a_malformed_request_line_is_answered_by_aiohttp_in_text(api: RunningHub) -> None:
    """Before routing: aiohttp answers it itself (documented: not the JSON error map), and closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"POST /api/pub lish HTTP/1.1\r\nHost: localhost\r\n\r\n")
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain")


@pytest.mark.parametrize("pieces_of_inflate_chunk", [1, 2])
@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)], ids=["gzip", "deflate"]
)
async def test_a_body_expanding_to_a_whole_number_of_pieces_is_read(
    api: RunningHub, encoding: str, compress: Callable[[bytes], bytes], pieces_of_inflate_chunk: int
) -> None:
    """The expanded body ends exactly at a piece boundary (INFLATE_CHUNK): it is read whole
    (it was a 500 for gzip, a 400 for deflate)."""
    prefix, suffix = b'{"channel": "news", "data": "', b'"}'
    body = prefix + b"x" * (pieces_of_inflate_chunk * INFLATE_CHUNK - len(prefix) - len(suffix)) + suffix
    headers = {**auth(), "Content-Type": "application/json", "Content-Encoding": encoding}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(api.http_url + "/api/publish", data=compress(body), headers=headers) as r:
            answer = await r.json()
    if len(body) - len(prefix) - len(suffix) + 5 <= MAX_FRAME:  # the data, packed, fits a frame
        assert r.status == 200 and answer["offset"] >= 1, answer
    else:  # read whole, then refused for the data's size, as without compression
        assert_error(r.status, answer, 413, ErrorCode.LIMIT_EXCEEDED)


async def test_a_body_that_stalls_is_408_and_closed(hub_factory: HubFactory) -> None:
    """A key holder that sends its head and part of the body, then nothing, is answered 408 (the
    JSON error map) once http_body_timeout has passed, and its connection closed; /healthz answers
    meanwhile. (Before, the request waited for the client as long as the client cared to.)"""
    hub = await hub_factory(api_keys=(ALL,), namespaces=NAMESPACES, http_body_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    head = (
        "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Authorization: apikey {ALL.key}\r\nContent-Length: {len(PUBLISH) + 100}\r\n\r\n"
    )
    writer.write(head.encode() + PUBLISH)
    await writer.drain()
    async with aiohttp.ClientSession() as session, session.get(hub.http_url + "/healthz") as r:
        assert r.status == 200
    async with asyncio.timeout(5):
        answer = await reader.read()  # to EOF: the hub closed the connection
    writer.close()
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    head_part, _, body = rest.partition(b"\r\n\r\n")
    assert b"Connection: close" in head_part
    assert_error(408, orjson.loads(body), 408, ErrorCode.BAD_REQUEST)
    assert b"0.3 s" in body
