"""The total JSON parser: every limit names the field path; nothing but MappingError escapes."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import MappingError
from bridge.jsonsafe import DEFAULT_LIMITS, JsonLimits, check_text, loads
from mappings.optoro import parse_rma
from mappings.optoro._wire import MAX_CENTS


def parse_or_error(body: bytes | str) -> object:
    try:
        return loads(body)
    except MappingError as exc:
        return exc


def refused(body: bytes | str, limits: JsonLimits = DEFAULT_LIMITS) -> MappingError:
    with pytest.raises(MappingError) as caught:
        loads(body, limits)
    return caught.value


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"a": {"b": [1, ' + b"[" * 40 + b"]" * 40 + b"]}}", "a.b[1]", "nesting deeper than 32"),
        (b'{"n": ' + b"9" * 4301 + b"}", "n", "integer of 4301 digits"),
        (b'{"n": -' + b"9" * 33 + b"}", "n", "integer of 33 digits"),
        (b'{"f": 1.5e400}', "f", "exponent"),
        (b'{"f": 0.' + b"1" * 40 + b"}", "f", "significant digits"),
        (b'{"x": [1, {"eventId": "\\ud800"}]}', "x[1].eventId", "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "\ufffd", "key holds a lone UTF-16 surrogate"),
        (b'{"x": NaN}', "x", "NaN is not a JSON number"),
        (b'{"x": [-Infinity]}', "x[0]", "-Infinity is not a JSON number"),
        (b'{"a": {"k": 1, "k": 2}}', "a.k", "key occurs more than once"),
        (b'{"s": "' + b"x" * 16_385 + b'"}', "s", "string of 16385 characters"),
        (b'{"l": [' + b",".join([b"0"] * 5001) + b"]}", "l", "array of 5001 elements"),
        (b'{"a": \xff}', "body", "not UTF-8"),
        (b'{"a": ', "body", "not valid JSON"),
    ],
)
def test_each_limit_is_a_mapping_error_naming_the_field(
    body: bytes, field: str, message: str
) -> None:
    error = refused(body)
    assert error.field is not None
    assert error.field == field or (message.startswith("nesting") and error.field.startswith(field))
    assert message in str(error)


def test_values_within_the_limits_parse_as_json_with_decimal_fractions() -> None:
    body = {"a": [1, -2, "é", {"b": None, "c": True}], "m": "12.50"}
    text = json.dumps(body).replace('"12.50"', "12.50")
    assert loads(text) == {**body, "m": Decimal("12.50")}
    assert type(loads(text)) is dict
    deep = "[" * 32 + "]" * 32
    assert loads(deep) is not None
    assert loads(b'{"n": ' + b"9" * 32 + b"}") == {"n": int("9" * 32)}


def test_limits_are_configurable() -> None:
    assert refused(b"[[[1]]]", JsonLimits(max_depth=2)).field == "[0][0]"
    assert refused(b'{"k": [1, 2, 3]}', JsonLimits(max_array=2)).field == "k"
    assert refused(b'{"a": 1, "b": 2}', JsonLimits(max_keys=1)).field == "body"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_value_or_a_mapping_error(body: bytes) -> None:
    outcome = parse_or_error(body)
    assert not isinstance(outcome, MappingError) or outcome.field


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**32) + 1, max_value=10**32 - 1)
        | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=30,
    )
)
def test_json_values_round_trip_or_name_a_field(value: object) -> None:
    outcome = parse_or_error(json.dumps(value))
    if isinstance(outcome, MappingError):  # only lone surrogates among generated text
        assert "surrogate" in str(outcome)
    else:
        assert outcome == value


def test_header_and_query_text() -> None:
    assert check_text("acme", "X-Optiturn-Id") == "acme"
    for bad in ("\udcff", "a\x00b", "x" * 2000):
        with pytest.raises(MappingError) as caught:
            check_text(bad, "X-Optiturn-Id")
        assert caught.value.field == "X-Optiturn-Id"
        assert bad not in str(caught.value)


def _rma(shopper_cents: int) -> bytes:
    return json.dumps(
        {
            "rma_identifier": "R1",
            "status": "CREATED",
            "created_at": "2023-01-27T23:25:09Z",
            "return_method": "mail-back",
            "gift_refund_only": False,
            "items": [
                {
                    "order_line_item_identifier": "L1",
                    "order_identifier": "O1",
                    "sku": "S1",
                    "refund_financials": {
                        "estimated_refund_amount_cents": 100,
                        "optoro_refund_amount_cents": 0,
                        "shopper_refund_amount_cents": shopper_cents,
                    },
                }
            ],
        }
    ).encode()


@pytest.mark.parametrize("cents", [-1, MAX_CENTS + 1])
def test_rma_money_out_of_range_is_refused_naming_the_field(cents: int) -> None:
    with pytest.raises(MappingError) as caught:
        parse_rma(_rma(cents))
    assert caught.value.field is not None
    assert "refund_financials.shopper_refund_amount_cents" in caught.value.field


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='[]{}",:\\ 019eE.-+trufalsnNIy\ud800', max_size=200))
def test_json_like_text_gives_a_value_or_a_mapping_error(text: str) -> None:
    outcome = parse_or_error(text)
    assert not isinstance(outcome, MappingError) or outcome.field


@pytest.mark.parametrize(
    "body",
    [
        '"' + '\\"' * 300_000,  # no closing quote: a scan restarting at each quote is quadratic
        "[" + '"[' * 300_000,
        '{"a":' * 200_000,
    ],
)
def test_hostile_shapes_are_refused_in_linear_time(body: str) -> None:
    started = time.perf_counter()
    assert isinstance(parse_or_error(body), MappingError)
    assert time.perf_counter() - started < 2.0
