"""Image policies: which pushed tags replace the tag in Git, and never a downgrade."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from gitops_config.models import Image, ImagePolicy
from gitops_config_updater import policies
from gitops_config_updater.manifests import ImageRef
from gitops_config_updater.policies import SemverRange, Verdict, compare, parse_tag
from gitops_config_updater.updating import new_reference
from gitops_events import ImagePushed

_POLICY: TypeAdapter[Any] = TypeAdapter(ImagePolicy)


def policy(**fields: Any) -> policies.Policy:
    parsed: policies.Policy = _POLICY.validate_python(fields)
    return parsed


def admits(text: str, version: str) -> bool:
    parsed = parse_tag(version)
    assert parsed is not None
    return SemverRange.parse(text).admits(parsed)


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        (">=1.2.0 <2.0.0", ["1.2.0", "1.9.9"], ["1.1.9", "2.0.0"]),
        (">=1.2.0, <2.0.0", ["1.5.0"], ["2.1.0"]),
        ("^1.2", ["1.2.0", "1.99.0"], ["1.1.0", "2.0.0"]),
        ("^1.2.3", ["1.2.3", "1.3.0"], ["1.2.2", "2.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0", "1.1.9"]),
        ("~1.2.3", ["1.2.3", "1.2.10"], ["1.3.0", "1.2.2"]),
        ("~> 1.2.3", ["1.2.4"], ["1.3.0"]),
        ("1.x", ["1.0.0", "1.9.0"], ["2.0.0", "0.9.0"]),
        ("1.2.x", ["1.2.7"], ["1.3.0"]),
        ("*", ["0.0.1", "10.0.0"], []),
        ("1.2 - 1.4.5", ["1.2.0", "1.4.5"], ["1.4.6", "1.1.0"]),
        ("1.2.3 - 2.3", ["2.3.9"], ["2.4.0"]),
        ("<1.2", ["1.1.9"], ["1.2.0"]),
        ("<=1.2", ["1.2.9"], ["1.3.0"]),
        (">1.2", ["1.3.0"], ["1.2.9"]),
        (">1.2.3", ["1.2.4"], ["1.2.3"]),
        ("!=1.2.3", ["1.2.4"], ["1.2.3"]),
        ("=1.2.3", ["1.2.3"], ["1.2.4"]),
        ("1.2.3 || >=3.0.0", ["1.2.3", "3.1.0"], ["2.0.0"]),
        ("v1.x", ["1.1.0"], ["2.0.0"]),
    ],
)
def test_semver_ranges(text: str, inside: list[str], outside: list[str]) -> None:
    for version in inside:
        assert admits(text, version), f"{version} should be inside {text}"
    for version in outside:
        assert not admits(text, version), f"{version} should be outside {text}"


def test_derived_upper_bounds_exclude_prereleases_of_the_next_version() -> None:
    assert not admits("^1.2", "2.0.0-rc.1")
    assert admits("^1.2", "1.3.0-rc.1")


def test_semver_range_that_is_not_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a version"):
        SemverRange.parse(">=banana")


@pytest.mark.parametrize(
    ("tag", "version"),
    [("1.2.3", "1.2.3"), ("v1.2.3", "1.2.3"), ("1.2.3-rc.1", "1.2.3-rc.1"), ("1.2", None)],
)
def test_tags_parse_as_full_versions(tag: str, version: str | None) -> None:
    parsed = parse_tag(tag)
    assert (None if parsed is None else str(parsed)) == version


def test_semver_upgrades_only_inside_the_range() -> None:
    semver = policy(kind="semver", range=">=1.0.0 <2.0.0")
    assert compare(semver, "1.3.0", "1.2.0") is Verdict.UPGRADE
    assert compare(semver, "1.10.0", "1.9.0") is Verdict.UPGRADE  # not a string comparison
    assert compare(semver, "1.2.0", "1.3.0") is Verdict.OLDER
    assert compare(semver, "1.2.0", "1.2.0") is Verdict.CURRENT
    assert compare(semver, "v1.2.0", "1.2.0") is Verdict.CURRENT
    assert compare(semver, "2.0.0", "1.2.0") is Verdict.REJECTED
    assert compare(semver, "latest", "1.2.0") is Verdict.REJECTED
    assert compare(semver, "1.0.0", "latest") is Verdict.UPGRADE
    assert compare(semver, "1.0.0", None) is Verdict.UPGRADE


def test_semver_prereleases_only_when_asked() -> None:
    stable = policy(kind="semver", range=">=1.0.0")
    assert compare(stable, "1.3.0-rc.1", "1.2.0") is Verdict.REJECTED
    with_pre = policy(kind="semver", range=">=1.0.0", prereleases=True)
    assert compare(with_pre, "1.3.0-rc.1", "1.2.0") is Verdict.UPGRADE
    assert compare(with_pre, "1.3.0", "1.3.0-rc.1") is Verdict.UPGRADE
    assert compare(with_pre, "1.3.0-rc.1", "1.3.0") is Verdict.OLDER
    assert compare(with_pre, "1.3.0-rc.2", "1.3.0-rc.10") is Verdict.OLDER


def test_regex_extracts_and_compares_numerically() -> None:
    regex = policy(kind="regex", pattern=r"^main-(?P<ts>[0-9]+)-[0-9a-f]+$", order="numerical")
    assert compare(regex, "main-100-abc1", "main-99-ffff") is Verdict.UPGRADE
    assert compare(regex, "main-99-abc1", "main-100-ffff") is Verdict.OLDER
    assert compare(regex, "feature-1000-abc", "main-99-ffff") is Verdict.REJECTED


def test_regex_extract_template_and_alphabetical_order() -> None:
    regex = policy(
        kind="regex",
        pattern=r"^(?P<env>rc|ga)-(?P<day>[0-9-]+)$",
        extract="$day",
        order="alphabetical",
    )
    assert compare(regex, "rc-2024-02-01", "ga-2024-01-31") is Verdict.UPGRADE
    assert compare(regex, "ga-2024-01-01", "rc-2024-01-31") is Verdict.OLDER


def test_regex_numerical_with_a_non_number_extracted_is_rejected() -> None:
    regex = policy(kind="regex", pattern=r"^build-(?P<n>.+)$", order="numerical")
    assert compare(regex, "build-abc", "build-1") is Verdict.REJECTED


def test_numerical_orders() -> None:
    ascending = policy(kind="numerical")
    assert compare(ascending, "10", "9") is Verdict.UPGRADE
    assert compare(ascending, "9", "10") is Verdict.OLDER
    assert compare(ascending, "9.5", "9") is Verdict.UPGRADE
    assert compare(ascending, "v10", "9") is Verdict.REJECTED
    descending = policy(kind="numerical", order="desc")
    assert compare(descending, "9", "10") is Verdict.UPGRADE
    assert compare(descending, "10", "9") is Verdict.OLDER


def test_alphabetical_orders() -> None:
    ascending = policy(kind="alphabetical")
    assert compare(ascending, "b", "a") is Verdict.UPGRADE
    assert compare(ascending, "a", "b") is Verdict.OLDER
    descending = policy(kind="alphabetical", order="desc")
    assert compare(descending, "a", "b") is Verdict.UPGRADE
    assert compare(descending, "b", "b") is Verdict.CURRENT


def test_descriptions_name_the_policy() -> None:
    assert policies.describe(policy(kind="semver", range="^1.2")) == "semver ^1.2"
    assert policies.describe(policy(kind="numerical")) == "numerical asc"


def _image(pin_digest: bool) -> Image:
    return Image.model_validate(
        {
            "name": "registry.example.com/app",
            "app": "demo",
            "policy": {"kind": "semver", "range": "^1.0"},
            "pin_digest": pin_digest,
        }
    )


def test_new_reference_never_downgrades_and_pins_digests_when_asked() -> None:
    old = ImageRef("registry.example.com/app", "1.2.0", None)
    digest, moved = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    pushed = ImagePushed(image="registry.example.com/app", tag="1.3.0", digest=digest)
    assert new_reference(_image(False), pushed, old) == ImageRef(old.repository, "1.3.0")
    assert new_reference(_image(True), pushed, old) == ImageRef(old.repository, "1.3.0", digest)
    older = ImagePushed(image="registry.example.com/app", tag="1.1.0", digest=digest)
    assert new_reference(_image(True), older, old) is None
    pinned = ImageRef(old.repository, "1.3.0", digest)
    assert new_reference(_image(True), pushed, pinned) is None
    retagged = ImagePushed(image="registry.example.com/app", tag="1.3.0", digest=moved)
    assert new_reference(_image(True), retagged, pinned) == ImageRef(old.repository, "1.3.0", moved)
    assert new_reference(_image(False), retagged, ImageRef(old.repository, "1.3.0")) is None
