"""Bitcoin Core's JSON-RPC error codes (its src/rpc/protocol.h), in one place.

The production backend (walletsvc.chain.rpc) reads them in Core's answers; the development
chain's Core-style server (walletsvc.devchain.rpc_server) answers with them.
"""

from __future__ import annotations

# JSON-RPC 2.0 standard errors.
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_PARSE_ERROR = -32700

# General application errors.
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25  # also RPC_TRANSACTION_ERROR in Core
RPC_TRANSACTION_ERROR = RPC_VERIFY_ERROR
RPC_VERIFY_REJECTED = -26  # also RPC_TRANSACTION_REJECTED
RPC_TRANSACTION_REJECTED = RPC_VERIFY_REJECTED
RPC_VERIFY_ALREADY_IN_CHAIN = -27  # also RPC_TRANSACTION_ALREADY_IN_CHAIN
RPC_TRANSACTION_ALREADY_IN_CHAIN = RPC_VERIFY_ALREADY_IN_CHAIN
