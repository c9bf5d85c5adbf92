"""The input boundary's rules, one by one (the same attacks over HTTP: test_hostile.py)."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from broker import errors, inputs

MO_LOOKALIKES = [
    "mo",
    "Mo",
    "MO",
    "mO",
    "\uff4d\uff4f",
    "\uff2d\uff2f",
    "mo\u200b",
    "\u200bmo",
    "\u1d0d\u1d0f",
]
MO_LOOKALIKES += ["\u043c\u043e", "\u041c\u041e", "m\u043e", "m0"]  # Cyrillic, mixed, digit


@pytest.mark.parametrize("lookalike", MO_LOOKALIKES)
def test_lookalikes_of_mo_fold_onto_its_fold(lookalike: str) -> None:
    assert inputs.fold(lookalike) == inputs.fold("mo")


@pytest.mark.parametrize(("one", "other"), [("mo", "me"), ("person", "persons"), ("a-b", "ab")])
def test_different_names_keep_different_folds(one: str, other: str) -> None:
    assert inputs.fold(one) != inputs.fold(other)


def test_composed_and_decomposed_spellings_fold_alike() -> None:
    assert inputs.fold("caf\u00e9") == inputs.fold("cafe\u0301") == inputs.fold("CAF\u00c9")


def test_the_skeleton_maps_confusable_letters_onto_one_prototype() -> None:
    assert inputs.skeleton("\u043e") == inputs.skeleton("o")  # Cyrillic, Latin
    assert inputs.skeleton("\u03bf") == inputs.skeleton("o")  # Greek
    assert inputs.skeleton("l") == inputs.skeleton("1") == inputs.skeleton("I")


def test_a_name_is_kept_in_nfc() -> None:
    decomposed = "cafe\u0301"
    assert inputs.name("name", decomposed) == unicodedata.normalize("NFC", decomposed)
    assert inputs.name("name", "engagement listener 1") == "engagement listener 1"


_INVISIBLE = "name must not hold invisible or formatting characters ({})"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "name must be 1 to 255 characters"),
        ("n" * 256, "name must be 1 to 255 characters"),
        (" mo", "name must not start or end with white space"),
        ("mo\t", "name holds the control character U+0009"),
        ("mo\u3000", "name must not start or end with white space"),
        ("a\x00b", "name holds the control character U+0000"),
        ("a\udfffb", "name holds a lone surrogate (U+DFFF): not text"),
        ("m\u200bo", _INVISIBLE.format("U+200B ZERO WIDTH SPACE")),
        ("\ufeffmo", _INVISIBLE.format("U+FEFF ZERO WIDTH NO-BREAK SPACE")),
        ("mo\u202e", _INVISIBLE.format("U+202E RIGHT-TO-LEFT OVERRIDE")),
        ("m\u00a0o", _INVISIBLE.format("U+00A0 NO-BREAK SPACE")),
        ("m\ufe0fo", _INVISIBLE.format("U+FE0F VARIATION SELECTOR-16")),
        ("\u3164", _INVISIBLE.format("U+3164 HANGUL FILLER")),
        ("mo\u2800", _INVISIBLE.format("U+2800 BRAILLE PATTERN BLANK")),
        ("m\ue000o", _INVISIBLE.format("U+E000")),
        ("\u0301", "name must not start with a combining mark (U+0301 COMBINING ACUTE ACCENT)"),
        (
            "\u20ddmo",
            "name must not start with a combining mark (U+20DD COMBINING ENCLOSING CIRCLE)",
        ),
    ],
)
def test_a_name_with_invisible_control_or_outer_space_characters_is_refused(
    value: str, message: str
) -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        inputs.name("name", value)
    assert str(refused.value) == message


_ME = "{ me { actor { uuid } } }"
_CONTROL = "holds the control character"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"query": _ME + " # \x00"}, f"The document {_CONTROL} U+0000"),
        (
            {"query": _ME, "operationName": "A\udfff"},
            "operationName holds a lone surrogate (U+DFFF): not text",
        ),
        (
            {"query": _ME, "variables": {"a": {"b": ["ok", "x\x1b"]}}},
            f"Variable '$a.b[1]' {_CONTROL} U+001B",
        ),
        (
            {"query": _ME, "variables": {"a": {"k\x00": 1}}},
            f"A key in variable '$a' {_CONTROL} U+0000",
        ),
        ({"query": _ME, "variables": {"a\x7f": 1}}, f"A variable name {_CONTROL} U+007F"),
        ({"query": _ME, "variables": {"s": "subject\n"}}, f"Variable '$s' {_CONTROL} U+000A"),
    ],
)
def test_a_request_holding_no_valid_text_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        inputs.check_request(data)
    assert str(refused.value) == message


def test_a_request_of_text_passes_whatever_its_shape() -> None:
    nested: Any = "deep"
    for _ in range(5_000):  # deeper than Python's recursion limit
        nested = [nested]
    document = "query Q(\n\t$s: String\r\n) { me { actor { uuid } } }"
    subject = '{"uuid": "8a1f2c34-0000-4000-8000-000000000000", "tekst": "æøå ☃ 😀"}'
    inputs.check_request({"query": document, "variables": {"s": subject, "n": nested, "i": 5}})
