"""Small response helpers shared by the blueprints."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.typing import ResponseReturnValue


def json_response(body: Any, code: int = 200, **headers: str) -> ResponseReturnValue:
    return jsonify(body), code, headers
