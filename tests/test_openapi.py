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

from antihack.shared.domain.errors import HTTP_CODES
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


# --- one definition per schema (shared/domain/schemas.py, shared/choices.py) -------

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _check(doc: dict[str, Any], body: Any, schema_name: str) -> None:
    from jsonschema import Draft202012Validator

    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    Draft202012Validator(schema).validate(body)


def test_the_key_and_session_schemas_are_the_models(doc: dict[str, Any]) -> None:
    from antihack.shared.domain.schemas import component_schemas

    generated = component_schemas()
    for name in ("KeyOptions", "KeyCreate", "Key", "KeyWithSecrets", "NewSession", "Session"):
        assert doc["components"]["schemas"][name] == generated[name], name
    admin = doc["paths"]["/admin/keys"]
    assert admin["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KeyCreate"
    }
    assert generated["KeyCreate"]["required"] == ["name"]
    assert generated["KeyOptions"]["additionalProperties"] is False


def test_admin_and_session_answers_match_the_models(
    client: FlaskClient, doc: dict[str, Any], key: Key
) -> None:
    created = client.post(
        "/admin/keys",
        json={"name": "doc", "quota": 3, "permissions": ["jobs", "sessions"]},
        headers=ADMIN,
    )
    assert created.status_code == 201
    _check(doc, created.get_json(), "KeyWithSecrets")
    assert created.get_json()["created_at"].endswith("+00:00")  # isoformat, as before the models
    listed = client.get("/admin/keys", headers=ADMIN)
    _check(doc, listed.get_json(), "KeyList")
    new = client.post("/v1/sessions", headers=key.headers)
    assert new.status_code == 201
    _check(doc, new.get_json(), "NewSession")
    assert "light" not in new.get_json() or "LIGHT" in new.get_json()["challenge"]
    shown = client.get(f"/v1/sessions/{new.get_json()['session_id']}", headers=key.headers)
    _check(doc, shown.get_json(), "Session")
    assert shown.get_json()["job_id"] is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "name is required (a non-empty string)"),
        ({"name": " "}, "name is required (a non-empty string)"),
        ({"name": "x", "colour": 1, "quota": "a"}, "unknown fields ['colour']"),
        ({"name": "x", "quota": True}, "quota must be int"),
        ({"name": "x", "quota": -1}, "quota must be >= 0"),
        # A PostgreSQL integer column: larger was a 500 before the model bounded it.
        ({"name": "x", "quota": 2**31}, "quota must be at most 2147483647"),
        ({"name": "x", "burst": 2**53}, "burst must be at most 2147483647"),
        ({"name": "x", "rate": 0}, "rate must be > 0 requests per second"),
        ({"name": "x", "burst": 0}, "burst must be >= 1"),
        ({"name": "x", "quota_period": "week"}, "quota period must be one of"),
        ({"name": "x", "expires_at": 5}, "expires_at must be str"),
        ({"name": "x", "expires_at": "tomorrow"}, "expires_at must be ISO 8601"),
        ({"name": "x", "expires_at": "2030-01-01T00:00"}, "expires_at must carry a time zone"),
        ({"name": "x", "permissions": ["jobs", "nope"]}, "unknown permissions ['nope']"),
        ({"name": "x\x00"}, "name must be at most 200 printable characters"),
        ({"name": "x" * 201}, "name must be at most 200 printable characters"),
        ({"name": "x", "require_signed": 1}, "require_signed must be bool"),
        (["name"], "the body must be a JSON object"),
    ],
)
def test_a_refused_key_body_gets_the_seed_error(
    client: FlaskClient, body: Any, reason: str
) -> None:
    resp = client.post("/admin/keys", json=body, headers=ADMIN)
    assert resp.status_code == 400
    error = resp.get_json()
    assert error["status"] == "INVALID_ARGUMENT" and error["reason"].startswith(reason), error
    assert set(error) == {"status", "reason", "request_id"}
    # Authentication first: the same body without the token is 401, not 400.
    assert client.post("/admin/keys", json=body).status_code == 401


def test_the_challenge_list_is_defined_once() -> None:
    from pathlib import Path

    from antihack.shared import choices
    from antihack.shared.infra.settings import SESSION_CHALLENGES
    from antihack.shared.proto import liveness_pb2 as pb
    from antihack.shared.sdk.sample import CHALLENGES as SAMPLE_CHALLENGES

    names = [value.name for value in pb.Challenge.DESCRIPTOR.values]
    proto = tuple(n for n in names if n != "CHALLENGE_UNSPECIFIED")
    assert set(choices.CHALLENGES) == set(proto)
    assert SESSION_CHALLENGES is choices.CHALLENGES
    assert set(SAMPLE_CHALLENGES) == set(choices.CHALLENGES) - {"LIGHT"}
    js = (Path(__file__).resolve().parents[1] / "api/static/antihack.js").read_text()
    numbers = dict(re.findall(r"\b([A-Z_]+): (\d+)\b", js.split("CHALLENGES = {", 1)[1][:80]))
    numbers.update(re.findall(r"CHALLENGES\.([A-Z_]+) = (\d+);", js))
    assert {n: int(v) for n, v in numbers.items()} == {n: pb.Challenge.Value(n) for n in proto}


def test_the_cli_key_options_are_the_model_fields() -> None:
    from antihack.shared.cli.keys import keys_create, keys_update
    from antihack.shared.domain.schemas import KeyOptions

    for command in (keys_create, keys_update):
        names = {p.name for p in command.params if p.name not in ("api_id", "as_json")}
        assert names == set(KeyOptions.model_fields), command.name
