"""Encrypted seeds: round trips, AAD binding, tamper detection and secret hygiene."""

from __future__ import annotations

import copy
import os
import pickle
from dataclasses import replace

import pytest
from bip_utils import (
    Bip39Languages,
    Bip39MnemonicDecoder,
    Bip39MnemonicValidator,
    Bip39SeedGenerator,
    Bip84,
    Bip84Coins,
)
from embit import bip32 as embit_bip32
from embit import bip39 as embit_bip39

from walletsvc.domain.network import Network
from walletsvc.keys.errors import InvalidMnemonic, SeedDecryptionError
from walletsvc.keys.hd import AccountKeys
from walletsvc.keys.kek import Kek
from walletsvc.keys.keystore import (
    EncryptedSeed,
    NewSeed,
    _bip39_seed,
    decrypt_seed,
    generate_seed,
    import_mnemonic,
)
from walletsvc.keys.sealing import SeedVault

from .conftest import MNEMONIC_EPOCH_1

WALLET = "pool-hot"


def _secrets_of(words: tuple[str, ...] | list[str]) -> list[str]:
    """Strings that must never show up in reprs, messages or logs for this mnemonic."""
    mnemonic = " ".join(words)
    entropy = bytes(Bip39MnemonicDecoder(Bip39Languages.ENGLISH).Decode(mnemonic))
    seed = bytes(Bip39SeedGenerator(mnemonic).Generate())
    root = embit_bip32.HDKey.from_seed(seed)
    return [mnemonic, entropy.hex(), seed.hex(), root.key.secret.hex(), root.to_base58()]


def _assert_clean(text: str, words: tuple[str, ...] | list[str]) -> None:
    for secret in _secrets_of(words):
        assert secret not in text
    # Any three consecutive words of the phrase would already be a leak.
    for i in range(len(words) - 2):
        assert " ".join(words[i : i + 3]) not in text


@pytest.fixture
def vault() -> SeedVault:
    return Kek(os.urandom(32)).seed_vault()


@pytest.fixture
def new_seed(vault: SeedVault) -> NewSeed:
    return generate_seed(vault, wallet=WALLET, epoch=1, network=Network.REGTEST)


def test_generate_returns_24_valid_words_once(new_seed: NewSeed) -> None:
    assert not new_seed.mnemonic.revealed
    words = new_seed.mnemonic.reveal()
    assert len(words) == 24
    assert Bip39MnemonicValidator(Bip39Languages.ENGLISH).IsValid(" ".join(words))
    assert new_seed.mnemonic.revealed
    with pytest.raises(RuntimeError, match="already revealed"):
        new_seed.mnemonic.reveal()


def test_generated_seeds_differ(vault: SeedVault) -> None:
    a = generate_seed(vault, wallet=WALLET, epoch=1, network=Network.REGTEST)
    b = generate_seed(vault, wallet=WALLET, epoch=1, network=Network.REGTEST)
    assert a.account_xpub != b.account_xpub
    assert a.encrypted.nonce != b.encrypted.nonce


def test_round_trip_decrypts_to_the_seed_behind_the_xpub(
    vault: SeedVault, new_seed: NewSeed
) -> None:
    words = new_seed.mnemonic.reveal()
    stored = EncryptedSeed.from_string(new_seed.encrypted.to_string())
    assert stored == new_seed.encrypted
    assert EncryptedSeed.from_bytes(new_seed.encrypted.to_bytes()) == new_seed.encrypted
    with decrypt_seed(vault, stored, wallet=WALLET, epoch=1, network=Network.REGTEST) as secret:
        assert bytes(secret.seed) == bytes(Bip39SeedGenerator(" ".join(words)).Generate())
        keys = AccountKeys(secret.seed, Network.REGTEST)
        assert keys.account_xpub().xpub == new_seed.account_xpub
        assert keys.master_fingerprint.hex() == new_seed.master_fingerprint
    # Leaving the block wiped the buffer.
    assert not any(secret._seed)
    with pytest.raises(RuntimeError):
        _ = secret.seed


def test_new_seed_metadata_matches_bip_utils(vault: SeedVault, new_seed: NewSeed) -> None:
    words = new_seed.mnemonic.reveal()
    seed = Bip39SeedGenerator(" ".join(words)).Generate()
    account = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_REGTEST).Purpose().Coin().Account(0)
    # bip-utils serialises BIP84 keys with SLIP-132 versions (vpub on test networks).
    assert new_seed.account_xpub_slip132 == account.PublicKey().ToExtended()
    assert new_seed.account_xpub.startswith("tpub")
    assert new_seed.account_xpub_slip132.startswith("vpub")
    assert new_seed.account_path == "m/84'/1'/0'"
    root = embit_bip32.HDKey.from_seed(seed)
    assert new_seed.master_fingerprint == root.my_fingerprint.hex()
    assert new_seed.descriptor == (
        f"wpkh([{new_seed.master_fingerprint}/84h/1h/0h]{new_seed.account_xpub}/0/*)"
    )


