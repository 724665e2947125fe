"""Signed, purpose-bound tokens (subscribers.tokens)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import TimestampSigner

from subscribers.tokens import MAX_AGE, Purpose, TokenError, Tokens

T = Tokens("unit-test-secret")


@pytest.mark.parametrize("purpose", list(Purpose))
def test_round_trip(purpose):
    token = T.make(42, purpose)
    assert T.read(token, purpose) == 42


@pytest.mark.parametrize("made,read", [(a, b) for a in Purpose for b in Purpose if a != b])
def test_purpose_is_bound(made, read):
    with pytest.raises(TokenError, match="not valid"):
        T.read(T.make(7, made), read)


def test_other_secret_and_tampering_refused():
    token = T.make(7, Purpose.UNSUBSCRIBE)
    with pytest.raises(TokenError):
        Tokens("other-secret").read(token, Purpose.UNSUBSCRIBE)
    payload, stamp, sig = token.split(".")
    forged = T.make(8, Purpose.UNSUBSCRIBE).split(".")[0] + f".{stamp}.{sig}"
    for bad in (forged, token[:-1], token + "x", "", "a.b.c", "x" * 1000):
        with pytest.raises(TokenError):
            T.read(bad, Purpose.UNSUBSCRIBE)


def test_confirm_tokens_expire_unsubscribe_tokens_do_not(monkeypatch):
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(
        TimestampSigner, "get_timestamp", lambda self: real(self) - MAX_AGE[Purpose.CONFIRM] - 60
    )
    old_confirm = T.make(5, Purpose.CONFIRM)
    old_unsub = T.make(5, Purpose.UNSUBSCRIBE)
    monkeypatch.undo()
    with pytest.raises(TokenError, match="expired"):
        T.read(old_confirm, Purpose.CONFIRM)
    assert T.read(old_unsub, Purpose.UNSUBSCRIBE) == 5


def test_read_with_time_gives_issue_time():
    subscriber_id, issued = T.read_with_time(T.make(3, Purpose.CONFIRM), Purpose.CONFIRM)
    assert subscriber_id == 3 and issued.tzinfo is not None


def test_non_integer_payloads_refused():
    from itsdangerous import URLSafeTimedSerializer

    s = URLSafeTimedSerializer("unit-test-secret", salt="digest.unsubscribe")
    for payload in ("7", True, -1, 0, [7]):
        with pytest.raises(TokenError):
            T.read(s.dumps(payload), Purpose.UNSUBSCRIBE)


def test_secret_required():
    with pytest.raises(ValueError, match="secret"):
        Tokens("")


@given(st.text(max_size=200))
def test_any_text_is_refused_cleanly(text):
    for purpose in Purpose:
        with pytest.raises(TokenError):
            T.read(text, purpose)


@given(st.integers(min_value=1, max_value=2**62), st.sampled_from(list(Purpose)))
def test_any_id_round_trips(subscriber_id, purpose):
    assert T.read(T.make(subscriber_id, purpose), purpose) == subscriber_id


def test_tokens_are_those_of_the_stock_serializer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping the zlib attempt must not change a single token: old links keep working."""
    from itsdangerous import URLSafeTimedSerializer

    from subscribers.tokens import Purpose, Tokens, _Serializer

    now = TimestampSigner.get_timestamp(TimestampSigner("k"))  # one second for every token below
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: now)
    for value in (1, 7, 12345, 2**40, 10**17):
        for purpose in Purpose:
            stock = URLSafeTimedSerializer("k", salt=f"digest.{purpose.value}")
            ours = _Serializer("k", salt=f"digest.{purpose.value}")
            assert ours.dump_payload(value) == stock.dump_payload(value)
            signed = ours.dumps(value)
            assert signed == stock.dumps(value)  # byte for byte (both signed within this second)
            assert stock.loads(signed) == value and ours.loads(stock.dumps(value)) == value
            assert ours.make_signer().get_signature(b"x") == stock.make_signer().get_signature(b"x")
            assert Tokens("k").read(ours.dumps(value), purpose) == value
    for other in (-5, 0, 10**9):  # never an id, still signed as the stock serializer signs
        assert _Serializer("k").dumps(other) == URLSafeTimedSerializer("k").dumps(other)
    long = {"x": "a" * 200}  # a payload zlib does shorten still goes through the stock path
    assert _Serializer("k").dump_payload(long) == URLSafeTimedSerializer("k").dump_payload(long)


def test_the_message_signature_is_the_first_100_bits_of_the_hmac() -> None:
    """Message-IDs and return paths already sent carry it: it must never change."""
    import base64
    import hashlib
    import hmac

    key = hmac.new(b"k" * 40, b"digest.message-id", hashlib.sha256).digest()
    for run_id, subscriber_id in (("2026-12-07T0500", 1), ("a1b2c3", 123456789)):
        mac = hmac.new(key, f"{run_id}.{subscriber_id}".encode(), hashlib.sha256).digest()
        expected = base64.b32encode(mac).decode("ascii")[:20].lower()
        assert Tokens("k" * 40).message_signature(run_id, subscriber_id) == expected


@given(st.binary(max_size=300), st.binary(max_size=3000), st.sampled_from(["sha1", "sha256"]))
def test_keyed_hmac_is_hmac(key: bytes, message: bytes, digest: str) -> None:
    """The copy-of-a-keyed-object path gives the bytes `hmac.digest` gives, for any key (longer
    than a block too) and message, and a copy leaves the keyed object as it was."""
    import hmac

    from subscribers.tokens import keyed_hmac

    mac = keyed_hmac(key, digest)
    assert mac(message) == hmac.digest(key, message, digest)
    assert mac(message) == mac(message)
    assert mac(b"") == hmac.digest(key, b"", digest)


def test_keyed_hmac_shared_between_threads() -> None:
    import hmac
    from concurrent.futures import ThreadPoolExecutor

    from subscribers.tokens import keyed_hmac

    mac = keyed_hmac(b"secret", "sha256")
    messages = [f"run.{i}".encode() for i in range(2000)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(mac, messages))
    assert got == [hmac.digest(b"secret", m, "sha256") for m in messages]
