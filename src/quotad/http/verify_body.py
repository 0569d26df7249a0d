"""The body of ``POST /v1/verify``: ``{"key", "service", "cost"}``, read without a framework.

Limits v2 (SPEC 9): ``{"key", "items": [{"service", "cost"}, ...]}`` instead of ``service``
and ``cost`` (both forms at once are refused): each service once, at least one item.

The answers are the contract's, with the pointers, messages and codes that the API's
pydantic models give everywhere else (``quotad.api.schemas.VerifyIn`` documents this
body, and ``tests/test_verify_endpoint.py`` holds the two to the same verdict on every
body): the body is read as JSON the way FastAPI reads one (``json.loads`` of the bytes,
so UTF-16 and a byte order mark pass, and ``NaN`` is a number), then checked field by
field in declaration order, unknown fields last.

The usual body, plain UTF-8 with valid fields, is read by orjson and checked inline.
orjson is stricter than ``json.loads`` (no ``NaN``, no lone surrogates, no byte order
mark, integers past 64 bits read as floats), so whatever it refuses or reads otherwise
falls to the exact reading, never to a different verdict.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import orjson

from quotad.domain.credits import reservation_ttl
from quotad.errors import BadRequest, FieldError, ValidationFailed

KEY_MAX_LENGTH = 256
SERVICE_MAX_LENGTH = 64
COST_MAX = 10**9
COST_DEFAULT = 1
ITEMS_MAX = 100
FIELDS = ("key", "service", "cost")
_FIELD_SET = frozenset(FIELDS)
_ITEM_FIELDS = frozenset({"service", "cost"})

VerifyArgs = tuple[str, str, int]
Items = tuple[tuple[str, int], ...]
VerifyItems = tuple[str, Items]  # a key and its (service, cost) items


def verify_body(body: bytes) -> VerifyArgs | VerifyItems | ValidationFailed:
    """``(key, service, cost)`` of a verify body (``(key, items)`` for one with
    ``items``), or the validation failure to answer.

    The failure is returned, not raised: the operator's token is checked between reading
    the JSON and judging its fields, so that a caller without it learns nothing of them.

    Raises:
        BadRequest: the body is not JSON (or not readable as text at all).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        if type(data) is dict and data.keys() <= _FIELD_SET:
            key = data.get("key")
            service = data.get("service")
            cost = data.get("cost", COST_DEFAULT)
            if (
                type(key) is str
                and 0 < len(key) <= KEY_MAX_LENGTH
                and type(service) is str
                and 0 < len(service) <= SERVICE_MAX_LENGTH
                and type(cost) is int
                and 0 <= cost <= COST_MAX
            ):
                return key, service, cost
    if not body:
        return ValidationFailed(
            "a JSON body is required",
            validation_errors=[FieldError("/body", "Field required", "missing")],
        )
    data = json_value(body)
    if isinstance(data, dict) and "items" in data:
        return items_fields(data)
    return verify_fields(data)


def json_value(body: bytes) -> Any:
    """A non-empty body read as FastAPI reads a JSON body.

    Raises:
        BadRequest: the body is not JSON, or cannot be decoded, or nests too deep, or
            holds an integer of more digits than Python reads.
    """
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    except (ValueError, RecursionError):  # undecodable text, too deep, too many digits
        raise BadRequest("There was an error parsing the body") from None


def verify_fields(data: Any) -> VerifyArgs | ValidationFailed:
    """``(key, service, cost)`` of a JSON value, or every way in which it is not a verify body."""
    if not isinstance(data, dict):
        return _invalid(
            [
                FieldError(
                    "/body",
                    "Input should be a valid dictionary or object to extract fields from",
                    "model_attributes_type",
                )
            ]
        )
    problems: list[FieldError] = []
    key = _text(data, "key", KEY_MAX_LENGTH, problems)
    service = _text(data, "service", SERVICE_MAX_LENGTH, problems)
    cost = _cost(data.get("cost", COST_DEFAULT), problems)
    problems += [
        FieldError(f"/body/{name}", "Extra inputs are not permitted", "extra_forbidden")
        for name in data
        if name not in _FIELD_SET
    ]
    if problems or key is None or service is None or cost is None:
        return _invalid(problems)
    return key, service, cost


def items_fields(data: dict[str, Any]) -> VerifyItems | ValidationFailed:
    """``(key, items)`` of a JSON object with ``items``, or every way it is not one."""
    problems: list[FieldError] = []
    key = _text(data, "key", KEY_MAX_LENGTH, problems)
    problems += [
        FieldError(
            f"/body/{name}",
            "service and cost are given per item when items is given",
            "exclusive",
            "send either service and cost, or items",
        )
        for name in ("service", "cost")
        if name in data
    ]
    problems += [
        FieldError(f"/body/{name}", "Extra inputs are not permitted", "extra_forbidden")
        for name in data
        if name not in _FIELD_SET and name != "items"
    ]
    items = _items(data["items"], problems)
    if problems or key is None or items is None:
        return _invalid(problems)
    return key, items