def test_mainnet_paths_and_versions(vault: SeedVault) -> None:
    new = generate_seed(vault, wallet=WALLET, epoch=3, network=Network.MAINNET)
    assert new.account_path == "m/84'/0'/0'"
    assert new.account_xpub.startswith("xpub")
    assert new.account_xpub_slip132.startswith("zpub")


def test_import_reproduces_generate(vault: SeedVault, new_seed: NewSeed) -> None:
    words = new_seed.mnemonic.reveal()
    restored = import_mnemonic(
        vault,
        "  " + "  ".join(words).upper() + "\n",
        wallet=WALLET,
        epoch=1,
        network=Network.REGTEST,
    )
    assert restored.account_xpub == new_seed.account_xpub
    assert restored.master_fingerprint == new_seed.master_fingerprint
    assert restored.mnemonic.reveal() == words
    # A fresh nonce, but the same plaintext behind it.
    assert restored.encrypted.nonce != new_seed.encrypted.nonce


def test_import_bip84_reference_mnemonic(vault: SeedVault) -> None:
    # BIP84 "Test vectors": 12-word mnemonic, mainnet account zpub.
    new = import_mnemonic(
        vault,
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon "
        "abandon about",
        wallet=WALLET,
        epoch=1,
        network=Network.MAINNET,
    )
    assert new.account_xpub_slip132 == (
        "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkg"
        "DKf31mGDtKsAYz2oz2AGutZYs"
    )
    assert new.master_fingerprint == "73c5da0a"


def test_bip39_seed_matches_bip_utils_and_embit() -> None:
    entropy = bytes(Bip39MnemonicDecoder(Bip39Languages.ENGLISH).Decode(MNEMONIC_EPOCH_1))
    for passphrase in ("", "TREZOR"):
        ours = bytes(_bip39_seed(entropy, passphrase))
        assert ours == bytes(Bip39SeedGenerator(MNEMONIC_EPOCH_1).Generate(passphrase))
        assert ours == embit_bip39.mnemonic_to_seed(MNEMONIC_EPOCH_1, passphrase)


@pytest.mark.parametrize(
    "phrase",
    [
        " ".join(["abandon"] * 24),  # bad checksum
        " ".join(["abandon"] * 23 + ["zzzzz"]),  # unknown word
        " ".join(["abandon"] * 11),  # wrong length
        "",
    ],
)
def test_import_refuses_invalid_mnemonics_without_echoing_them(
    vault: SeedVault, phrase: str
) -> None:
    with pytest.raises(InvalidMnemonic) as info:
        import_mnemonic(vault, phrase, wallet=WALLET, epoch=1, network=Network.REGTEST)
    assert "abandon" not in str(info.value) and "zzzzz" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_wrong_kek_is_named_by_id(new_seed: NewSeed) -> None:
    other = Kek(os.urandom(32)).seed_vault()
    with pytest.raises(SeedDecryptionError, match=f"loaded KEK is {other.key_id}"):
        decrypt_seed(other, new_seed.encrypted, wallet=WALLET, epoch=1, network=Network.REGTEST)


def test_wrong_kek_with_forged_id_fails_authentication(new_seed: NewSeed) -> None:
    other = Kek(os.urandom(32)).seed_vault()
    forged = replace(new_seed.encrypted, kek_id=other.key_id)
    with pytest.raises(SeedDecryptionError, match="does not authenticate"):
        decrypt_seed(other, forged, wallet=WALLET, epoch=1, network=Network.REGTEST)


@pytest.mark.parametrize(
    ("wallet", "epoch", "network"),
    [
        ("other-wallet", 1, Network.REGTEST),
        (WALLET, 2, Network.REGTEST),
        (WALLET, 1, Network.TESTNET),
        (WALLET, 1, Network.SIGNET),
        (WALLET.upper(), 1, Network.REGTEST),
    ],
)
def test_ciphertext_is_bound_to_wallet_epoch_and_network(
    vault: SeedVault, new_seed: NewSeed, wallet: str, epoch: int, network: Network
) -> None:
    with pytest.raises(SeedDecryptionError, match="does not authenticate"):
        decrypt_seed(vault, new_seed.encrypted, wallet=wallet, epoch=epoch, network=network)


