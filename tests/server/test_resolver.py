"""Plans for requests that set nothing but the model are resolved once per model name (control.Resolver)."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from ttscale.backends.fake import FakeBackend
from ttscale.server.config import ServerConfig
from ttscale.server.control import Resolver
from ttscale.server.errors import APIError
from ttscale.server.schemas import TtscaleOptions


@pytest.fixture
def plans() -> Resolver:
    return Resolver(ServerConfig(backend=FakeBackend(), model_name="fake", k=4))


def test_a_bare_request_reuses_its_models_plan(plans: Resolver) -> None:
    first = plans(None, Headers({"content-type": "application/json"}), "fake")
    assert plans(None, Headers({}), "fake") is first
    assert first.strategy == "self-consistency" and first.k == 4 and dict(first.validated)["k"] == 4
    prefixed = plans(None, Headers({}), "sc8/fake")
    assert prefixed.k == 8 and plans(None, Headers({}), "sc8/fake") is prefixed


def test_options_and_ttscale_headers_are_resolved_per_request(plans: Resolver) -> None:
    bare = plans(None, Headers({}), "fake")
    by_header = plans(None, Headers({"X-Ttscale-K": "2"}), "fake")
    assert by_header.k == 2 and plans(None, Headers({}), "fake") is bare
    by_body = plans(TtscaleOptions.model_validate({"k": 3}), Headers({}), "fake")
    assert by_body.k == 3 and by_body is not plans(TtscaleOptions.model_validate({"k": 3}), Headers({}), "fake")


def test_a_bad_model_name_is_refused_every_time(plans: Resolver) -> None:
    for _ in range(2):
        with pytest.raises(APIError) as e:
            plans(None, Headers({}), "other-model")
        assert e.value.status == 404
    assert plans._bare == {}