def _items(value: Any, problems: list[FieldError]) -> Items | None:
    pointer = "/body/items"
    if not isinstance(value, list):
        problems.append(FieldError(pointer, "Input should be a valid list", "list_type"))
        return None
    if not value:
        problems.append(FieldError(pointer, "List should have at least 1 item", "too_short"))
        return None
    if len(value) > ITEMS_MAX:
        message = f"List should have at most {ITEMS_MAX} items"
        problems.append(FieldError(pointer, message, "too_long"))
        return None
    before = len(problems)
    items: list[tuple[str, int]] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        where = f"{pointer}/{index}"
        if not isinstance(item, dict):
            message = "Input should be a valid dictionary or object to extract fields from"
            problems.append(FieldError(where, message, "model_attributes_type"))
            continue
        item_problems: list[FieldError] = []
        service = _text(item, "service", SERVICE_MAX_LENGTH, item_problems)
        cost = _cost(item.get("cost", COST_DEFAULT), item_problems)
        item_problems += [
            FieldError(f"/body/{name}", "Extra inputs are not permitted", "extra_forbidden")
            for name in item
            if name not in _ITEM_FIELDS
        ]
        # The item's pointers: /body/items/<index>/<field>.
        problems += [
            replace(problem, path=problem.path.replace("/body", where, 1))
            for problem in item_problems
        ]
        if service is None or cost is None:
            continue
        if service in seen:
            problems.append(
                FieldError(
                    f"{where}/service",
                    f"the service {service!r} is named by an earlier item",
                    "unique",
                    "one item per service, with the sum of the costs",
                )
            )
        seen.add(service)
        items.append((service, cost))
    return tuple(items) if len(problems) == before else None


def _invalid(problems: list[FieldError]) -> ValidationFailed:
    return ValidationFailed("the request failed validation", validation_errors=problems)


def _text(
    data: dict[str, Any], name: str, max_length: int, problems: list[FieldError]
) -> str | None:
    pointer = f"/body/{name}"
    if name not in data:
        problems.append(FieldError(pointer, "Field required", "missing"))
        return None
    value = data[name]
    if not isinstance(value, str):
        problems.append(FieldError(pointer, "Input should be a valid string", "string_type"))
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which json.loads lets through
        message = "Input should be a valid string, unable to parse raw data as a unicode string"
        problems.append(FieldError(pointer, message, "string_unicode"))
        return None
    if not value:
        problems.append(
            FieldError(pointer, "String should have at least 1 character", "string_too_short")
        )
        return None
    if len(value) > max_length:
        message = f"String should have at most {max_length} characters"
        problems.append(FieldError(pointer, message, "string_too_long"))
        return None
    return value


def _cost(value: Any, problems: list[FieldError]) -> int | None:
    pointer = "/body/cost"
    if type(value) is float and value.is_integer():
        value = int(value)  # JSON Schema's integer: 3.0 is the integer 3
    if type(value) is not int:  # neither a bool, nor a fraction, nor a numeric string
        problems.append(FieldError(pointer, "Input should be a valid integer", "int_type"))
        return None
    if value < 0:
        message = "Input should be greater than or equal to 0"
        problems.append(FieldError(pointer, message, "greater_than_equal"))
        return None
    if value > COST_MAX:
        message = f"Input should be less than or equal to {COST_MAX}"
        problems.append(FieldError(pointer, message, "less_than_equal"))
        return None
    return value


# Reservations (SPEC 10): ``"reserve": true`` and ``"ttl_seconds"`` beside either form.
RESERVE_FIELDS = frozenset({"reserve", "ttl_seconds"})


def verify_request(
    body: bytes,
) -> tuple[VerifyArgs | VerifyItems, int | None] | ValidationFailed:
    """``verify_body``'s answer and the reservation's TTL in seconds (None: no
    reservation asked), or the validation failure to answer.

    A body that does not name a reservation field is ``verify_body``'s alone, untouched
    (the hot path pays one substring search).

    Raises:
        BadRequest: the body is not JSON.
    """
    if b'"reserve"' not in body and b'"ttl_seconds"' not in body:
        parsed = verify_body(body)
        return parsed if isinstance(parsed, ValidationFailed) else (parsed, None)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = json_value(body)
    if not isinstance(data, dict) or not data.keys() & RESERVE_FIELDS:
        parsed = verify_body(body)
        return parsed if isinstance(parsed, ValidationFailed) else (parsed, None)
    problems: list[FieldError] = []
    ttl = _reservation(data, problems)
    rest = {name: value for name, value in data.items() if name not in RESERVE_FIELDS}
    args = items_fields(rest) if "items" in rest else verify_fields(rest)
    if isinstance(args, ValidationFailed):
        return _invalid([*args.validation_errors, *problems])
    if problems:
        return _invalid(problems)
    return args, ttl


def _reservation(data: dict[str, Any], problems: list[FieldError]) -> int | None:
    """The TTL of the reservation ``data`` asks for (None: none asked)."""
    reserve = data.get("reserve", False)
    if type(reserve) is not bool:
        problems.append(FieldError("/body/reserve", "Input should be a valid boolean", "bool_type"))
        return None
    if not reserve:
        if "ttl_seconds" in data:
            problems.append(
                FieldError(
                    "/body/ttl_seconds",
                    "ttl_seconds is given only with reserve: true",
                    "dependent",
                    "send reserve: true, or no ttl_seconds",
                )
            )
        return None
    try:
        return reservation_ttl(data.get("ttl_seconds"))
    except ValueError as exc:
        problems.append(FieldError("/body/ttl_seconds", str(exc), "int_range"))
        return None
