"""The event contract: envelope encoding, decoding errors, additive schemas, the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitops_events import (
    TOPICS,
    Command,
    DecodeError,
    DeployEvent,
    DeployPhase,
    Envelope,
    SyncCommand,
    catalogue,
    decode,
    encode,
    registered_types,
    topic_for,
)

REPO = Path(__file__).resolve().parents[2]


def _record(event: object) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return encode(Envelope.wrap(event, "gitops/test"))  # type: ignore[arg-type]


def test_binary_mode_puts_attributes_in_headers_and_payload_in_value() -> None:
    event = DeployEvent(
        app="shop",
        environment="prod",
        revision="abc",
        phase=DeployPhase.HEALTHY,
        reason="RolloutComplete",
        message="all objects healthy",
    )
    envelope = Envelope.wrap(event, "gitops/deployer").model_copy(
        update={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    key, value, headers = encode(envelope)
    names = dict(headers)
    assert key == b"shop/prod"
    assert names["ce_type"] == b"io.gitops.deploy.v1"
    assert names["ce_source"] == b"gitops/deployer"
    assert names["ce_subject"] == b"shop/prod"
    assert names["ce_specversion"] == b"1.0"
    assert names["traceparent"].startswith(b"00-0af7651916cd43dd8448eb211c80319c")
    assert json.loads(value)["phase"] == "healthy"
    back = decode(headers, value)
    assert back.id == envelope.id
    assert back.traceparent == envelope.traceparent
    assert back.data == event


def test_unknown_fields_are_ignored_so_newer_writers_do_not_break_readers() -> None:
    _, value, headers = _record(Command(app="a", environment="e", command=SyncCommand()))
    payload = json.loads(value) | {"added_in_v1_1": {"anything": True}}
    back = decode(headers, json.dumps(payload).encode())
    assert isinstance(back.data, Command)
    assert back.data.app == "a"


@pytest.mark.parametrize(
    ("mutate", "reason", "needle"),
    [
        (lambda h, v: ([x for x in h if x[0] != "ce_type"], v), "broken-envelope", "ce_type"),
        (
            lambda h, v: ([(k, b"\xff" if k == "ce_id" else x) for k, x in h], v),
            "broken-envelope",
            "ce_id",
        ),
        (
            lambda h, v: ([(k, b"0.3" if k == "ce_specversion" else x) for k, x in h], v),
            "broken-envelope",
            "specversion",
        ),
        (
            lambda h, v: ([(k, b"io.gitops.nope.v9" if k == "ce_type" else x) for k, x in h], v),
            "unknown-event-type",
            "io.gitops.nope.v9",
        ),
        (lambda h, v: (h, b"not json"), "invalid-payload", "io.gitops.command.v1"),
        (lambda h, v: (h, b'{"app": 1}'), "invalid-payload", "environment"),
        (lambda h, v: (h, None), "invalid-payload", "no value"),
    ],
)
def test_broken_records_are_refused_with_a_reason(mutate, reason, needle) -> None:  # type: ignore[no-untyped-def]
    _, value, headers = _record(Command(app="a", environment="e", command=SyncCommand()))
    bad_headers, bad_value = mutate(headers, value)
    with pytest.raises(DecodeError) as caught:
        decode(bad_headers, bad_value)
    assert caught.value.reason == reason
    assert needle in str(caught.value)


def test_validation_errors_do_not_echo_input_values() -> None:
    _, _, headers = _record(Command(app="a", environment="e", command=SyncCommand()))
    secret = "hunter2-super-secret"
    with pytest.raises(DecodeError) as caught:
        decode(headers, json.dumps({"app": {"password": secret}}).encode())
    assert secret not in str(caught.value)


def test_every_event_type_has_exactly_one_topic() -> None:
    carried = [t for spec in TOPICS for t in spec.event_types]
    assert sorted(carried) == registered_types()
    event = Command(app="a", environment="e", command=SyncCommand())
    assert topic_for(event, "gitops.") == "gitops.commands"


def test_committed_catalogue_matches_the_models() -> None:
    committed = (REPO / "docs" / "events.md").read_text()
    assert committed == catalogue.render(), (
        "docs/events.md is stale: run `python -m gitops_events.catalogue > docs/events.md`"
    )
