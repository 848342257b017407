"""The segment rule language: validated, then compiled to one ``Q`` over ``communication.User``.

A rule is ``{"all": [rule, …]}``, ``{"any": [rule, …]}``, ``{"not": rule}`` or a condition
``{"field": …, "op": …, "value": …}``. Fields and the operators each takes:

=====================  =========================================================================
``locale``,            ``eq`` (string), ``in`` (strings), ``contains`` (substring),
``timezone``,          ``exists`` (true: not empty)
``organization``
``roles``              ``contains`` (a role), ``in`` (any of the roles), ``eq`` (exactly these
                       roles, in any order), ``exists`` (true: at least one role)
``created_at``         ``gt`` / ``lt`` (ISO 8601 date-time), ``within_days`` (a whole number)
``attributes.<key>``   ``eq`` / ``in`` (string, number or boolean), ``contains`` (an array
                       holding the value, or a string holding the substring), ``gt`` / ``lt``
                       (numbers), ``exists`` (the key is present)
``event.<type>``       ``within_days``: an analytics event of that type in the last N days;
                       optional ``"campaign"`` and/or ``"step"`` (UUIDs) narrow it to the
                       events of that campaign or step (``clicked`` step 1)
``consent``            ``eq`` (true / false): the latest consent record for the category (or
                       for every category), on any channel, grants it
``consent.<channel>``  ``eq`` (true / false): the consent a send on that channel checks: the
                       latest record for the category or every category, and that channel or
                       every channel, grants it
``preferences.         ``eq`` (true / false): the user receives the category on that channel
<channel>``            (no preference row: yes; a mandatory category: always yes)
=====================  =========================================================================

``consent`` and ``preferences`` are about a category: they compile only with one
(``compile_rules(rules, category=key)``, a campaign's category; a segment's preview takes
``?category=``) and are refused without one, naming the rule.

Every condition is false, never SQL ``NULL``, for a user lacking the attribute, so that ``not``
of a condition holds for exactly the users the condition does not match.

:func:`validate` raises a DRF ``ValidationError`` whose keys are the path of the offending part
(``all[1].op``); under a serializer's ``rules`` field the API answers ``rules.all[1].op``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from django.db.models import (
    BooleanField,
    Exists,
    F,
    Func,
    JSONField,
    OuterRef,
    Q,
    Subquery,
    TextField,
    Value,
)
from django.db.models.fields.json import (
    DataContains,
    HasKey,
    KeyTextTransform,
    KeyTransform,
    KeyTransformExact,
    KeyTransformGt,
    KeyTransformIn,
    KeyTransformLt,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import Contains, Exact
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError

from analytics.models import Event
from communication.models import Category
from notifications.models import Channel, Consent, NotificationPreference

MAX_DEPTH = 10
MAX_RULES = 100
MAX_VALUES = 1000  # items of an ``in`` list
MAX_STRING = 1000
MAX_DAYS = 3650

STRING_FIELDS = ("locale", "timezone", "organization")
FIELDS = (
    *STRING_FIELDS,
    "roles",
    "created_at",
    "attributes.<key>",
    "event.<type>",
    "consent",
    "consent.<channel>",
    "preferences.<channel>",
)
OPS = ("eq", "in", "contains", "gt", "lt", "exists", "within_days")
OPS_BY_FIELD: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(STRING_FIELDS, ("eq", "in", "contains", "exists")),
    "roles": ("eq", "in", "contains", "exists"),
    "created_at": ("gt", "lt", "within_days"),
    "attributes": ("eq", "in", "contains", "gt", "lt", "exists"),
    "event": ("within_days",),
    "consent": ("eq",),
    "preferences": ("eq",),
}
CATEGORY_FIELDS = ("consent", "preferences")  # they need the campaign's category
CHANNELS = tuple(Channel.values)
EVENT_QUALIFIERS = ("campaign", "step")
# No "__" (the ORM's separator), though keys are only ever passed to expressions, never parsed.
ATTRIBUTE_KEY = re.compile(r"(?!.*__)[A-Za-z_][A-Za-z0-9_-]{0,63}")
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,39}")
UUID = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
NUL = "\x00"


class _RuleError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate(rules: Any) -> None:
    """Checks a rule document; raises ``ValidationError({path: [message]})`` at the first fault.

    Depth and size are checked before anything below them is read, so a document of any size or
    depth costs at most ``MAX_RULES`` steps.
    """
    try:
        _check(rules)
    except _RuleError as exc:
        raise ValidationError({exc.path or "non_field_errors": [exc.message]}) from None


def _check(rules: Any) -> list[str]:
    """Raises ``_RuleError`` at the first fault; returns the paths of the conditions that need a
    category."""
    needs_category: list[str] = []
    count = 0
    stack: list[tuple[str, Any, int]] = [("", rules, 1)]
    while stack:
        path, node, depth = stack.pop()
        count += 1
        if count > MAX_RULES:
            raise _RuleError("", f"At most {MAX_RULES} rules in a segment.")
        if depth > MAX_DEPTH:
            raise _RuleError(path, f"Rules nest at most {MAX_DEPTH} deep.")
        if not isinstance(node, dict):
            raise _RuleError(path, "A rule must be an object.")
        if "field" in node or "op" in node:
            _check_condition(path, node)
            if str(node["field"]).partition(".")[0] in CATEGORY_FIELDS:
                needs_category.append(path)
            continue
        if len(node) != 1 or next(iter(node)) not in ("all", "any", "not"):
            raise _RuleError(
                path,
                'A rule is {"all": […]}, {"any": […]}, {"not": rule} or '
                '{"field": …, "op": …, "value": …}.',
            )
        key, child = next(iter(node.items()))
        if key == "not":
            stack.append((_join(path, "not"), child, depth + 1))
            continue
        if not isinstance(child, list) or not child:
            raise _RuleError(_join(path, key), "Must be a non-empty list of rules.")
        if len(child) > MAX_RULES:
            raise _RuleError(_join(path, key), f"At most {MAX_RULES} rules in a segment.")
        # Reversed, so that the first faulty rule of a list is the one reported.
        for i in reversed(range(len(child))):
            stack.append((f"{_join(path, key)}[{i}]", child[i], depth + 1))
    return needs_category


def _check_condition(path: str, node: dict[str, Any]) -> None:
    keys = {"field", "op", "value"}
    if isinstance(node.get("field"), str) and node["field"].startswith("event."):
        keys.update(EVENT_QUALIFIERS)
    extra = sorted(set(node) - keys, key=str)
    if extra:
        raise _RuleError(_join(path, str(extra[0]).replace(NUL, "\\u0000")), "Unknown key.")
    for key in ("field", "op", "value"):
        if key not in node:
            raise _RuleError(_join(path, key), "This key is required.")
    field, op, value = node["field"], node["op"], node["value"]
    field_path, op_path, value_path = (_join(path, k) for k in ("field", "op", "value"))
    if isinstance(field, str) and NUL in field:
        raise _RuleError(field_path, "NUL characters are not allowed.")
    if not isinstance(field, str):
        raise _RuleError(field_path, f"Unknown field. Fields: {', '.join(FIELDS)}.")
    base, _, key = field.partition(".")
    if base in ("attributes", "event"):
        pattern = ATTRIBUTE_KEY if base == "attributes" else EVENT_TYPE
        if not pattern.fullmatch(key):
            raise _RuleError(
                field_path,
                "Attribute keys are letters, digits, '_' and '-' (at most 64)."
                if base == "attributes"
                else "Event types are lower-case letters, digits and '_' (at most 40).",
            )
    elif base == "preferences" or (base == "consent" and key):
        if key not in CHANNELS:
            raise _RuleError(
                field_path,
                f"Unknown field {field[:60]!r}: {base}.<channel> with a channel of "
                f"{', '.join(CHANNELS)}.",
            )
    elif key or base not in OPS_BY_FIELD:
        raise _RuleError(field_path, f"Unknown field {field!r}. Fields: {', '.join(FIELDS)}.")
    if isinstance(op, str) and NUL in op:
        raise _RuleError(op_path, "NUL characters are not allowed.")
    if not isinstance(op, str) or op not in OPS:
        shown = repr(op[:40]) if isinstance(op, str) else "this"
        raise _RuleError(op_path, f"Unknown operator {shown}. Operators: {', '.join(OPS)}.")
    allowed = OPS_BY_FIELD[base]
    if op not in allowed:
        raise _RuleError(op_path, f"{base} takes the operators: {', '.join(allowed)}.")
    message = _value_error(base, op, value)
    if message:
        raise _RuleError(value_path, message)
    for qualifier in EVENT_QUALIFIERS:
        if qualifier in node and not (
            isinstance(node[qualifier], str) and UUID.fullmatch(node[qualifier])
        ):
            raise _RuleError(_join(path, qualifier), f"Must be the {qualifier}'s id (a UUID).")


def _is_number(value: Any) -> bool:
    # Finite only: jsonb has no NaN or infinity (the admin's JSON parser accepts them).
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_string(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STRING and NUL not in value


def _is_scalar(value: Any) -> bool:
    return _is_string(value) or _is_number(value) or isinstance(value, bool)


def _value_error(base: str, op: str, value: Any) -> str | None:
    """Why ``value`` does not suit ``op`` on ``base``; None when it does."""
    if isinstance(value, str) and NUL in value:
        return "NUL characters are not allowed."
    if op == "exists":
        return None if isinstance(value, bool) else "Must be true or false."
    if base in CATEGORY_FIELDS:
        return None if isinstance(value, bool) else "Must be true or false."
    if op == "within_days":
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DAYS
        return None if ok else f"Must be a whole number of days from 1 to {MAX_DAYS}."
    if base == "created_at":
        return None if _parse_moment(value) else "Must be an ISO 8601 date-time."
    if op == "in" or (base == "roles" and op == "eq"):
        check = _is_scalar if base == "attributes" else _is_string
        if not isinstance(value, list) or not (0 < len(value) <= MAX_VALUES):
            return f"Must be a list of 1 to {MAX_VALUES} values."
        if not all(check(v) for v in value):
            return (
                "Every value must be a string"
                + (", number or boolean." if base == "attributes" else ".")
                + f" (at most {MAX_STRING} characters)."
            )
        return None
    if op in ("gt", "lt"):  # attributes only
        return None if _is_number(value) else "Must be a number."
    if base == "attributes" and op == "eq":
        return None if _is_scalar(value) else "Must be a string, number or boolean."
    if not _is_string(value) or (op == "contains" and not value):
        return f"Must be a non-empty string of at most {MAX_STRING} characters."
    return None


def _parse_moment(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:  # an offset may carry year 1 or 9999 past what a datetime holds
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        return None


KEY_LOOKUPS = {
    "exact": KeyTransformExact,
    "in": KeyTransformIn,
    "gt": KeyTransformGt,
    "lt": KeyTransformLt,
}


class _JsonbTypeof(Func):
    function = "jsonb_typeof"
    output_field = TextField()


def compile_rules(rules: Any, *, category: str | None = None, now: dt.datetime | None = None) -> Q:
    """The ``Q`` over ``communication.User`` that ``rules`` (validated here) stands for.

    ``category`` (a category's key) is what ``consent`` and ``preferences`` are about; rules
    using them without one are refused (``ValidationError`` naming the rule). ``now`` anchors
    ``within_days`` (default: the current time).
    """
    try:
        needs_category = _check(rules)
    except _RuleError as exc:
        raise ValidationError({exc.path or "non_field_errors": [exc.message]}) from None
    if needs_category and not category:
        path = _join(needs_category[0], "field")
        raise ValidationError(
            {path: ["Consent and preferences are per category: give the campaign's category."]}
        )
    return _compile(rules, now or timezone.now(), category or "")


def _compile(node: dict[str, Any], now: dt.datetime, category: str) -> Q:
    # Depth is bounded by validate() (MAX_DEPTH), so recursion is safe here.
    if "all" in node:
        q = Q()
        for child in node["all"]:
            q &= _compile(child, now, category)
        return q
    if "any" in node:
        q = Q()
        for child in node["any"]:
            q |= _compile(child, now, category)
        return q
    if "not" in node:
        return ~_compile(node["not"], now, category)
    return _condition(node, now, category)


def _condition(node: dict[str, Any], now: dt.datetime, category: str) -> Q:
    field, op, value = node["field"], node["op"], node["value"]
    base, _, key = field.partition(".")
    if base == "event":
        since = now - dt.timedelta(days=value)
        qualifiers = {f"{name}_id": node[name] for name in EVENT_QUALIFIERS if name in node}
        return Q(
            Exists(
                Event.objects.filter(
                    user_id=OuterRef("pk"), type=key, occurred_at__gte=since, **qualifiers
                )
            )
        )
    if base == "consent":
        return _consent(category, key, value)
    if base == "preferences":
        return _preference(category, key, value)
    if base == "created_at":
        if op == "within_days":
            return Q(created_at__gte=now - dt.timedelta(days=value))
        return Q(**{f"created_at__{op}": _parse_moment(value)})
    if base == "roles":
        if op == "exists":
            return ~Q(roles=[]) if value else Q(roles=[])
        if op == "contains":
            return Q(roles__contains=[value])
        if op == "in":
            return Q(roles__overlap=value)
        return Q(roles__contains=value, roles__contained_by=value)  # eq: the same set
    if base == "attributes":
        return _attribute(key, op, value)
    if op == "exists":
        return ~Q(**{base: ""}) if value else Q(**{base: ""})
    lookup = {"eq": "exact", "in": "in", "contains": "contains"}[op]
    return Q(**{f"{base}__{lookup}": value})


def _attribute(key: str, op: str, value: Any) -> Q:
    # ``attributes -> key`` is NULL when the key is absent: each test is ANDed with ``has_key``
    # (FALSE AND NULL is FALSE), so that a ``not`` around it includes the users without the key.
    # Keys go into expressions, never into ``attributes__<key>`` keyword lookups, where a key
    # named like a lookup (``in``, ``contains``) would be read as one.
    present = Q(HasKey(F("attributes"), key))
    if op == "exists":
        return present if value else ~present
    element = KeyTransform(key, "attributes")

    def lookup(name: str, rhs: Any) -> Q:
        # The right-hand side as jsonb: a lookup built outside a queryset cannot convert a plain
        # value itself (its left-hand side has no field yet).
        rhs = [_json(v) for v in rhs] if isinstance(rhs, list) else _json(rhs)
        return Q(KEY_LOOKUPS[name](element, rhs))

    if op in ("eq", "in"):
        return present & lookup("exact" if op == "eq" else "in", value)
    if op in ("gt", "lt"):
        # jsonb orders values of different types too (a string below any number): numbers only.
        is_number = Q(Exact(_JsonbTypeof(element), "number"))
        return present & is_number & lookup(op, value)
    # contains: an array holding the value (jsonb @>), or a string holding the substring.
    is_string = Q(Exact(_JsonbTypeof(element), "string"))
    substring = Q(Contains(KeyTextTransform(key, "attributes"), value))
    return present & (Q(DataContains(element, _json(value))) | (is_string & substring))


def _consent(category: str, channel: str, granted: bool) -> Q:
    # As single sends decide (``notifications.resolution``): the latest record whose scope
    # covers the category (or every category) and the channel (or every channel) wins; none
    # is no consent. Coalesce keeps the condition true or false, never NULL, under a ``not``.
    records = Consent.objects.filter(
        Q(category__isnull=True) | Q(category_id=category), user_id=OuterRef("pk")
    )
    if channel:
        records = records.filter(channel__in=("", channel))
    latest = Subquery(records.order_by("-created_at", "-id").values("granted")[:1])
    return Q(Exact(Coalesce(latest, Value(False), output_field=BooleanField()), granted))


def _preference(category: str, channel: str, enabled: bool) -> Q:
    # As ``resolution.channels_for``: no row is the default (on), and a mandatory category
    # cannot be turned off.
    chosen = Subquery(
        NotificationPreference.objects.filter(
            user_id=OuterRef("pk"), category_id=category, channel=channel
        ).values("enabled")[:1]
    )
    on = Q(Exact(Coalesce(chosen, Value(True), output_field=BooleanField()), True)) | Q(
        Exists(Category.objects.filter(key=category, mandatory=True))
    )
    return on if enabled else ~on


def _json(value: Any) -> Value:
    return Value(value, output_field=JSONField())


def audience_filter() -> Q:
    """Who may be in any segment: active users with an identity (``external_id``, the
    ``user_id`` every API speaks and notification sends resolve)."""
    return Q(is_active=True, external_id__isnull=False)
