"""The frame reader (telcoflow._net._reader) on its own: pure, bytes in and events out.

What it promises (its module docstring): every byte is parsed by exactly one parser, wsproto is
given bytes only at a frame's first byte, the hand-over to wsproto is for good, and a peer's
message is bounded. wsproto encodes the peer's frames here, so the reader is checked against
the library it shares the stream with.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from telcoflow._net._frames import OP_BINARY, encode_data_frame
from telcoflow._net._reader import (
    MAX_FRAGMENTS,
    MAX_MESSAGE_BYTES,
    NEED_DATA,
    FrameReader,
    MessageTooBig,
    Parser,
    ReaderEvent,
)

from .loopback import wsproto_pair


def drain(reader: FrameReader) -> list[ReaderEvent]:
    """Every event the reader has, up to NEED_DATA (not included)."""
    out: list[ReaderEvent] = []
    while (event := reader.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def test_whole_data_frames_stay_on_the_fast_parser_and_control_frames_go_to_wsproto() -> None:
    peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    reader.feed(peer.send(BytesMessage(b"\x01\x02")) + peer.send(Ping(b"hi")))
    reader.feed(peer.send(TextMessage("hello")) + peer.send(Pong(b"hi")))
    events = drain(reader)
    assert events[0] == b"\x01\x02"
    assert isinstance(events[1], Ping)
    assert events[1].payload == b"hi"
    assert events[2] == "hello"
    assert isinstance(events[3], Pong)
    assert reader.parser is Parser.FAST  # nothing unusual: no hand-over


def test_a_control_frame_cut_in_two_waits_for_its_second_half() -> None:
    peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    wire = peer.send(Ping(b"x" * 100))
    reader.feed(wire[:50])
    assert reader.next_event() is NEED_DATA
    reader.feed(wire[50:])
    (ping,) = drain(reader)
    assert isinstance(ping, Ping)
    assert ping.payload == b"x" * 100
    assert reader.parser is Parser.FAST


def test_a_fragment_hands_the_stream_over_for_good_at_its_first_byte() -> None:
    peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    wire = (
        peer.send(BytesMessage(b"before"))
        + peer.send(TextMessage("frag", message_finished=False))
        + peer.send(TextMessage("mented", message_finished=True))
        + peer.send(BytesMessage(b"after"))
    )
    reader.feed(wire)
    assert drain(reader) == [b"before", "fragmented", b"after"]
    assert reader.parser is Parser.WSPROTO  # and it stays so
    reader.feed(peer.send(BytesMessage(b"later")))
    assert drain(reader) == [b"later"]
    assert reader.parser is Parser.WSPROTO


def test_a_frame_wsproto_must_judge_is_its_error() -> None:
    _peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    # Unmasked, from a client: RFC 6455 says close with 1002; wsproto reports it as a close.
    reader.feed(encode_data_frame(OP_BINARY, b"unmasked", masked=False))
    (close,) = drain(reader)
    assert isinstance(close, CloseConnection)
    assert close.code == CloseReason.PROTOCOL_ERROR
    assert reader.parser is Parser.WSPROTO


def test_text_that_is_not_utf8_is_wsprotos_1007() -> None:
    peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    frame = bytearray(peer.send(TextMessage("ab")))
    key = frame[2:6]
    frame[6] = 0xFF ^ key[0]  # the first payload byte, unmasked, is 0xff: never UTF-8
    reader.feed(bytes(frame))
    (close,) = drain(reader)
    assert isinstance(close, CloseConnection)
    assert close.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA


def test_without_leftover_wsproto_parses_from_the_start() -> None:
    peer, ours = wsproto_pair()
    # Frames that came in the handshake's read are already in wsproto's buffer.
    ours.receive_data(peer.send(BytesMessage(b"early")))
    reader = FrameReader(ours, from_client=True, leftover=None)
    assert reader.parser is Parser.WSPROTO
    assert drain(reader) == [b"early"]


def test_a_message_over_the_bound_raises_and_so_do_too_many_fragments() -> None:
    peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    chunk = b"x" * 65_000
    for _ in range(MAX_MESSAGE_BYTES // len(chunk) + 1):
        reader.feed(peer.send(BytesMessage(chunk, message_finished=False)))
    with pytest.raises(MessageTooBig):
        drain(reader)

    peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    reader.feed(b"".join(peer.send(TextMessage("", message_finished=False)) for _ in range(100)))
    assert drain(reader) == []  # empty fragments are still fragments ...
    more = MAX_FRAGMENTS - 100 + 1
    reader.feed(b"".join(peer.send(TextMessage("", message_finished=False)) for _ in range(more)))
    with pytest.raises(MessageTooBig):  # ... and count toward the bound
        drain(reader)


def test_closing_hands_over_and_finds_the_close_behind_a_partial_frame() -> None:
    peer, ours = wsproto_pair()
    reader = FrameReader(ours, from_client=True, leftover=b"")
    message = peer.send(BytesMessage(b"y" * 300))
    close = peer.send(CloseConnection(1000, "bye"))
    reader.feed(message[:10])  # half a data frame sits in the fast parser's buffer
    assert reader.next_event() is NEED_DATA
    reader.hand_over()
    assert reader.parser is Parser.WSPROTO
    assert not reader.skip_to_close()
    reader.feed(message[10:] + close)
    assert reader.skip_to_close()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=300).map(lambda b: ("bytes", b)),
            st.text(max_size=50).map(lambda t: ("text", t)),
            st.binary(max_size=20).map(lambda b: ("ping", b)),
            st.lists(st.text(max_size=5), min_size=2, max_size=4).map(lambda f: ("frags", f)),
        ),
        max_size=12,
    ),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
)
def test_any_mix_cut_anywhere_reads_as_sent(
    sent: list[tuple[str, object]], cuts: list[int]
) -> None:
    peer, ours = wsproto_pair()
    wire = bytearray()
    expected: list[object] = []
    for kind, value in sent:
        if kind == "bytes":
            assert isinstance(value, bytes)
            wire += peer.send(BytesMessage(value))
            expected.append(value)
        elif kind == "text":
            assert isinstance(value, str)
            wire += peer.send(TextMessage(value))
            expected.append(value)
        elif kind == "ping":
            assert isinstance(value, bytes)
            wire += peer.send(Ping(value))
            expected.append(("ping", value))
        else:
            assert isinstance(value, list)
            for i, part in enumerate(value):
                wire += peer.send(TextMessage(part, message_finished=i == len(value) - 1))
            expected.append("".join(value))
    reader = FrameReader(ours, from_client=True, leftover=b"")
    got: list[object] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        i += 1
        reader.feed(bytes(wire[pos : pos + step]))
        pos += step
        for event in drain(reader):
            got.append(("ping", event.payload) if isinstance(event, Ping) else event)
    assert got == expected
