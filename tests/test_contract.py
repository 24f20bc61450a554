"""Contract: the responses the router really sends match the OpenAPI schema it publishes.

Each exchange below is a real request to the app (FakeEngine in place of vLLM); its JSON body is
validated with jsonschema against the response schema `app.openapi()` documents for that path,
method and status code, and every object may carry only documented properties and must carry the
required ones, so a field added to or dropped from a response without the schema fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from support.fakes import make_settings, run, serving

CONFIDENT = "my bill is too high"  # FakeEngine: 0.9 on bill_explanation
UNSURE = "hello there"  # FakeEngine: flat, top-1 0.4


class Contract:
    """Validates response bodies against the app's own OpenAPI document."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        self.openapi = openapi
        resource = Resource.from_contents(openapi, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource("urn:openapi", resource)

    def schema_for(self, method: str, path: str, status: int) -> dict[str, Any]:
        responses = self.openapi["paths"][path][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path} answered {status}, which is not documented"
        return responses[str(status)]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]

    def check(self, response: httpx.Response) -> dict[str, Any]:
        request = response.request
        schema = self.schema_for(request.method, request.url.path, response.status_code)
        body = response.json()
        root = {"$ref": "urn:openapi#" + schema["$ref"].removeprefix("#")} if "$ref" in schema else schema
        Draft202012Validator(root, registry=self.registry).validate(body)
        self._exact_properties(body, schema)
        return body  # type: ignore[no-any-return]

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.openapi
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def _exact_properties(self, value: Any, schema: dict[str, Any]) -> None:
        schema = self._resolve(schema)
        options = schema.get("anyOf")
        if options is not None:  # optional objects: check against the branch that is not null
            if value is None:
                return
            schema = self._resolve(next(o for o in options if o.get("type") != "null"))
        if isinstance(value, dict) and "properties" in schema:
            sent, documented = set(value), set(schema["properties"])
            assert sent <= documented, f"{schema.get('title')}: sent undocumented {sorted(sent - documented)}"
            missing = set(schema.get("required", ())) - sent
            assert not missing, f"{schema.get('title')}: required {sorted(missing)} not sent"
            for key, item in value.items():
                self._exact_properties(item, schema["properties"][key])
        elif isinstance(value, list) and "items" in schema:
            for item in value:
                self._exact_properties(item, schema["items"])


def test_real_responses_match_the_published_openapi_schema(tmp_path: Path) -> None:
    # cascade mode on with an LLM that is not there: escalated answers carry `escalation`
    settings = make_settings(
        tmp_path,
        escalation_model="absent-llm",
        escalation_base_url="http://127.0.0.1:9/v1",
        escalation_api_key="not-used",
        escalation_shots=0,
        escalation_max_retries=0,
    )

    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        async with serving(settings) as client:
            contract = Contract(client.app.openapi())  # type: ignore[attr-defined]
            seen: list[tuple[str, dict[str, Any]]] = []

            async def call(name: str, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
                body = contract.check(await client.request(method, url, **kwargs))
                seen.append((name, body))
                return body

            sure = await call("route", "POST", "/v1/route", json={"text": CONFIDENT, "metadata": {"a": 1}})
            await call("route escalated", "POST", "/v1/route", json={"text": UNSURE})
            await call("batch", "POST", "/v1/route/batch", json={"texts": [CONFIDENT, UNSURE]})
            await call(
                "feedback",
                "POST",
                "/v1/feedback",
                json={"request_id": sure["request_id"], "correct_intent": "no_signal", "source": "qa"},
            )
            await call("intents", "GET", "/v1/intents")
            await call("readyz", "GET", "/readyz")
            await call("livez", "GET", "/livez")
            await call("bad body", "POST", "/v1/route", json={"text": ""})
            await call("bad batch", "POST", "/v1/route/batch", json={"texts": []})
            await call(
                "unknown request", "POST", "/v1/feedback", json={"request_id": "x", "correct_intent": "oos"}
            )
            await call(
                "unknown intent", "POST", "/v1/feedback", json={"request_id": "x", "correct_intent": "?"}
            )
            return seen

    seen = dict(run(scenario()))
    assert seen["route"]["escalation"] is None and seen["route"]["alternatives"]
    assert seen["route escalated"]["escalation"]["outcome"] == "failed"
    assert len(seen["batch"]["results"]) == 2
    assert seen["feedback"]["agree"] is False
    assert seen["bad body"]["errors"][0]["field"] == "text"


def test_the_contract_check_catches_an_undocumented_field(tmp_path: Path) -> None:
    """The check above can fail: a response with a field the schema does not list is caught."""

    async def scenario() -> None:
        async with serving(make_settings(tmp_path)) as client:
            contract = Contract(client.app.openapi())  # type: ignore[attr-defined]
            response = await client.post("/v1/route", json={"text": CONFIDENT})
            forged = httpx.Response(
                response.status_code, json={**response.json(), "extra": 1}, request=response.request
            )
            with pytest.raises(AssertionError, match="extra"):
                contract.check(forged)
            missing = {k: v for k, v in response.json().items() if k != "route"}
            with pytest.raises(Exception, match="route"):
                contract.check(httpx.Response(200, json=missing, request=response.request))

    run(scenario())
