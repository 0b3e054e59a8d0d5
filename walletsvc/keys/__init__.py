"""Keys: the KEK, encrypted seeds, BIP32/BIP84 derivation, BIP143 sighashes and the hot signer.

Only :mod:`walletsvc.keys.signer` turns a seed into private keys; everything else here handles
ciphertexts and public keys. The KEK hands out narrow objects (``RowTagger``, ``SeedVault``,
``TotpSealer``, the audit key); services get those, never the KEK itself.
"""

from .errors import (
    InvalidMnemonic,
    InvalidXpub,
    KekFileError,
    KeyMaterialError,
    SeedDecryptionError,
)
from .hd import AccountXpub, account_path_str, p2wpkh_script_for_pubkey
from .integrity import RowTagger, canonical_json, content_digest, encode_message
from .kek import Kek, create_dev_kek, load_kek
from .keystore import (
    EncryptedSeed,
    MnemonicBackup,
    NewSeed,
    decrypt_seed,
    generate_seed,
    import_mnemonic,
)
from .sealing import SeedVault, TotpSealer
from .sighash import SegwitV0Sighasher
from .signer import HotSigner

__all__ = [
    "AccountXpub",
    "EncryptedSeed",
    "HotSigner",
    "InvalidMnemonic",
    "InvalidXpub",
    "Kek",
    "KekFileError",
    "KeyMaterialError",
    "MnemonicBackup",
    "NewSeed",
    "RowTagger",
    "SeedDecryptionError",
    "SeedVault",
    "SegwitV0Sighasher",
    "TotpSealer",
    "account_path_str",
    "canonical_json",
    "content_digest",
    "create_dev_kek",
    "decrypt_seed",
    "encode_message",
    "generate_seed",
    "import_mnemonic",
    "load_kek",
    "p2wpkh_script_for_pubkey",
]
