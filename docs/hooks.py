"""MkDocs hook: the API reference page, rendered from the service's own OpenAPI document.

At build time the hook starts the Flask app with default settings (in a subprocess, with a
throw-away data directory: nothing is connected to, nothing is written elsewhere), reads
``GET /openapi.json`` through Flask's test client and adds two generated files to the site:

- ``openapi.json``: the document exactly as ``/openapi.json`` serves it;
- ``api-reference.md``: every operation and schema as Markdown tables.

No CDN and no Swagger UI assets: the page is plain Markdown, so the site builds offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("get", "put", "post", "patch", "delete", "head", "options")

# Run in a child process so that the app's imports and settings never leak into MkDocs.
_DUMP = """
import json, sys
try:
    from antihack.api.app import create_app
except ImportError:
    from antihack.api.app import create_app
response = create_app().test_client().get("/openapi.json")
if response.status_code != 200:
    sys.exit(f"/openapi.json answered {response.status_code}")
sys.stdout.write(json.dumps(response.get_json(), indent=2, ensure_ascii=False))
"""


def openapi_document() -> dict[str, Any]:
    """The document ``GET /openapi.json`` serves with default settings."""
    with tempfile.TemporaryDirectory(prefix="antihack-docs-") as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIHACK_")}
        env["ANTIHACK_DATA_DIR"] = data_dir
        done = subprocess.run(
            [sys.executable, "-c", _DUMP],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"could not produce the OpenAPI document:\n{done.stderr}")
    document: dict[str, Any] = json.loads(done.stdout)
    return document


# --- rendering --------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """``<`` outside code spans as an entity, so that ``<token>`` is shown, not taken for HTML."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _cell(text: Any) -> str:
    """One Markdown table cell: no line breaks, no stray pipes."""
    return _escape(" ".join(str(text).split()).replace("|", "\\|"))


def _anchor(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() else "-" for c in name.lower())


