"""The signer's refusals: answered as ``{code, message}``, never carrying key material."""

from __future__ import annotations

from . import wire


class SignerError(Exception):
    """A refusal or bad request, answered as ``{code, message}``; never carries key material."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def refuse(message: str) -> SignerError:
    return SignerError(wire.REFUSED, message)
