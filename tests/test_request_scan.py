"""scan_request: when the event loop holds a whole HTTP/1.x request, and how long it is.

gunicorn's own parser is the oracle: where the scan says "complete", gunicorn reads the same request and body from
those bytes and leaves exactly the rest; where it says "malformed", gunicorn refuses the bytes rather than waiting.
"""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http import RequestParser
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, ParseException

from rcwebhook.request_scan import HEADER_BLOCK_LIMIT_BYTES, MAX_CHUNKS, Framing, scan_request
from tests.helpers import REPO

MAX_BODY_BYTES = 4096
ALERT_BODY = (REPO / "test-alert.json").read_bytes()


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


HEALTH_PROBE = head("GET /health HTTP/1.1", "Host: 127.0.0.1:8093", "User-Agent: python-requests/2.32.3",
                    "Accept-Encoding: gzip, deflate", "Accept: */*", "Connection: keep-alive")
ALERTMANAGER_POST = head(
    "POST /webhook HTTP/1.1", "Host: relay:8093", "User-Agent: Alertmanager/0.27.0",
    f"Content-Length: {len(ALERT_BODY)}", "Authorization: Bearer not-a-real-token", "Content-Type: application/json",
) + ALERT_BODY
CURL_HEAD = head("POST /webhook HTTP/1.1", "Host: 127.0.0.1:8093", "User-Agent: curl/7.88.1", "Accept: */*",
                 "Content-Type: application/json", f"Content-Length: {len(ALERT_BODY)}", "Expect: 100-continue")
CURL_POST = CURL_HEAD + ALERT_BODY
CHUNKED_HEAD = head("POST /webhook HTTP/1.1", "Host: relay", "Transfer-Encoding: chunked",
                    "Content-Type: application/json", "Trailer: X-Checksum")
CHUNKED_POST = CHUNKED_HEAD + (
    b"1a;name=value\r\n" + ALERT_BODY[:0x1a] + b"\r\n"
    + f"{len(ALERT_BODY) - 0x1a:X} ; another-extension\r\n".encode() + ALERT_BODY[0x1a:] + b"\r\n"
    + b"0;last\r\nX-Checksum: abc\r\n\r\n"
)
CHUNKED_NO_TRAILERS = CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\r\n"
REQUESTS = {
    "health probe": (HEALTH_PROBE, b""),
    "Alertmanager POST": (ALERTMANAGER_POST, ALERT_BODY),
    "curl POST with Expect": (CURL_POST, ALERT_BODY),
    "chunked with extensions and trailers": (CHUNKED_POST, ALERT_BODY),
    "chunked without trailers": (CHUNKED_NO_TRAILERS, b"hello"),
}


def gunicorn_reads(data: bytes) -> tuple[bytes, bytes]:
    """(body, bytes left unread) when gunicorn's parser reads one request and its whole body from data."""
    parser = RequestParser(Config(), iter([data]), ("127.0.0.1", 40000))
    request = next(parser)
    body = request.body.read()
    rest = b"".join(iter(parser.unreader.read, b""))
    return body, rest


@pytest.mark.parametrize("name", REQUESTS)
def test_a_request_is_complete_at_its_last_byte_and_not_before(name):
    request, _body = REQUESTS[name]
    for split in range(len(request)):
        assert scan_request(request[:split], MAX_BODY_BYTES).framing is Framing.INCOMPLETE, f"complete at {split}"
    scan = scan_request(request, MAX_BODY_BYTES)
    assert (scan.framing, scan.length) == (Framing.COMPLETE, len(request))


@pytest.mark.parametrize("name", REQUESTS)
def test_gunicorn_reads_the_same_request_and_leaves_the_pipelined_rest(name):
    request, body = REQUESTS[name]
    following = HEALTH_PROBE + b"GET /ready HT"
    scan = scan_request(request + following, MAX_BODY_BYTES)
    assert (scan.framing, scan.length) == (Framing.COMPLETE, len(request))
    assert gunicorn_reads(request + following) == (body, following)


@pytest.mark.parametrize("name", REQUESTS)
def test_a_scan_resumed_byte_by_byte_finds_what_a_fresh_scan_finds(name):
    request, _body = REQUESTS[name]
    resume = None
    for end in range(1, len(request) + 1):
        resumed = scan_request(request[:end], MAX_BODY_BYTES, resume)
        fresh = scan_request(request[:end], MAX_BODY_BYTES)
        assert (resumed.framing, resumed.length, resumed.head_length, resumed.expect_lines) == (
            fresh.framing, fresh.length, fresh.head_length, fresh.expect_lines), f"at byte {end}"
        resume = resumed.resume


