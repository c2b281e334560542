"""/openapi.json is a valid OpenAPI 3.1 document that describes every route the app has, and
/docs renders it with assets served by the app itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from shared.errors import HTTP_CODES
from tests.conftest import Key

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def openapi_path(rule: str) -> str:
    """Flask's ``/v1/jobs/<request_id>`` (or ``<path:filename>``) as OpenAPI's ``{request_id}``."""
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    body: dict[str, Any] = resp.get_json()
    return body


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


def test_every_url_rule_and_method_is_in_the_document(app: Flask, doc: dict[str, Any]) -> None:
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            if method.lower() not in doc["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from /openapi.json: {missing}"


def test_every_documented_operation_exists(app: Flask, doc: dict[str, Any]) -> None:
    routes = {
        (openapi_path(r.rule), m.lower()) for r in app.url_map.iter_rules() for m in r.methods or ()
    }
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented <= routes, documented - routes


def test_the_contract_is_described(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert set(schemas["ErrorStatus"]["enum"]) == set(HTTP_CODES)
    assert schemas["Error"]["required"] == ["status", "reason", "request_id"]
    assert len(schemas["Extra"]["required"]) == 14
    seed = doc["paths"]["/face/liveness_anti_hack"]["post"]
    form = seed["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = schemas[form["$ref"].rsplit("/", 1)[1]]["properties"]
    assert fields["liveness_data_file"]["format"] == "binary"
    assert fields["return_image"]["enum"] == fields["return_extra"]["enum"] == [0, 1]
    assert {"liveness_data_url", "image_id", "callback_url"} <= set(fields)
    headers = {p["$ref"].rsplit("/", 1)[1] for p in seed["parameters"]}
    assert headers == {"IdempotencyKey", "Prefer"}
    assert {"200", "202", "400", "401", "403", "413", "422", "500"} <= set(seed["responses"])
    assert "RateLimit" in seed["responses"]["200"]["headers"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiId"]["name"] == "X-DF-API-ID"
    assert schemes["ApiSecret"]["name"] == "X-DF-API-SECRET"
    assert schemes["AdminToken"]["scheme"] == "bearer"


def test_a_real_answer_matches_its_schema(
    client: FlaskClient, doc: dict[str, Any], key: Key
) -> None:
    """The documented schemas are what the service really sends (an error and a usage body)."""
    from jsonschema import Draft202012Validator

    def check(body: Any, schema_name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
        Draft202012Validator(schema).validate(body)

    error = client.post("/v1/jobs", headers=key.headers, data={"return_extra": "1"})
    assert error.status_code == 400
    check(error.get_json(), "Error")
    usage = client.get("/v1/usage", headers=key.headers)
    check(usage.get_json(), "Usage")


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_docs_page_uses_only_local_assets_that_answer(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    parser = _Assets()
    parser.feed(page.get_data(as_text=True))
    assert len(parser.urls) >= 4
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.get_data(), url
    js = [client.get(u).get_data(as_text=True) for u in parser.urls if u.endswith(".js")]
    scripts = "".join(js)
    assert "SwaggerUIBundle" in scripts and "/openapi.json" in scripts
    assert client.get("/docs/../../pyproject.toml").status_code == 404
