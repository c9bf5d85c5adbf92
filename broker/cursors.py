"""Opaque keyset-pagination cursors: the sort key of the last item on a page."""

from __future__ import annotations

import base64
import binascii
import json

from broker.errors import InvalidCursor


def encode(key: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def decode(value: object) -> list[str]:
    if not isinstance(value, str):
        raise InvalidCursor()
    try:
        key = json.loads(base64.urlsafe_b64decode(value.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, RecursionError) as error:
        # RecursionError: a cursor of "[[[[..." nested past Python's recursion limit.
        raise InvalidCursor() from error
    if not isinstance(key, list) or not all(isinstance(part, str) for part in key):
        raise InvalidCursor()
    try:
        for part in key:
            part.encode()  # JSON's "\udfff" decodes to a lone surrogate: no key holds one
    except UnicodeEncodeError as error:
        raise InvalidCursor() from error
    return key