def test_a_content_length_body_is_awaited_once_the_headers_are_in():
    scan = scan_request(ALERTMANAGER_POST[:-10], MAX_BODY_BYTES)
    assert scan.framing is Framing.INCOMPLETE
    assert scan.length == len(ALERTMANAGER_POST)  # the event loop need not scan again before that many bytes
    assert scan.head_length == ALERTMANAGER_POST.index(b"\r\n\r\n") + 4


# -- Expect: 100-continue --

def test_expect_100_continue_is_found_once_the_headers_are_in_and_its_line_can_be_dropped():
    assert scan_request(CURL_HEAD[:-1], MAX_BODY_BYTES).expect_lines == ()
    scan = scan_request(CURL_HEAD, MAX_BODY_BYTES)
    assert scan.framing is Framing.INCOMPLETE and scan.head_length == len(CURL_HEAD)
    ((start, end),) = scan.expect_lines
    assert CURL_POST[start:end] == b"Expect: 100-continue\r\n"

    stripped = CURL_POST[:start] + CURL_POST[end:]
    again = scan_request(stripped, MAX_BODY_BYTES)
    assert (again.framing, again.length, again.expect_lines) == (Framing.COMPLETE, len(stripped), ())
    assert gunicorn_reads(stripped) == (ALERT_BODY, b"")


def test_expect_is_matched_whatever_its_case_and_other_expectations_are_left_alone():
    mixed = head("POST /webhook HTTP/1.1", "Host: x", "expect:  100-Continue ", "Content-Length: 2") + b"{}"
    ((start, end),) = scan_request(mixed, MAX_BODY_BYTES).expect_lines
    assert mixed[start:end] == b"expect:  100-Continue \r\n"
    other = head("POST /webhook HTTP/1.1", "Host: x", "Expect: something-else", "Content-Length: 2") + b"{}"
    assert scan_request(other, MAX_BODY_BYTES).expect_lines == ()


def test_a_body_over_the_limit_is_reported_with_the_expect_line_to_drop():
    too_long = CURL_HEAD.replace(f"Content-Length: {len(ALERT_BODY)}".encode(), b"Content-Length: 4097")
    scan = scan_request(too_long, MAX_BODY_BYTES)
    assert scan.framing is Framing.BODY_TOO_LARGE
    assert len(scan.expect_lines) == 1 and scan.head_length == len(too_long)


# -- limits --

def test_a_content_length_over_the_limit_is_reported_as_soon_as_the_headers_are_in():
    at_limit = head("POST /webhook HTTP/1.1", "Host: x", f"Content-Length: {MAX_BODY_BYTES}")
    over = head("POST /webhook HTTP/1.1", "Host: x", f"Content-Length: {MAX_BODY_BYTES + 1}")
    assert scan_request(at_limit, MAX_BODY_BYTES).framing is Framing.INCOMPLETE
    assert scan_request(over, MAX_BODY_BYTES).framing is Framing.BODY_TOO_LARGE
    assert scan_request(over[:-1], MAX_BODY_BYTES).framing is Framing.INCOMPLETE
    huge = head("POST /webhook HTTP/1.1", "Host: x", "Content-Length: 99999999999999999999999")
    assert scan_request(huge, MAX_BODY_BYTES).framing is Framing.BODY_TOO_LARGE


def test_a_chunked_body_over_the_limit_is_reported_once_that_much_data_is_in():
    at_limit = CHUNKED_HEAD + f"{MAX_BODY_BYTES:x}\r\n".encode() + b"x" * MAX_BODY_BYTES + b"\r\n0\r\n\r\n"
    assert scan_request(at_limit, MAX_BODY_BYTES).framing is Framing.COMPLETE
    # One declared chunk far over the limit: waited for until more data than the limit is actually in.
    declared = CHUNKED_HEAD + b"ffffffff\r\n"
    assert scan_request(declared + b"x" * MAX_BODY_BYTES, MAX_BODY_BYTES).framing is Framing.INCOMPLETE
    assert scan_request(declared + b"x" * (MAX_BODY_BYTES + 1), MAX_BODY_BYTES).framing is Framing.BODY_TOO_LARGE
    two_chunks = CHUNKED_HEAD + b"800\r\n" + b"x" * 0x800 + b"\r\n801\r\n" + b"x" * 0x801
    assert scan_request(two_chunks, MAX_BODY_BYTES).framing is Framing.BODY_TOO_LARGE


def test_too_many_tiny_chunks_are_handed_over_as_too_large():
    tiny = CHUNKED_HEAD + b"1\r\nx\r\n" * (MAX_CHUNKS + 1) + b"0\r\n\r\n"
    assert scan_request(tiny, MAX_CHUNKS * 2).framing is Framing.BODY_TOO_LARGE
    enough = CHUNKED_HEAD + b"1\r\nx\r\n" * MAX_CHUNKS + b"0\r\n\r\n"
    assert scan_request(enough, MAX_CHUNKS * 2).framing is Framing.COMPLETE