class Renderer:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow ``$ref`` (local references only) until a node without one."""
        seen: set[str] = set()
        while "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in seen:
                break
            seen.add(ref)
            target: Any = self.doc
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def type_of(self, schema: dict[str, Any]) -> str:
        """A short type description with links to the schemas it names."""
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                return f"[{name}](#{_anchor(name)})"
            return self.type_of(self.resolve(schema))
        for key, joiner in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
            if key in schema:
                return joiner.join(self.type_of(s) for s in schema[key])
        if "const" in schema:
            return f"`{json.dumps(schema['const'])}`"
        if "enum" in schema:
            return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind else []
        parts = []
        for k in kinds:
            if k == "array":
                parts.append(f"array of {self.type_of(schema.get('items', {}))}")
            elif k == "object" and isinstance(schema.get("additionalProperties"), dict):
                parts.append(f"object of {self.type_of(schema['additionalProperties'])}")
            else:
                parts.append(str(k))
        text = " or ".join(parts) if parts else "any"
        if "format" in schema:
            text += f" ({schema['format']})"
        return text

    def constraints(self, schema: dict[str, Any]) -> str:
        notes = []
        for key in (
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "pattern",
            "default",
        ):
            if key in schema:
                notes.append(f"{key} `{json.dumps(schema[key], ensure_ascii=False)}`")
        return "; ".join(notes)

    def describe(self, schema: dict[str, Any]) -> str:
        text = schema.get("description", "")
        if "$ref" in schema and not text:
            text = self.resolve(schema).get("description", "")
        extra = self.constraints(schema)
        return _cell(f"{text} ({extra})" if text and extra else text or extra)

    def properties_table(self, schema: dict[str, Any]) -> list[str]:
        schema = self.resolve(schema)
        props: dict[str, Any] = dict(schema.get("properties", {}))
        required = set(schema.get("required", []))
        for part in schema.get("allOf", []):
            part = self.resolve(part)
            props.update(part.get("properties", {}))
            required.update(part.get("required", []))
        if not props:
            return []
        rows = ["| field | type | required | description |", "| --- | --- | --- | --- |"]
        for name, prop in props.items():
            rows.append(
                f"| `{name}` | {_cell(self.type_of(prop))} | {'yes' if name in required else ''}"
                f" | {self.describe(prop)} |"
            )
        return rows

    def security(self, operation: dict[str, Any]) -> str:
        requirements = operation.get("security", self.doc.get("security", []))
        if not requirements:
            return "none"
        return " or ".join(
            " + ".join(f"`{name}`" for name in requirement) or "none"
            for requirement in requirements
        )

    def operation(
        self, path: str, method: str, op: dict[str, Any], shared: list[Any], webhook: bool = False
    ) -> list[str]:
        lines = [f"### `{method.upper()} {path}`", ""]
        if op.get("summary"):
            lines += [f"**{_escape(op['summary'])}**", ""]
        if op.get("description"):
            lines += [_escape(op["description"]), ""]
        if not webhook:
            lines += [f"Authentication: {self.security(op)}.", ""]
        params = [self.resolve(p) for p in [*shared, *op.get("parameters", [])]]
        if params:
            lines += [
                "| parameter | in | type | required | description |",
                "| --- | --- | --- | --- | --- |",
            ]
            for p in params:
                schema = {**p.get("schema", {}), "description": p.get("description", "")}
                lines.append(
                    f"| `{p['name']}` | {p['in']} | {_cell(self.type_of(p.get('schema', {})))}"
                    f" | {'yes' if p.get('required') else ''}"
                    f" | {self.describe(schema)} |"
                )
            lines.append("")
        body = op.get("requestBody")
        if body:
            body = self.resolve(body)
            for media, content in body.get("content", {}).items():
                schema = content.get("schema", {})
                required = " (required)" if body.get("required") else ""
                lines += [f"Request body{required}: `{media}`, {self.type_of(schema)}.", ""]
        lines += ["| status | description | body |", "| --- | --- | --- |"]
        for status, response in op.get("responses", {}).items():
            response = self.resolve(response)
            bodies = ", ".join(
                f"`{media}` {self.type_of(content.get('schema', {}))}"
                for media, content in response.get("content", {}).items()
            )
            headers = ", ".join(f"`{h}`" for h in response.get("headers", {}))
            description = response.get("description", "")
            if headers:
                description += f" Headers: {headers}."
            lines.append(f"| {status} | {_cell(description)} | {_cell(bodies)} |")
        return [*lines, ""]

    def page(self) -> str:
        info = self.doc.get("info", {})
        out = [
            "# API reference",
            "",
            f"Generated at build time from the OpenAPI {self.doc.get('openapi', '')} document that"
            f" the service serves at `GET /openapi.json` ({info.get('title', '')}"
            f" {info.get('version', '')}); download it as [openapi.json](openapi.json). A running"
            " service shows the same document in Swagger UI at `/docs`. The prose guide is"
            " [HTTP API](http-api.md).",
            "",
        ]
        if info.get("description"):
            out += [_escape(info["description"]), ""]
        schemes = self.doc.get("components", {}).get("securitySchemes", {})
        if schemes:
            out += ["## Authentication", "", "| name | kind | description |", "| --- | --- | --- |"]
            for name, s in schemes.items():
                kind = s.get("type", "")
                if kind == "apiKey":
                    kind = f"`{s.get('name')}` {s.get('in')}"
                elif kind == "http":
                    kind = f"HTTP {s.get('scheme')}"
                out.append(f"| `{name}` | {_cell(kind)} | {_cell(s.get('description', ''))} |")
            out.append("")
        tags = [t["name"] for t in self.doc.get("tags", [])]
        by_tag: dict[str, list[tuple[str, str, dict[str, Any], list[Any]]]] = {}
        for path, item in self.doc.get("paths", {}).items():
            for method in METHODS:
                if method in item:
                    op = item[method]
                    tag = (op.get("tags") or ["other"])[0]
                    by_tag.setdefault(tag, []).append(
                        (path, method, op, item.get("parameters", []))
                    )
        descriptions = {t["name"]: t.get("description", "") for t in self.doc.get("tags", [])}
        for tag in [*tags, *sorted(set(by_tag) - set(tags))]:
            if tag not in by_tag:
                continue
            out += [f"## {tag}", ""]
            if descriptions.get(tag):
                out += [descriptions[tag], ""]
            for path, method, op, shared in by_tag[tag]:
                out += self.operation(path, method, op, shared)
        webhooks = self.doc.get("webhooks", {})
        if webhooks:
            out += [
                "## Webhooks the service sends",
                "",
                "Requests antihack makes to the partner's endpoint (see [Webhooks](webhooks.md)).",
                "",
            ]
            for name, item in webhooks.items():
                for method in METHODS:
                    if method in item:
                        out += self.operation(
                            name, method, item[method], item.get("parameters", []), webhook=True
                        )
        schemas = self.doc.get("components", {}).get("schemas", {})
        if schemas:
            out += ["## Schemas", ""]
            for name, schema in schemas.items():
                out += [f"### {name} {{ #{_anchor(name)} }}", ""]
                if schema.get("description"):
                    out += [_escape(schema["description"]), ""]
                table = self.properties_table(schema)
                if table:
                    out += [*table, ""]
                else:
                    extra = self.constraints(schema)
                    out += [
                        f"Type: {self.type_of(schema)}" + (f"; {extra}" if extra else "") + ".",
                        "",
                    ]
        return "\n".join(out)


# --- MkDocs events ----------------------------------------------------------------------------


def _unescape_code_pipes(row: str) -> str:
    """``\\|`` inside a code span of a table row as ``|``.

    GitHub needs the backslash there; Python-Markdown already ignores pipes inside code spans
    and would show the backslash.
    """
    parts = row.split("`")
    return "`".join(p.replace("\\|", "|") if i % 2 else p for i, p in enumerate(parts))


def on_page_markdown(markdown: str, **_: Any) -> str:
    return "\n".join(
        _unescape_code_pipes(line) if line.lstrip().startswith("|") else line
        for line in markdown.split("\n")
    )


def on_files(files: Files, config: MkDocsConfig) -> Files:
    document = openapi_document()
    files.append(
        File.generated(config, "openapi.json", content=json.dumps(document, indent=2) + "\n")
    )
    files.append(File.generated(config, "api-reference.md", content=Renderer(document).page()))
    return files
