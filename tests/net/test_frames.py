"""The fast frame path (telcoflow._net._frames) against wsproto, the reference it stands in for.

Frames we encode must read back through wsproto as the same messages, and a WebSocketConnection
fed any mix of wsproto-encoded data frames, pings and fragmented messages, cut into arbitrary
reads, must deliver every message in order and answer every ping: the fast parser and wsproto
share one stream and must hand it over cleanly at frame boundaries.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import anyio.abc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from telcoflow._net import ConnectionClosed, WebSocketConnection
from telcoflow._net._frames import (
    FAST_PAYLOAD_BYTES,
    OP_BINARY,
    OP_TEXT,
    encode_data_frame,
    mask_payload,
    next_frame,
)
from telcoflow._net._handshake import _head_end

from .loopback import wsproto_pair


def wsproto_messages(ws: WSConnection) -> list[Any]:
    out: list[Any] = []
    for event in ws.events():
        if isinstance(event, (TextMessage, BytesMessage)):
            assert event.message_finished
            out.append(bytes(event.data) if isinstance(event.data, bytearray) else event.data)
        else:
            out.append(event)
    return out


messages = st.lists(
    st.one_of(st.binary(max_size=70_000), st.text(max_size=300)), min_size=1, max_size=8
)


@settings(max_examples=200, deadline=None)
@given(messages, st.booleans())
def test_what_we_encode_wsproto_reads(sent: list[str | bytes], from_client: bool) -> None:
    client, server = wsproto_pair()
    reader = server if from_client else client
    wire = b"".join(
        encode_data_frame(
            OP_TEXT if isinstance(m, str) else OP_BINARY,
            m.encode() if isinstance(m, str) else m,
            masked=from_client,
        )
        for m in sent
    )
    reader.receive_data(wire)
    assert wsproto_messages(reader) == sent


@settings(max_examples=200, deadline=None)
@given(messages, st.booleans())
def test_what_wsproto_encodes_we_read(sent: list[str | bytes], from_client: bool) -> None:
    client, server = wsproto_pair()
    writer = client if from_client else server
    wire = b"".join(
        writer.send(TextMessage(m) if isinstance(m, str) else BytesMessage(m)) for m in sent
    )
    got: list[str | bytes] = []
    pos = 0
    while pos < len(wire):
        frame = next_frame(wire, pos, expect_masked=from_client)
        assert frame is not None
        if frame.fast:
            assert frame.payload is not None
            got.append(frame.payload.decode() if frame.opcode == OP_TEXT else frame.payload)
        else:  # only frames too large for the fast path are left to wsproto
            assert frame.end - pos > FAST_PAYLOAD_BYTES
            got.append(sent[len(got)])
        pos = frame.end
    assert got == sent


def test_masking_is_its_own_inverse_and_a_partial_header_waits() -> None:
    key = b"\x01\x02\x03\x04"
    payload = bytes(range(256)) * 3 + b"xyz"
    assert mask_payload(mask_payload(payload, key), key) == payload
    assert mask_payload(b"", key) == b""
    frame = encode_data_frame(OP_BINARY, b"a" * 300, masked=True)
    for cut in range(len(frame)):  # no prefix of a frame is taken for a frame
        assert next_frame(frame[:cut], 0, expect_masked=True) is None
    whole = next_frame(frame, 0, expect_masked=True)
    assert whole is not None
    assert whole.fast
    assert whole.payload == b"a" * 300


def test_a_wrongly_masked_frame_is_left_to_wsproto() -> None:
    frame = encode_data_frame(OP_BINARY, b"abc", masked=False)
    parsed = next_frame(frame, 0, expect_masked=True)  # a client's frame must be masked
    assert parsed is not None
    assert not parsed.fast


class ChunkStream(anyio.abc.ByteStream):
    """A byte stream that yields given reads and keeps what is written to it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = deque(chunks)
        self.sent = bytearray()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.popleft()

    async def send(self, item: bytes) -> None:
        self.sent += item

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


# What a peer sends: ("msg", message), ("ping", payload) or ("frag", [parts]) for a message sent
# in fragments.
items = st.lists(
    st.one_of(
        st.tuples(st.just("msg"), st.one_of(st.binary(max_size=3000), st.text(max_size=100))),
        st.tuples(st.just("ping"), st.binary(max_size=125)),
        st.tuples(st.just("frag"), st.lists(st.binary(max_size=500), min_size=1, max_size=4)),
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("our_role", ["client", "server"])
@settings(max_examples=60, deadline=None)
@given(items, st.lists(st.integers(min_value=1, max_value=4000), max_size=30))
def test_a_connection_reads_any_mix_cut_anywhere(
    backend: str, our_role: str, script: list[tuple[str, Any]], cuts: list[int]
) -> None:
    client, server = wsproto_pair()
    ours, peer = (client, server) if our_role == "client" else (server, client)
    wire = bytearray()
    expected: list[str | bytes] = []
    pings: list[bytes] = []
    for kind, value in script:
        if kind == "msg":
            wire += peer.send(TextMessage(value) if isinstance(value, str) else BytesMessage(value))
            expected.append(value)
        elif kind == "ping":
            wire += peer.send(Ping(value))
            pings.append(value)
        else:  # wsproto takes the stream over from here
            for i, part in enumerate(value):
                wire += peer.send(BytesMessage(part, message_finished=i == len(value) - 1))
            expected.append(b"".join(value))
    wire += peer.send(CloseConnection(1000, "done"))
    chunks: list[bytes] = []
    pos = 0
    for cut in cuts:
        if pos >= len(wire):
            break
        chunks.append(bytes(wire[pos : pos + cut]))
        pos += cut
    if pos < len(wire):
        chunks.append(bytes(wire[pos:]))

    async def main() -> None:
        stream = ChunkStream(chunks)
        conn = WebSocketConnection(stream, ours, name="test", leftover=b"")
        got: list[str | bytes] = []

        async def read_all() -> None:
            while True:
                got.append(await conn.receive())

        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            await read_all()
        assert closed.value.code == 1000
        assert got == expected
        peer.receive_data(bytes(stream.sent))
        replies = list(peer.events())
        assert [e.payload for e in replies if isinstance(e, Pong)] == pings
        assert isinstance(replies[-1], CloseConnection)  # the close was answered

    anyio.run(main, backend=backend)


def test_a_length_in_more_bytes_than_needed_is_left_to_wsproto() -> None:
    """RFC 6455 5.2: the minimal number of bytes must encode the length; wsproto says 1002."""
    padded16 = bytes([0x82, 126]) + (5).to_bytes(2, "big") + b"hello"
    padded64 = bytes([0x82, 127]) + (200).to_bytes(8, "big") + b"x" * 200
    for frame in (padded16, padded64):
        parsed = next_frame(frame, 0, expect_masked=False)
        assert parsed is not None
        assert not parsed.fast


@pytest.mark.parametrize("blank", [b"\r\n\r\n", b"\n\n", b"\n\r\n", b"\r\n\n"])
def test_the_handshake_head_ends_at_the_first_empty_line(blank: bytes) -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket" + blank
    assert _head_end(head + b"\x82\x01x") == len(head)
    assert _head_end(head[:-1]) == -1
