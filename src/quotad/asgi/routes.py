"""Path patterns, per-route costs and services by path: what the middleware and proxy match.

One rule everywhere: a pattern is a path; it matches that path exactly, unless it ends in
``/``, when it matches every path starting with it (``/`` matches every path). When
several patterns match, the most specific wins: an exact path over a prefix, a longer
prefix over a shorter one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quotad.http.types import Scope

# HTTP methods are tokens (RFC 9110 5.6.2); quotad takes them in capitals.
_METHOD = re.compile(r"[A-Z]+")


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is a path pattern (starts with ``/``, no query, no spaces).

    Raises:
        ValueError: it is not.
    """
    if not pattern.startswith("/") or any(char in pattern for char in "?# \t"):
        msg = f"a path must start with / and have no query or spaces, not {pattern!r}"
        raise ValueError(msg)
    return pattern


def matches(pattern: str, path: str) -> bool:
    """Whether ``path`` is ``pattern``, or under it when ``pattern`` ends in ``/``."""
    if pattern.endswith("/"):
        return path.startswith(pattern)
    return path == pattern


def specificity(pattern: str) -> tuple[bool, int]:
    """Sort key of a matching pattern: exact paths first, then longer prefixes."""
    return (not pattern.endswith("/"), len(pattern))


@dataclass(frozen=True, slots=True)
class CostRule:
    """``cost`` units for requests whose path matches ``path`` (and method, if given)."""

    path: str
    cost: int
    method: str | None = None

    @classmethod
    def parse(cls, spec: str) -> CostRule:
        """A rule from ``"[METHOD ]PATH=UNITS"``, e.g. ``"POST /v1/search=5"``, ``"/reports/=2"``.

        Raises:
            ValueError: the text is not of that form, or the units are not a whole number >= 0.
        """
        target, sep, units = spec.rpartition("=")
        words = target.split()
        if not sep or len(words) not in (1, 2):
            msg = f"a cost is UNITS or '[METHOD ]PATH=UNITS' ('POST /v1/search=5'), not {spec!r}"
            raise ValueError(msg)
        method = None
        if len(words) == 2:
            method = words[0].upper()
            if not _METHOD.fullmatch(method):
                msg = f"{words[0]!r} is not an HTTP method (in the cost {spec!r})"
                raise ValueError(msg)
        return cls(check_pattern(words[-1]), _units(units, spec), method)

    def applies(self, method: str, path: str) -> bool:
        """Whether this rule covers a request."""
        return (self.method is None or self.method == method) and matches(self.path, path)


def _units(text: str, spec: str) -> int:
    try:
        units = int(text.strip())
    except ValueError:
        units = -1
    if units < 0:
        msg = f"units must be a whole number >= 0, not {text.strip()!r} (in the cost {spec!r})"
        raise ValueError(msg)
    return units


class CostMap:
    """Units per request by method and path; ``default`` where no rule matches.

    The most specific matching rule wins: an exact path over a prefix, a longer prefix
    over a shorter one, then a rule naming the method over one for every method. It is a
    ``cost`` function for ``QuotadMiddleware``.

    Args:
        rules: the rules, in any order.
        default: units of a request no rule matches.
    """

    def __init__(self, rules: Iterable[CostRule] = (), default: int = 1) -> None:
        self.rules = tuple(rules)
        self.default = default

    @classmethod
    def parse(cls, specs: Iterable[str]) -> CostMap:
        """A map from ``--cost`` values: ``UNITS`` (the default, at most once) or rules.

        Raises:
            ValueError: a value is neither, or the default is given twice.
        """
        rules: list[CostRule] = []
        default: int | None = None
        for spec in specs:
            if "=" not in spec:
                if default is not None:
                    msg = f"the default cost is given twice ({default} and {spec!r})"
                    raise ValueError(msg)
                default = _units(spec, spec)
            else:
                rules.append(CostRule.parse(spec))
        return cls(rules, 1 if default is None else default)

    def cost(self, method: str, path: str) -> int:
        """The units of a request."""
        found = [rule for rule in self.rules if rule.applies(method, path)]
        if not found:
            return self.default
        best = max(found, key=lambda rule: (*specificity(rule.path), rule.method is not None))
        return best.cost

    def __call__(self, scope: Scope) -> int:
        """The units of the request of ``scope``."""
        return self.cost(scope.get("method", "GET"), scope["path"])

    def describe(self) -> str:
        """The map in the ``--cost`` syntax, for a start-up line."""
        rules = [f"{r.method + ' ' if r.method else ''}{r.path}={r.cost}" for r in self.rules]
        return ", ".join([str(self.default), *rules])


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    """Requests under ``path`` consume ``service``."""

    service: str
    path: str = "/"

    @classmethod
    def parse(cls, spec: str) -> ServiceRoute:
        """From ``"NAME"`` (every path) or ``"NAME=PATH"``, e.g. ``"insights=/insights/"``.

        Raises:
            ValueError: the name is empty or the path is not a path pattern.
        """
        name, sep, path = spec.partition("=")
        if not name.strip():
            msg = f"a service is NAME or NAME=PATH (e.g. insights=/insights/), not {spec!r}"
            raise ValueError(msg)
        return cls(name.strip(), check_pattern(path.strip()) if sep else "/")


def service_routes(specs: Iterable[str]) -> list[ServiceRoute]:
    """The ``--service`` values, checked: at least one, no path given twice.

    Raises:
        ValueError: none given, a bad value, or two services on one path.
    """
    routes = [ServiceRoute.parse(spec) for spec in specs]
    if not routes:
        msg = "at least one service is needed"
        raise ValueError(msg)
    seen: dict[str, str] = {}
    for route in routes:
        if route.path in seen:
            msg = f"{route.path} is given to two services ({seen[route.path]}, {route.service})"
            raise ValueError(msg)
        seen[route.path] = route.service
    return routes


def route_for(routes: Sequence[ServiceRoute], path: str) -> ServiceRoute | None:
    """The most specific route covering ``path``, or ``None``."""
    found = [route for route in routes if matches(route.path, path)]
    return max(found, key=lambda route: specificity(route.path)) if found else None
