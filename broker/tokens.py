"""Event tokens: which pending event, and which delivery generation of it."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from uuid import UUID

PARSE_ERROR = "Could not parse EventToken"


@dataclass(frozen=True, slots=True)
class EventToken:
    listener: UUID
    generation: str
    subject: str

    def encode(self) -> str:
        raw = f"{self.listener}.{self.generation}.{self.subject}".encode()
        return base64.urlsafe_b64encode(raw).decode()

    @classmethod
    def decode(cls, value: object) -> EventToken:
        """Parse a token; ValueError with `PARSE_ERROR` on anything that is not one of ours."""
        if not isinstance(value, str) or not value:
            raise ValueError(PARSE_ERROR)
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii")).decode()
            listener, generation, subject = raw.split(".", 2)
            if not generation.isdigit():
                raise ValueError(PARSE_ERROR)
            return cls(UUID(listener), generation, subject)
        except (ValueError, UnicodeError, binascii.Error) as error:
            raise ValueError(PARSE_ERROR) from error
