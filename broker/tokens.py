"""Event tokens: which pending event, and which delivery generation of it."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from uuid import UUID

from broker.errors import InvalidToken


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
        """Parse a token; `InvalidToken` on anything that is not one of ours."""
        if not isinstance(value, str) or not value:
            raise InvalidToken()
        try:
            raw = base64.urlsafe_b64decode(value.encode("ascii")).decode()
            listener, generation, subject = raw.split(".", 2)
            if not generation.isdigit():
                raise InvalidToken()
            return cls(UUID(listener), generation, subject)
        except (ValueError, UnicodeError, binascii.Error) as error:
            raise InvalidToken() from error
