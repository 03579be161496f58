"""Is a whole HTTP/1.x request in this buffer? A pure scan of its framing, as gunicorn's parser reads it.

The event loop of rcwebhook.server calls it after every read, resuming where the last call stopped, so a client
that trickles bytes costs almost nothing per byte.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import partial

# Far above any real request's headers (Alertmanager sends a few hundred bytes), far below what holding a thousand
# of them would cost.
HEADER_BLOCK_LIMIT_BYTES = 64 * 1024
# A chunk-size line with its extensions; real clients send a few hex digits.
CHUNK_LINE_LIMIT_BYTES = 4096
# Go and curl send chunks of 4 KiB and more; many more tiny chunks only make the event loop scan framing.
MAX_CHUNKS = 10_000


# -- the scan: is a whole HTTP/1.x request in this buffer? ------------------------------------------------------

class Framing(enum.Enum):
    INCOMPLETE = "incomplete"  # wait for more bytes
    COMPLETE = "complete"  # the first Scan.length bytes are one whole request
    MALFORMED = "malformed"  # framing gunicorn's parser rejects (400): hand it over rather than wait
    BODY_TOO_LARGE = "body too large"  # over max_body_bytes: hand over at once (the app answers 413), then close
    HEADERS_TOO_LARGE = "headers too large"  # no end of the headers within HEADER_BLOCK_LIMIT_BYTES: 431


@dataclass(frozen=True)
class Resume:
    """What a scan learnt about a buffer, so the next scan of the same buffer, grown, goes on from there."""

    searched: int = 0  # bytes known to hold no end of the headers
    head_length: int = 0  # once the headers are complete (chunked bodies only)
    expect_lines: tuple[tuple[int, int], ...] = ()
    chunk_offset: int = 0  # where the next chunk-size line starts
    chunk_body_bytes: int = 0  # chunk data before it
    chunks: int = 0


@dataclass(frozen=True)
class Scan:
    """What scan_request found at the start of a buffer."""

    framing: Framing
    length: int = 0  # COMPLETE: the request's bytes; INCOMPLETE with a Content-Length: the bytes it will take
    head_length: int = 0  # through the blank line ending the headers, once it has arrived
    # [start, end) of each "Expect: 100-continue" line: dropped before gunicorn reads them (it would send its own
    # "100 Continue", a second one, after the event loop's).
    expect_lines: tuple[tuple[int, int], ...] = ()
    resume: Resume | None = None


class _Malformed(Exception):
    pass


def scan_request(buffer: bytes | bytearray, max_body_bytes: int, resume: Resume | None = None) -> Scan:
    """Whether buffer starts with a whole HTTP/1.x request, judged by its framing as gunicorn's parser reads it."""
    if resume is not None and resume.chunk_offset:
        return _scan_chunked(buffer, max_body_bytes, resume)
    head_end = buffer.find(b"\r\n\r\n", max(0, (resume.searched if resume else 0) - 3))
    if head_end < 0 or head_end + 4 > HEADER_BLOCK_LIMIT_BYTES:
        if head_end >= 0 or len(buffer) > HEADER_BLOCK_LIMIT_BYTES:
            return Scan(Framing.HEADERS_TOO_LARGE)
        return Scan(Framing.INCOMPLETE, resume=Resume(searched=len(buffer)))
    head_length = head_end + 4
    try:
        content_length, chunked, expect_lines = _read_head(bytes(buffer[:head_end]))
    except _Malformed:
        return Scan(Framing.MALFORMED, head_length=head_length)
    if chunked:
        return _scan_chunked(buffer, max_body_bytes, Resume(
            searched=head_length, head_length=head_length, expect_lines=expect_lines, chunk_offset=head_length))
    length = head_length + (content_length or 0)
    if length - head_length > max_body_bytes:
        return Scan(Framing.BODY_TOO_LARGE, head_length=head_length, expect_lines=expect_lines)
    framing = Framing.COMPLETE if len(buffer) >= length else Framing.INCOMPLETE
    return Scan(framing, length, head_length, expect_lines)