def test_headers_over_64_kib_without_an_end_are_too_large():
    start = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: "
    assert scan_request(start + b"a" * (HEADER_BLOCK_LIMIT_BYTES - len(start)), MAX_BODY_BYTES).framing is (
        Framing.INCOMPLETE)
    assert scan_request(start + b"a" * HEADER_BLOCK_LIMIT_BYTES, MAX_BODY_BYTES).framing is (
        Framing.HEADERS_TOO_LARGE)
    # Arriving whole in one read does not make a header block over the limit acceptable.
    whole = start + b"a" * HEADER_BLOCK_LIMIT_BYTES + b"\r\n\r\n"
    assert scan_request(whole, MAX_BODY_BYTES).framing is Framing.HEADERS_TOO_LARGE
    just_fits = start + b"a" * (HEADER_BLOCK_LIMIT_BYTES - len(start) - 4) + b"\r\n\r\n"
    assert scan_request(just_fits, MAX_BODY_BYTES).framing is Framing.COMPLETE


def test_trailers_over_64_kib_without_an_end_are_too_large():
    endless = CHUNKED_HEAD + b"0\r\nX-Trailer: " + b"a" * HEADER_BLOCK_LIMIT_BYTES
    assert scan_request(endless, MAX_BODY_BYTES).framing is Framing.HEADERS_TOO_LARGE


# -- framing gunicorn refuses: handed over at once, answered 400 (or 501), never waited for --

MALFORMED = {
    "Content-Length not a number": head("POST / HTTP/1.1", "Host: x", "Content-Length: 12abc"),
    "negative Content-Length": head("POST / HTTP/1.1", "Host: x", "Content-Length: -1"),
    "Content-Length twice": head("POST / HTTP/1.1", "Host: x", "Content-Length: 2", "Content-Length: 2"),
    "Content-Length and chunked": head("POST / HTTP/1.1", "Host: x", "Content-Length: 2",
                                       "Transfer-Encoding: chunked"),
    "unknown transfer coding": head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: bogus"),
    "a coding after chunked": head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked, gzip"),
    "chunked twice": head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    "chunked in HTTP/1.0": head("POST / HTTP/1.0", "Host: x", "Transfer-Encoding: chunked"),
    "a header line without a colon": head("GET / HTTP/1.1", "Host: x", "no colon here"),
    "a space before the colon": head("POST / HTTP/1.1", "Host: x", "Content-Length : 2"),
    "obsolete line folding": head("GET / HTTP/1.1", "Host: x", "X-Folded: a", " b"),
    "an empty request line": b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "a chunk size that is not hex": CHUNKED_HEAD + b"xyz\r\nabc\r\n0\r\n\r\n",
    "an empty chunk size": CHUNKED_HEAD + b";ext\r\nabc\r\n0\r\n\r\n",
    "chunk data without its CRLF": CHUNKED_HEAD + b"3\r\nabcX\r\n0\r\n\r\n",
}
GUNICORN_REFUSES = (ParseException, InvalidChunkSize, ChunkMissingTerminator)


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_framing_is_handed_over_and_gunicorn_refuses_it(name):
    assert scan_request(MALFORMED[name], MAX_BODY_BYTES).framing is Framing.MALFORMED
    with pytest.raises(GUNICORN_REFUSES):
        gunicorn_reads(MALFORMED[name])


def test_a_chunk_size_line_over_4_kib_is_malformed_before_it_ends():
    # gunicorn sets no limit here and would read on; the thread's reads past the buffer share one deadline.
    endless = CHUNKED_HEAD + b"1" + b" " * 5000
    assert scan_request(endless, MAX_BODY_BYTES).framing is Framing.MALFORMED
    assert scan_request(endless[:len(CHUNKED_HEAD) + 4000], MAX_BODY_BYTES).framing is Framing.INCOMPLETE


def test_framing_gunicorn_accepts_is_not_malformed():
    spaced = head("POST / HTTP/1.1", "Host: x", "Content-Length:  2 ") + b"{}"
    compressed = head("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: gzip, chunked") + b"2\r\n{}\r\n0\r\n\r\n"
    upper_hex = CHUNKED_HEAD + b"A\r\n0123456789\r\n0\r\n\r\n"
    no_headers = b"GET /health HTTP/1.1\r\n\r\n"
    for request in (spaced, compressed, upper_hex, no_headers):
        scan = scan_request(request, MAX_BODY_BYTES)
        assert (scan.framing, scan.length) == (Framing.COMPLETE, len(request)), request
        gunicorn_reads(request)
