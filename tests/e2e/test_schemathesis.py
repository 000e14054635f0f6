"""Property-based fuzzing of every operation in the OpenAPI spec (schemathesis): whatever the
generated input, the service answers with a 2xx or a clear 4xx, never a 5xx. The LLM transport
is scripted (so an upstream model's own failures are not counted as ours); the cache store,
vector DB and embedder are real.

Driven through hypothesis directly: schemathesis's pytest plugin does not run on pytest 9."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from rag.embedding import SentenceTransformerEmbedder
from tests.conftest import serve_scripted


@pytest.fixture(scope="module")
def schema(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[Any]:
    with serve_scripted(
        tmp_path_factory, embedder, valkey_url, "fuzz", max_body_bytes=200_000
    ) as running:
        yield schemathesis.openapi.from_url(f"{running.url}/openapi.json")


def test_every_operation_is_in_the_spec(schema: Any) -> None:
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    expected = {("POST", "/ask"), ("GET", "/ask/stream"), ("POST", "/documents")}
    assert expected | {("POST", "/feedback")} <= operations


def test_no_input_makes_the_service_fail(schema: Any) -> None:
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def no_server_error(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=60)

        no_server_error()