def _read_head(head: bytes) -> tuple[int | None, bool, tuple[tuple[int, int], ...]]:
    """(Content-Length, chunked, Expect: 100-continue lines) of a request line and headers, as gunicorn reads them."""
    lines = head.split(b"\r\n")
    if not lines[0]:
        raise _Malformed()
    offset = len(lines[0]) + 2
    content_length, chunked, expect_lines = None, False, []
    for line in lines[1:]:
        start, offset = offset, offset + len(line) + 2
        name, colon, value = line.partition(b":")
        if not colon or not name or name[:1] in b" \t" or name[-1:] in b" \t":
            raise _Malformed()  # no name, or obsolete line folding
        name, value = name.lower(), value.strip(b" \t")
        if name == b"content-length":
            if content_length is not None or not value.isdigit():
                raise _Malformed()  # gunicorn refuses a repeated length even when it repeats the same value
            content_length = int(value)
        elif name == b"transfer-encoding":
            for coding in (part.strip().lower() for part in value.split(b",")):
                if chunked or coding not in (b"chunked", b"identity", b"gzip", b"deflate", b"compress"):
                    raise _Malformed()  # chunked must come last and once; an unknown coding is answered 501
                chunked = coding == b"chunked"
        elif name == b"expect" and value.lower() == b"100-continue":
            expect_lines.append((start, offset))
    if chunked and (content_length is not None or lines[0].endswith(b" HTTP/1.0")):
        raise _Malformed()
    return content_length, chunked, tuple(expect_lines)


def _scan_chunked(buffer: bytes | bytearray, max_body_bytes: int, resume: Resume) -> Scan:
    """Chunk by chunk from resume.chunk_offset: sizes with extensions, the last (0) chunk, trailers."""
    position, body_bytes, chunks = resume.chunk_offset, resume.chunk_body_bytes, resume.chunks
    found = partial(Scan, head_length=resume.head_length, expect_lines=resume.expect_lines)
    while True:
        line_end = buffer.find(b"\r\n", position, position + CHUNK_LINE_LIMIT_BYTES + 2)
        if line_end < 0:
            if len(buffer) - position > CHUNK_LINE_LIMIT_BYTES:
                return found(Framing.MALFORMED)
            break
        size_field, semicolon, _extensions = bytes(buffer[position:line_end]).partition(b";")
        if semicolon:
            size_field = size_field.rstrip(b" \t")  # whitespace is allowed before an extension only
        if not size_field or size_field.strip(b"0123456789abcdefABCDEF"):
            return found(Framing.MALFORMED)
        size = int(size_field, 16)
        data_start = line_end + 2
        if size == 0:
            if buffer[data_start:data_start + 2] == b"\r\n":
                return found(Framing.COMPLETE, data_start + 2)
            trailers_end = buffer.find(b"\r\n\r\n", data_start)
            if trailers_end >= 0:
                return found(Framing.COMPLETE, trailers_end + 4)
            if len(buffer) - data_start > HEADER_BLOCK_LIMIT_BYTES:
                return found(Framing.HEADERS_TOO_LARGE)
            break
        available = len(buffer) - data_start
        if body_bytes + min(size, available) > max_body_bytes or chunks >= MAX_CHUNKS:
            return found(Framing.BODY_TOO_LARGE)
        terminator = bytes(buffer[data_start + size:data_start + size + 2])
        if terminator != b"\r\n"[:len(terminator)]:
            return found(Framing.MALFORMED)
        if len(terminator) < 2:
            break
        position, body_bytes, chunks = data_start + size + 2, body_bytes + size, chunks + 1
    return found(Framing.INCOMPLETE, resume=Resume(
        searched=resume.searched, head_length=resume.head_length, expect_lines=resume.expect_lines,
        chunk_offset=position, chunk_body_bytes=body_bytes, chunks=chunks))


# -- the worker -----------------------------------------------------------------------------------------------
