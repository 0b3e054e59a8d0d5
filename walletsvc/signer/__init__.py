"""The signer: its own process, the only one that holds seeds (docs/architecture.md).

The service imports only :mod:`walletsvc.signer.client` (and the wire format it speaks);
``core``, ``ledger``, ``state`` and ``server`` run inside ``walletsvc signer`` and import
neither the database nor the API nor any feature package (import-linter contracts).
"""
