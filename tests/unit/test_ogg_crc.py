"""The Ogg page CRC: check values, continuation, and equality with the textbook table loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from support.oggtools import reference_crc

from streamtts.ogg import build_page, crc32_ogg


def test_crc_of_the_standard_check_string_is_the_catalogued_value() -> None:
    assert crc32_ogg(b"123456789") == 0x89A1897F


def test_crc_of_empty_input_is_the_initial_value() -> None:
    assert crc32_ogg(b"") == 0
    assert crc32_ogg(b"", 0xDEADBEEF) == 0xDEADBEEF


def test_libogg_head1_0_page_has_the_crc_libogg_computes() -> None:
    # libogg's framing.c self-test "head1_0": BOS|EOS, serial 0x04030201, one 17-byte packet.
    page = build_page(0x04030201, 0, 0, [bytes(range(17))], bos=True, eos=True)
    assert page[22:26] == (0x91ECED15).to_bytes(4, "little")
    assert page[:27] == bytes.fromhex("4f67675300060000000000000000010203040000000015edec9101")


def test_crc_accepts_bytearray_and_memoryview() -> None:
    data = bytes(range(256)) * 3
    expected = crc32_ogg(data)
    assert crc32_ogg(bytearray(data)) == expected
    assert crc32_ogg(memoryview(data)) == expected
    assert crc32_ogg(memoryview(data)[10:20]) == crc32_ogg(data[10:20])


@given(st.binary(max_size=2000), st.integers(0, 0xFFFFFFFF))
def test_crc_equals_the_per_byte_table_loop(data: bytes, start: int) -> None:
    assert crc32_ogg(data, start) == reference_crc(data, start)


@given(st.binary(max_size=500), st.binary(max_size=500))
def test_crc_continues_across_pieces(a: bytes, b: bytes) -> None:
    assert crc32_ogg(b, crc32_ogg(a)) == crc32_ogg(a + b)
