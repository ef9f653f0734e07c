"""Rules that check one field of a config and return its value in canonical Python form.

A rule is a callable `rule(value) -> value`. It accepts what a user or a JSON file may reasonably give (numpy
integers for sizes, ints for floats) and returns plain Python values (`int`, `float`, `bool`, `str`, tuples), so
that a config serializes to plain JSON. On a bad value it raises `ValueError("must be ..., got ...")`; the caller
puts the field's name in front.
"""

import math
import numbers
import operator


def _shown(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _as_int(value):
    """`value` as an int (numpy and torch integers included), or None for bools, floats, strings and the rest."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _as_float(value):
    """`value` as a float (ints and numpy numbers included), or None for bools, strings and the rest."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def integer(*, at_least: int = 1, odd: bool = False, reason: str = ""):
    """An integer >= `at_least` (odd if `odd`); `reason` explains the constraint in the message."""
    wanted = f"an {'odd ' if odd else ''}integer >= {at_least}{reason}"

    def rule(value):
        number = _as_int(value)
        if number is None or number < at_least or (odd and number % 2 == 0):
            raise ValueError(f"must be {wanted}, got {_shown(value)}")
        return number

    return rule


def real(*, above=None, at_least=None, below=None, at_most=None, reason: str = ""):
    """A finite number within the given bounds (`above`/`below` exclusive, `at_least`/`at_most` inclusive)."""
    bounds = [f"{sign} {bound}" for sign, bound in ((">", above), (">=", at_least), ("<", below), ("<=", at_most))
              if bound is not None]
    wanted = "a finite number" + (f" {' and '.join(bounds)}" if bounds else "") + reason

    def rule(value):
        number = _as_float(value)
        if (number is None or not math.isfinite(number)
                or (above is not None and not number > above) or (at_least is not None and not number >= at_least)
                or (below is not None and not number < below) or (at_most is not None and not number <= at_most)):
            raise ValueError(f"must be {wanted}, got {_shown(value)}")
        return number

    return rule


def boolean(value):
    """True or False; strings such as "false" and integers such as 0 are refused, not interpreted."""
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {_shown(value)}")
    return value


def one_of(choices):
    """One of the strings `choices` (any container of names; its keys for a mapping)."""
    names = tuple(choices)

    def rule(value):
        if not isinstance(value, str) or value not in names:
            raise ValueError(f"must be one of {', '.join(map(repr, names))}; got {_shown(value)}")
        return value

    return rule


def name(value):
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {_shown(value)}")
    return value


def optional(rule):
    """None, or a value that `rule` accepts."""

    def optional_rule(value):
        return None if value is None else rule(value)

    return optional_rule


# The JSON form of the +inf upper bound in a (low, high) pair: JSON has no infinity. Older files hold
# transformers' tagged form {"__float__": "Infinity"}, which is read as well.
UNBOUNDED_JSON = None
_TAGGED_INFINITY = {"__float__": "Infinity"}


def bounds_pair(value):
    """(low, high) with 0 <= low < high; low finite, high a number or +inf (`UNBOUNDED_JSON` or the tagged form)."""
    wanted = "a pair (low, high) of numbers with 0 <= low < high (high may be +inf, written null in JSON)"
    try:
        items = list(value) if not isinstance(value, (str, bytes, dict)) else None
    except TypeError:
        items = None
    if items is None or len(items) != 2:
        raise ValueError(f"must be {wanted}, got {_shown(value)}")
    low = _as_float(items[0])
    high = math.inf if items[1] is UNBOUNDED_JSON or items[1] == _TAGGED_INFINITY else _as_float(items[1])
    if low is None or high is None or not math.isfinite(low) or math.isnan(high) or not 0.0 <= low < high:
        raise ValueError(f"must be {wanted}, got {value!r}")
    return (low, high)


def bounds_pair_to_json(pair) -> list:
    """The JSON form of a `bounds_pair` value: [low, high] with +inf written as `UNBOUNDED_JSON`."""
    low, high = pair
    return [low, UNBOUNDED_JSON if high == math.inf else high]
