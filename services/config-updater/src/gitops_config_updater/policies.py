"""Image policies: whether a newly pushed tag replaces the one in Git as an upgrade.

A registry tells us about one tag at a time, so instead of picking the latest of a tag list
(as Flux does) the updater compares the pushed tag with the tag already written in Git, under
the image's policy: a semver range (Masterminds syntax, which Flux users already write:
`>=1.2.0 <2.0.0`, `^1.2`, `~1.2`, `1.x`, `1.2 - 1.4`, `||`), a regex filter with an extracted
value compared numerically or alphabetically, or the tag itself as a number or a string.
A tag is written only when it fits the policy and is strictly newer than what is in Git, so a
late or replayed event can never move an environment backwards. A tag in Git that does not fit
the policy at all (`latest`, say) is replaced by any tag that does.

Versions are compared with the `semver` package; the range syntax is parsed here because that
package only knows single comparisons.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import semver

from gitops_config.models import (
    AlphabeticalPolicy,
    NumericalPolicy,
    RegexPolicy,
    SemverPolicy,
)

Policy = SemverPolicy | RegexPolicy | NumericalPolicy | AlphabeticalPolicy


class Verdict(StrEnum):
    """How a pushed tag compares with the tag in Git under the image's policy."""

    UPGRADE = "upgrade"
    CURRENT = "current"
    OLDER = "older"
    REJECTED = "rejected"


# --- Semver ranges -----------------------------------------------------------------------------