def test_swapped_epoch_rows_are_refused(vault: SeedVault) -> None:
    e1 = generate_seed(vault, wallet=WALLET, epoch=1, network=Network.REGTEST)
    e2 = generate_seed(vault, wallet=WALLET, epoch=2, network=Network.REGTEST)
    for enc, epoch in ((e1.encrypted, 2), (e2.encrypted, 1)):
        with pytest.raises(SeedDecryptionError):
            decrypt_seed(vault, enc, wallet=WALLET, epoch=epoch, network=Network.REGTEST)


def test_any_flipped_bit_is_detected(vault: SeedVault, new_seed: NewSeed) -> None:
    enc = new_seed.encrypted
    for i in range(len(enc.nonce)):
        nonce = bytearray(enc.nonce)
        nonce[i] ^= 0x01
        with pytest.raises(SeedDecryptionError):
            decrypt_seed(
                vault,
                replace(enc, nonce=bytes(nonce)),
                wallet=WALLET,
                epoch=1,
                network=Network.REGTEST,
            )
    for i in range(len(enc.ciphertext)):  # body and GCM tag
        ct = bytearray(enc.ciphertext)
        ct[i] ^= 0x80
        with pytest.raises(SeedDecryptionError):
            decrypt_seed(
                vault,
                replace(enc, ciphertext=bytes(ct)),
                wallet=WALLET,
                epoch=1,
                network=Network.REGTEST,
            )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "wsseed:v1:abc",
        "wsseed:v2:00000000:AAAAAAAAAAAAAAAA:AAAA",
        "other:v1:00000000:AAAAAAAAAAAAAAAA:AAAA",
        "wsseed:v1:XYZ00000:AAAAAAAAAAAAAAAA:" + "A" * 64,
        "wsseed:v1:00000000:AAAA:" + "A" * 64,
        "wsseed:v1:00000000:AAAAAAAAAAAAAAAA:AAAA",
        "wsseed:v1:00000000:AAAAAAAAAAAAAAAA:!!!!",
    ],
)
def test_malformed_serialisations_are_refused(text: str) -> None:
    with pytest.raises(SeedDecryptionError):
        EncryptedSeed.from_string(text)


def test_truncated_ciphertext_is_refused(new_seed: NewSeed) -> None:
    text = new_seed.encrypted.to_string()
    with pytest.raises(SeedDecryptionError):
        EncryptedSeed.from_string(text[:-6])
    with pytest.raises(SeedDecryptionError):
        EncryptedSeed.from_bytes(b"\xff" + text.encode())


def test_no_secret_in_reprs_strings_or_errors(vault: SeedVault) -> None:
    new = generate_seed(vault, wallet=WALLET, epoch=1, network=Network.REGTEST)
    texts = [repr(new), str(new), repr(new.mnemonic), str(new.mnemonic), repr(new.encrypted)]
    words = new.mnemonic.reveal()
    texts += [repr(new), str(new.mnemonic)]
    with decrypt_seed(vault, new.encrypted, wallet=WALLET, epoch=1, network=Network.REGTEST) as s:
        texts += [repr(s), str(s)]
        keys = AccountKeys(s.seed, Network.REGTEST)
        texts += [repr(keys), repr(keys.key(0, 0)), repr(keys.account_xpub())]
    for key, name in ((Kek(os.urandom(32)).seed_vault(), WALLET), (vault, "x")):
        with pytest.raises(SeedDecryptionError) as info:
            decrypt_seed(key, new.encrypted, wallet=name, epoch=1, network=Network.REGTEST)
        texts.append(str(info.value))
        texts.append(repr(info.value))
    for text in texts:
        _assert_clean(text, words)


def test_secrets_cannot_be_pickled(vault: SeedVault, new_seed: NewSeed) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(new_seed.mnemonic)
    with pytest.raises(TypeError):
        copy.deepcopy(new_seed)
    with decrypt_seed(
        vault, new_seed.encrypted, wallet=WALLET, epoch=1, network=Network.REGTEST
    ) as s:
        with pytest.raises(TypeError):
            pickle.dumps(s)
        keys = AccountKeys(s.seed, Network.REGTEST)
        with pytest.raises(TypeError):
            pickle.dumps(keys)
        with pytest.raises(TypeError):
            pickle.dumps(keys.key(0, 1))


@pytest.mark.parametrize(("wallet", "epoch"), [("", 1), (WALLET, -1), (WALLET, True)])
def test_binding_values_are_checked(vault: SeedVault, wallet: str, epoch: int) -> None:
    with pytest.raises(ValueError):
        generate_seed(vault, wallet=wallet, epoch=epoch, network=Network.REGTEST)
