"""The integrity encoding, row taggers and sealers of walletsvc.keys.

The encoding must be injective: two different (label, fields) tuples never give the same
bytes, whatever the fields contain. The old ``"a|b|c"`` messages were not (("a|b", "c") and
("a", "b|c") collided), and neither told None from "" or 1 from "1".
"""

from __future__ import annotations

import json
import os
import pickle
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walletsvc.keys.errors import SealedSecretError, SeedDecryptionError
from walletsvc.keys.integrity import (
    Field,
    HmacRowTagger,
    canonical_json,
    content_digest,
    encode_message,
)
from walletsvc.keys.kek import Kek


def test_fields_holding_the_old_separator_no_longer_collide() -> None:
    assert encode_message("staff", "a|b", "c") != encode_message("staff", "a", "b|c")
    assert encode_message("staff", "a|b") != encode_message("staff", "a", "b")
    # The label is a field too: text moved between the label and the first field differs.
    assert encode_message("staff|x", "y") != encode_message("staff", "x|y")


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (None, ""),
        (None, "None"),
        ("", b""),
        (1, "1"),
        (0, False),
        (1, True),
        (b"ab", "ab"),
        ("-", None),
        (("a", "b"), "a,b"),
        (("a", "b"), ("ab",)),
        ((), None),
        ((), ""),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00+00:00"),
    ],
)
def test_values_of_different_types_encode_differently(left: Field, right: Field) -> None:
    assert encode_message("kind", left) != encode_message("kind", right)


def test_the_number_of_fields_is_part_of_the_message() -> None:
    assert encode_message("kind", "a", "") != encode_message("kind", "a")
    assert encode_message("kind", None) != encode_message("kind")


def test_an_unsupported_field_type_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_message("kind", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="domain label"):
        encode_message("", "a")


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.just(UTC)),
)
_fields = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
_messages = st.tuples(st.text(min_size=1), st.lists(_fields, max_size=5).map(tuple))


def _normal(value: object) -> object:
    # True == 1 in Python, but they are different fields: compare with the type attached.
    if isinstance(value, tuple):
        return ("seq", tuple(_normal(v) for v in value))
    return (type(value).__name__, value)


@given(_messages, _messages)
def test_different_field_tuples_never_encode_alike(
    a: tuple[str, tuple[Field, ...]], b: tuple[str, tuple[Field, ...]]
) -> None:
    same = (a[0], _normal(a[1])) == (b[0], _normal(b[1]))
    assert (encode_message(a[0], *a[1]) == encode_message(b[0], *b[1])) == same


def test_row_tags_verify_and_fail_on_any_change() -> None:
    tagger = HmacRowTagger(os.urandom(32))
    message = encode_message("policy", None, 1, "active", "00" * 32)
    tag = tagger.tag(message)
    assert tagger.verify(message, tag)
    assert not tagger.verify(encode_message("policy", "", 1, "active", "00" * 32), tag)
    assert not tagger.verify(message, tag[:-1] + ("0" if tag[-1] != "0" else "1"))
    assert not tagger.verify(message, None)
    assert not tagger.verify(message, "")
    assert not tagger.verify(message, "é" * 64)
    assert not HmacRowTagger(os.urandom(32)).verify(message, tag)


def test_the_kek_hands_out_independent_keys_for_each_use() -> None:
    kek = Kek(os.urandom(32))
    message = encode_message("staff", "id")
    tags = kek.row_tagger()
    # Same KEK, same row key; the audit key is another subkey.
    assert kek.row_tagger().verify(message, tags.tag(message))
    assert not HmacRowTagger(kek.audit_key()).verify(message, tags.tag(message))
    assert not Kek(os.urandom(32)).row_tagger().verify(message, tags.tag(message))


def test_totp_secrets_are_sealed_to_their_staff_row() -> None:
    sealer = Kek(os.urandom(32)).totp_sealer()
    sealed = sealer.seal("staff-1", "JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert sealer.unseal("staff-1", sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(SealedSecretError):
        sealer.unseal("staff-2", sealed)  # copied onto another row
    with pytest.raises(SealedSecretError):
        Kek(os.urandom(32)).totp_sealer().unseal("staff-1", sealed)
    with pytest.raises(SealedSecretError):
        sealer.unseal("staff-1", sealed[:-4] + ("AAAA" if sealed[-4:] != "AAAA" else "BBBB"))
    with pytest.raises(SealedSecretError):
        sealer.unseal("staff-1", "not base64!")


def test_the_seed_vault_names_its_kek_and_authenticates_its_binding() -> None:
    kek = Kek(os.urandom(32))
    vault = kek.seed_vault()
    assert vault.key_id == kek.key_id
    nonce, ciphertext = vault.encrypt(b"entropy", b"binding")
    assert vault.decrypt(nonce, ciphertext, b"binding") == b"entropy"
    with pytest.raises(SeedDecryptionError):
        vault.decrypt(nonce, ciphertext, b"another binding")


def test_key_holders_never_show_or_pickle_their_keys() -> None:
    kek = Kek(os.urandom(32))
    for holder in (kek.row_tagger(), kek.totp_sealer(), kek.seed_vault()):
        assert "hidden" in repr(holder) or kek.key_id in repr(holder)
        with pytest.raises(TypeError):
            pickle.dumps(holder)


def test_canonical_json_is_sorted_compact_ascii() -> None:
    value = {"b": [1, "é"], "a": {"y": None, "x": True}}
    assert canonical_json(value) == b'{"a":{"x":true,"y":null},"b":[1,"\\u00e9"]}'
    assert canonical_json(dict(reversed(list(value.items())))) == canonical_json(value)
    assert content_digest(value) == content_digest(json.loads(canonical_json(value)))
    assert content_digest(value) != content_digest({**value, "c": 0})


@given(
    st.dictionaries(
        st.text(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=8,
        ),
    )
)
def test_canonical_json_is_the_byte_form_hashes_were_taken_over_before(
    value: dict[str, object],
) -> None:
    # Policy hashes, approval digests, audit digests and idempotency hashes stored before the
    # one canonical_json existed must still match: same bytes as the old json.dumps calls.
    old = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    assert canonical_json(value) == old