_PARTIAL_RE = re.compile(
    r"v?(?P<major>0|[1-9][0-9]*|[xX*])(?:\.(?P<minor>0|[1-9][0-9]*|[xX*]))?"
    r"(?:\.(?P<patch>0|[1-9][0-9]*|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_COMPARATOR_RE = re.compile(r"(?P<op>>=|<=|!=|~>|[<>=^~])?(?P<version>.+)")
_OPERATOR_SPACE_RE = re.compile(r"(>=|<=|!=|~>|[<>=^~])\s+")
_HYPHEN_RE = re.compile(r"(?P<low>\S+)\s+-\s+(?P<high>\S+)")
_TAG_RE = re.compile(r"v?(?P<version>(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-+].*)?)")

_OPERATORS: dict[str, Callable[[semver.Version, semver.Version], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class _Bound:
    op: str
    version: semver.Version

    def admits(self, version: semver.Version) -> bool:
        return _OPERATORS[self.op](version, self.version)


def _floor(version: semver.Version) -> semver.Version:
    """The lowest version at `version`, pre-releases included (`1.3.0-0`)."""
    return semver.Version(version.major, version.minor, version.patch, prerelease="0")


def _expand(op: str, text: str) -> list[_Bound]:
    """The comparisons one range token means (`^1.2` is `>=1.2.0 <2.0.0-0`)."""
    match = _PARTIAL_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a version")
    parts: list[int] = []
    for name in ("major", "minor", "patch"):
        value = match.group(name)
        if value is None or value in "xX*":
            break
        parts.append(int(value))
    major, minor, patch = [*parts, 0, 0, 0][:3]
    low = semver.Version(major, minor, patch, prerelease=match.group("pre"))
    if len(parts) == 3:
        if op in ("", "="):
            return [_Bound("=", low)]
        if op in ("~", "~>"):
            return [_Bound(">=", low), _Bound("<", _floor(low.bump_minor()))]
        if op == "^":
            upper = (
                low.bump_major()
                if low.major
                else (low.bump_minor() if low.minor else semver.Version(0, 0, low.patch + 1))
            )
            return [_Bound(">=", low), _Bound("<", _floor(upper))]
        return [_Bound(op, low)]
    nxt: semver.Version | None
    if not parts:
        nxt = None
    elif len(parts) == 1:
        nxt = low.bump_major()
    else:
        nxt = low.bump_minor()
    if op == "^" and len(parts) == 2 and low.major:
        nxt = low.bump_major()
    if op in ("", "=", "~", "~>", "^"):
        return [_Bound(">=", low)] + ([_Bound("<", _floor(nxt))] if nxt else [])
    if op == ">=":
        return [_Bound(">=", low)]
    if op == ">":
        return [_Bound(">=", _floor(nxt))] if nxt else [_Bound("<", _floor(low))]
    if op == "<":
        return [_Bound("<", _floor(low))]
    if op == "<=":
        return [_Bound("<", _floor(nxt))] if nxt else [_Bound(">=", low)]
    return [_Bound("!=", low)]


@dataclass(frozen=True)
class SemverRange:
    """A parsed semver range: alternatives (`||`) of comparisons that must all hold."""

    alternatives: tuple[tuple[_Bound, ...], ...]

    @classmethod
    def parse(cls, text: str) -> SemverRange:
        """Parse a Masterminds-style range; `ValueError` when it is not one."""
        alternatives: list[tuple[_Bound, ...]] = []
        for alternative in text.split("||"):
            alternative = alternative.strip()
            hyphen = _HYPHEN_RE.fullmatch(alternative)
            if hyphen is not None:
                bounds = _expand(">=", hyphen.group("low")) + _expand("<=", hyphen.group("high"))
                alternatives.append(tuple(bounds))
                continue
            tokens = [
                t for t in re.split(r"[\s,]+", _OPERATOR_SPACE_RE.sub(r"\1", alternative)) if t
            ]
            if not tokens:
                raise ValueError(f"{text!r} has an empty alternative")
            found: list[_Bound] = []
            for token in tokens:
                comparator = _COMPARATOR_RE.fullmatch(token)
                if comparator is None:
                    raise ValueError(f"{token!r} is not a comparison")
                found += _expand(comparator.group("op") or "", comparator.group("version"))
            alternatives.append(tuple(found))
        return cls(tuple(alternatives))

    def admits(self, version: semver.Version) -> bool:
        """Whether `version` satisfies every comparison of some alternative."""
        return any(all(b.admits(version) for b in bounds) for bounds in self.alternatives)


def parse_tag(tag: str) -> semver.Version | None:
    """The semantic version a tag names (`v` prefix allowed), None when it names none."""
    match = _TAG_RE.fullmatch(tag)
    if match is None:
        return None
    try:
        return semver.Version.parse(match.group("version"))
    except ValueError:
        return None


# --- Ordering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Descending:
    """Reverses the order of what it wraps (for `order: desc`)."""

    value: Decimal | str


Key = semver.Version | Decimal | str | _Descending


def _less(a: Key, b: Key) -> bool:
    """`a < b` for two keys of one policy (always of one type)."""
    if isinstance(a, semver.Version) and isinstance(b, semver.Version):
        return bool(a < b)
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a < b
    if isinstance(a, str) and isinstance(b, str):
        return a < b
    if isinstance(a, _Descending) and isinstance(b, _Descending):
        return _less(b.value, a.value)
    raise TypeError(f"cannot compare {type(a).__name__} with {type(b).__name__}")


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def sort_key(policy: Policy, tag: str) -> Key | None:
    """What `tag` is compared by under `policy`; None when the tag does not fit the policy."""
    if isinstance(policy, SemverPolicy):
        version = parse_tag(tag)
        if version is None or (version.prerelease and not policy.prereleases):
            return None
        return version if SemverRange.parse(policy.range).admits(version) else None
    if isinstance(policy, RegexPolicy):
        extracted = policy.extract_from(tag)
        if extracted is None:
            return None
        return _number(extracted) if policy.order == "numerical" else extracted
    if isinstance(policy, NumericalPolicy):
        number = _number(tag)
        if number is None:
            return None
        return number if policy.order == "asc" else _Descending(number)
    return tag if policy.order == "asc" else _Descending(tag)


def compare(policy: Policy, candidate: str, current: str | None) -> Verdict:
    """Whether `candidate` should replace `current` (the tag in Git, None if it has none)."""
    new = sort_key(policy, candidate)
    if new is None:
        return Verdict.REJECTED
    if current is None or candidate == current:
        return Verdict.UPGRADE if current is None else Verdict.CURRENT
    old = sort_key(policy, current)
    if old is None:
        return Verdict.UPGRADE
    if new == old:
        return Verdict.CURRENT
    return Verdict.UPGRADE if _less(old, new) else Verdict.OLDER


def describe(policy: Policy) -> str:
    """The policy in a few words, for commit messages and logs."""
    if isinstance(policy, SemverPolicy):
        suffix = ", pre-releases" if policy.prereleases else ""
        return f"semver {policy.range}{suffix}"
    if isinstance(policy, RegexPolicy):
        return f"regex {policy.pattern} ({policy.order})"
    return f"{policy.kind} {policy.order}"
