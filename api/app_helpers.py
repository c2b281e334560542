"""Small response helpers shared by the blueprints."""

from __future__ import annotations

import logging
from typing import Any

from flask import jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError

from antihack.shared.domain.schemas import shown


def json_response(body: Any, code: int = 200, **headers: str) -> ResponseReturnValue:
    return jsonify(body), code, headers


log = logging.getLogger(__name__)


def model_response(
    model: type[BaseModel], body: Any, code: int = 200, **headers: str
) -> ResponseReturnValue:
    """``body`` checked and shaped by its response model (shared/domain/schemas.py), as JSON.

    A body outside its model (stored data older than a model's rule, or a bug) is still sent, as
    it is, and logged: a stored job must stay readable, and no answer becomes a 500."""
    try:
        shaped = shown(model.model_validate(body))
    except ValidationError as exc:
        log.error("answer outside its model %s, sent as it is: %s", model.__name__, exc)
        shaped = body
    return json_response(shaped, code, **headers)
