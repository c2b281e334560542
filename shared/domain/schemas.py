"""The API's typed request and response models (pydantic v2): one definition per schema.

A model validates what comes in (``parse`` turns pydantic's errors into the seed's
``INVALID_ARGUMENT`` body, with the same reasons as before the models), shapes what goes out
(``shown``: the model's field order, a field not given left out, so that the answers are byte
for byte what the domain's dicts and the worker's stored results were), and generates every
schema of the OpenAPI document (``component_schemas``); the CLI and the admin API use the same
key models. The vocabularies (challenges, quota periods, permissions, job states) are
``shared/choices.py``'s ``Literal`` types, named here so that the document refers to them.

The multipart submission (``Submission``, ``ImageUpload``) is read by api/submission.py with
the seed's own checks; its model documents the form (a test checks that both name the same
fields).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from antihack.shared import choices
from antihack.shared.domain.errors import HTTP_CODES, ApiError
from antihack.shared.infra.tables import DELIVERY_STATES

log = logging.getLogger(__name__)

MAX_NAME = 200  # api_keys.name
MAX_INT = 2**31 - 1  # api_keys.quota_limit and .burst are PostgreSQL integers

SEED_EXAMPLE_ID = "TID8bf47ab6eda64476973cc5f5b6ebf57e"  # the seed documentation's request id
# The seed documentation's ``extra``, in the worker's order (worker/pipeline/run.py's _extra).
EXTRA_EXAMPLE: dict[str, Any] = {
    "mask_proba": 0.001,
    "quality_score": 0.961,
    "quality_too_low": False,
    "blur_or_dark": False,
    "has_no_face": False,
    "face_too_small": False,
    "image_too_small": False,
    "masked": False,
    "face_quality_low": False,
    "face_quality_score": 0.998143,
    "is_live": True,
    "live_proba": 0.996755,
    "eye_closed": False,
    "eye_score": 0.978606,
}

# --- named types: each becomes one entry of components/schemas ------------------------------

Challenge = TypeAliasType("Challenge", choices.Challenge)
QuotaPeriod = TypeAliasType("QuotaPeriod", choices.QuotaPeriod)
Permission = TypeAliasType("Permission", choices.Permission)
JobState = TypeAliasType("JobState", choices.JobState)
RequestId = TypeAliasType(
    "RequestId",
    Annotated[
        str,
        Field(
            pattern="^TID[0-9a-f]{32}$",
            description="Unique id of the request; for a submission it is also the job id.",
            examples=[SEED_EXAMPLE_ID],
        ),
    ],
)
SessionId = TypeAliasType("SessionId", Annotated[str, Field(pattern="^ses_[0-9a-f]{32}$")])
SessionChallenge = TypeAliasType(
    "SessionChallenge",
    Annotated[
        list[Challenge],
        Field(
            min_length=1,
            description="The steps the capture must show, in this order: the capture's "
            "`challenges` must be exactly this list, and its frames tagged with a "
            "`challenge_step` must show these steps in this order.",
            examples=[["BLINK", "YAW"]],
            json_schema_extra={"uniqueItems": True},
        ),
    ],
)


def _isoformat(value: datetime) -> str:
    return value.isoformat()


DATE_TIME_SCHEMA = {"type": "string", "format": "date-time"}
# Sent as ``datetime.isoformat()`` (``+00:00``, as before the models), documented as date-time.
DateTime = Annotated[
    datetime, PlainSerializer(_isoformat, return_type=str), WithJsonSchema(DATE_TIME_SCHEMA)
]
Url = Annotated[str, Field(json_schema_extra={"format": "uri"})]
Ok = Literal["OK"]


def omitted(
    description: str | None = None, *, examples: list[Any] | None = None, **schema: Any
) -> Any:
    """The default of a response field that the body leaves out when it has no value (bodies
    are dumped with ``exclude_unset``): documented as not required, and never null."""

    def not_null(field: dict[str, Any]) -> None:
        field.pop("default", None)
        alternatives = [a for a in field.pop("anyOf", ()) if a != {"type": "null"}]
        if len(alternatives) == 1:
            field.update(alternatives[0])
        elif alternatives:
            field["anyOf"] = alternatives
        field.update(schema)

    return Field(
        default=None, description=description, examples=examples, json_schema_extra=not_null
    )


def _no_default(field: dict[str, Any]) -> None:
    field.pop("default", None)


def optional(description: str | None = None) -> Any:
    """The default of a nullable response field that the document does not require: ``None``
    when not given, documented without the ``default: null`` that an answer has no use for."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


def _one_of(union: dict[str, Any]) -> None:
    """Exactly one alternative: the alternatives are disjoint, and the document says so."""
    union["oneOf"] = union.pop("anyOf")


def _seed_status(value: str) -> str:
    if value not in HTTP_CODES:
        raise ValueError(f"not one of the seed's status strings: {value!r}")
    return value


def _delivery_state(value: str) -> str:
    if value not in DELIVERY_STATES:
        raise ValueError(f"not a delivery state: {value!r}")
    return value


# The seed's status strings of an error (shared/domain/errors.py's HTTP_CODES).
ErrorStatus = TypeAliasType(
    "ErrorStatus",
    Annotated[
        str,
        AfterValidator(_seed_status),
        WithJsonSchema(
            {
                "type": "string",
                "enum": list(HTTP_CODES),
                "description": "The seed's status strings (DETETION_FAILED is the seed's "
                "spelling).",
            }
        ),
    ],
)
DeliveryState = TypeAliasType(
    "DeliveryState",
    Annotated[
        str,
        AfterValidator(_delivery_state),
        WithJsonSchema({"type": "string", "enum": list(DELIVERY_STATES)}),
    ],
)

# --- turning validation errors into the seed's body -----------------------------------------

# Error types whose message is "<field> must be <kind>", as the hand-written checks said.
_TYPE_ERRORS = {"string_type": "str", "int_type": "int", "float_type": "float", "bool_type": "bool"}
# Raised by our own validators with the whole reason as the message: a wrong type, or a value.
WRONG_TYPE = "invalid_argument_type"
WRONG_VALUE = "invalid_argument"


def _reason(error: Mapping[str, Any], messages: Mapping[str, str]) -> tuple[int, str]:
    """(precedence, reason) of one pydantic error: the seed's checks ran in this order."""
    field = str(error["loc"][0]) if error["loc"] else ""
    kind = error["type"]
    required = messages.get(f"{field}:required")
    if required and kind in ("missing", "string_type", "string_pattern_mismatch"):
        return 0, required
    if kind == "extra_forbidden":
        return 1, ""
    if kind == WRONG_TYPE:
        return 2, str(error["msg"])
    if kind in _TYPE_ERRORS:
        return 2, f"{field} must be {_TYPE_ERRORS[kind]}"
    if kind == WRONG_VALUE:
        return 3, str(error["msg"])
    return 3, messages.get(f"{field}:{kind}") or messages.get(field, f"{field}: {error['msg']}")


M = TypeVar("M", bound="Input")


class Input(BaseModel):
    """A request body: strict JSON types, unknown fields refused, seed-style error reasons."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    # field name, "<field>:<pydantic error type>" or "<field>:required" -> the reason given
    messages: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls: type[M], data: Mapping[str, Any]) -> M:
        """``data`` as this model, or the seed's 400 INVALID_ARGUMENT with the first reason."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
            found = sorted((_reason(e, cls.messages), i) for i, e in enumerate(errors))
            (precedence, reason), _ = found[0]
            if precedence == 1:
                unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
                reason = f"unknown fields {unknown}"
            raise ApiError("INVALID_ARGUMENT", reason) from None


# --- API keys -------------------------------------------------------------------------------


def _expires_at(value: object) -> object:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(WRONG_TYPE, "expires_at must be str")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(WRONG_TYPE, "expires_at must be ISO 8601") from None


def _permissions(value: object) -> object:
    """A list of endpoints is stored as the comma-separated string the CLI takes."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


class KeyOptions(Input):
    """Options of ``keys create`` / ``keys update`` (CLI and admin API); ``None`` or absent
    leaves a value as it is."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "The CLI's `keys create|update` options; null or absent: unchanged."
        }
    )
    messages: ClassVar[dict[str, str]] = {
        "name": f"name must be at most {MAX_NAME} printable characters",
        "quota_period": f"quota period must be one of {choices.QUOTA_PERIODS}",
        "quota": "quota must be >= 0",
        "quota:less_than_equal": f"quota must be at most {MAX_INT}",
        "burst:less_than_equal": f"burst must be at most {MAX_INT}",
        "rate": "rate must be > 0 requests per second",
        "burst": "burst must be >= 1",
    }

    name: str | None = Field(default=None, max_length=MAX_NAME)
    quota: int | None = Field(
        default=None, ge=0, le=MAX_INT, description="Requests allowed per quota period."
    )
    quota_period: QuotaPeriod | None = None
    rate: float | None = Field(default=None, gt=0, description="Requests per second.")
    burst: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="Requests allowed at once above the rate."
    )
    expires_at: Annotated[datetime | None, BeforeValidator(_expires_at)] = Field(
        default=None, description="ISO 8601 expiry with a time zone."
    )
    permissions: Annotated[
        str | None,
        BeforeValidator(_permissions, json_schema_input_type=str | list[Permission] | None),
    ] = Field(default=None, description="Comma-separated or a list; empty: every endpoint.")
    # "" removes the URL: documented as its own choice, since it is no URI.
    webhook_url: Url | Literal[""] | None = Field(
        default=None, description="Where `liveness.completed` webhooks go; empty: none."
    )
    require_signed: bool | None = Field(
        default=None, description="Every capture must be signed with the key's sdk_secret."
    )
    require_session: bool | None = Field(
        default=None,
        description="Every capture must carry a capture session's nonce (POST /v1/sessions).",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise PydanticCustomError(WRONG_VALUE, cls.messages["name"])
        return value

    @field_validator("expires_at")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise PydanticCustomError(WRONG_VALUE, "expires_at must carry a time zone")
        return value

    @field_validator("permissions")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value:
            unknown = {p.strip() for p in value.split(",") if p.strip()} - set(choices.ENDPOINTS)
            if unknown:
                raise PydanticCustomError(
                    WRONG_VALUE,
                    "unknown permissions {unknown}; known: {known}",
                    {"unknown": str(sorted(unknown)), "known": ", ".join(choices.ENDPOINTS)},
                )
        return value


class KeyCreate(KeyOptions):
    """``POST /admin/keys``: the options, with a name (as ``antihack keys create --name``)."""

    model_config = ConfigDict(json_schema_extra={"description": "A new key's options."})
    messages: ClassVar[dict[str, str]] = {
        **KeyOptions.messages,
        "name:required": "name is required (a non-empty string)",
    }

    name: Annotated[str, Field(max_length=MAX_NAME, pattern=r"\S")]


class Key(BaseModel):
    """An API key as admins see it: never a secret."""

    api_id: str
    name: str
    created_at: DateTime
    expires_at: DateTime | None
    revoked: bool
    permissions: list[Permission]
    quota: int | None
    quota_period: QuotaPeriod
    rate: Annotated[float | None, Field(description="requests per second")]
    burst: int | None
    webhook_url: Url | None
    webhook_disabled_at: DateTime | None
    webhook_secret_rotated_at: DateTime | None
    require_signed: bool
    require_session: Annotated[
        bool, Field(description="Every capture must carry a capture session's nonce.")
    ]


class KeyWithSecrets(Key):
    """A key with its secrets: shown only when created or rotated."""

    api_secret: str
    webhook_secret: Annotated[str, Field(pattern="^whsec_")]
    sdk_secret: str


class KeyList(BaseModel):
    keys: list[Key]


# --- capture sessions -----------------------------------------------------------------------


class SessionOptions(Input):
    """No options yet: send no body, or `{}`."""

    model_config = ConfigDict(json_schema_extra={"maxProperties": 0})


class LightSequence(BaseModel):
    """Only when the challenge has a LIGHT step: the colours the SDK fills the screen with, in
    order, and how long each is shown."""

    colors: list[Annotated[str, Field(pattern="^#[0-9a-f]{6}$")]]
    durations_ms: list[Annotated[int, Field(ge=1)]]


class NewSession(BaseModel):
    """A capture session. Give `nonce`, `challenge` and `upload_token` to the capture SDK; the
    capture carries the nonce as `session_nonce`."""

    request_id: RequestId
    status: Ok
    session_id: SessionId
    nonce: Annotated[
        str,
        Field(
            min_length=22,
            pattern="^[A-Za-z0-9_-]+$",
            description="URL-safe random (192 bits); redeemable by one capture.",
        ),
    ]
    challenge: SessionChallenge
    expires_at: DateTime
    upload_token: Annotated[
        str,
        Field(
            description="Opaque bearer token: submits this session's capture once "
            "(`Authorization: Bearer`), before expires_at, and reads the job it created until "
            "10 minutes after expires_at. Shown only here."
        ),
    ]
    light: LightSequence | None = None


class Session(BaseModel):
    request_id: RequestId
    status: Ok
    session_id: SessionId
    challenge: SessionChallenge
    expires_at: DateTime
    state: Annotated[
        choices.CaptureSessionState, Field(description="USED once a submission redeemed its nonce.")
    ]
    job_id: Annotated[RequestId | None, Field(description="The job that redeemed the nonce.")]
    light: LightSequence | None = None


# --- the seed endpoint and jobs -------------------------------------------------------------


class Error(BaseModel):
    """Every error answer. `reason` says what to fix."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "INVALID_ARGUMENT",
                    "reason": "must specify liveness_data_file' argument",
                    "request_id": SEED_EXAMPLE_ID,
                }
            ]
        }
    )

    status: ErrorStatus
    reason: str
    request_id: RequestId


Probability = Annotated[float, Field(ge=0, le=1)]


class Extra(BaseModel):
    """Quality and face signals (the seed's fields; every threshold 0.5)."""

    mask_proba: Probability = Field(
        description="P(the face is covered by a mask); masked = mask_proba > 0.5"
    )
    quality_score: Probability = Field(
        description="frame quality in [0, 1]; quality_too_low = quality_score < 0.5"
    )
    quality_too_low: bool = Field(description="quality_score < 0.5")
    blur_or_dark: bool = Field(
        description="face crop Laplacian variance < 40 or mean brightness < 65"
    )
    has_no_face: bool = Field(description="no face in any frame")
    face_too_small: bool = Field(description="face box shorter side < 80 px")
    image_too_small: bool = Field(description="image side < 240 px")
    masked: bool = Field(description="mask_proba > 0.5")
    face_quality_low: bool = Field(description="face_quality_score < 0.5")
    face_quality_score: Probability = Field(
        description="face probability x crop sharpness and light, in [0, 1]"
    )
    is_live: bool = Field(description="live_proba > 0.5")
    live_proba: Probability = Field(
        description="presentation-attack model's live probability (uncalibrated)"
    )
    eye_closed: bool = Field(description="eye_score < 0.5")
    eye_score: Probability = Field(description="P(eyes open), from the eye aspect ratio")


class SeedResult(BaseModel):
    """The seed endpoint's success body."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": SEED_EXAMPLE_ID,
                    "status": "OK",
                    "score": 0.13119,
                    "extra": EXTRA_EXAMPLE,
                }
            ]
        }
    )

    request_id: RequestId
    status: Ok
    score: Probability = Field(description="Hack score; 0.98 or more means hack.")
    extra: Extra | None = omitted("Only with return_extra=1.")
    image_base64: str | None = omitted(
        "The judged frame as JPEG; only with return_image=1.",
        contentEncoding="base64",
        contentMediaType="image/jpeg",
    )


JobResult = TypeAliasType(
    "JobResult",
    Annotated[
        SeedResult | Error,
        Field(
            description="Exactly the body the seed endpoint answers: a result or an error.",
            json_schema_extra=_one_of,
        ),
    ],
)


class Accepted(BaseModel):
    """A submission accepted as a job; poll `job_url`."""

    request_id: RequestId
    status: JobState
    job_url: Url


class FailedStep(BaseModel):
    step: str = Field(description="The challenge step.")
    why: str = Field(description="What was measured.")


class Job(BaseModel):
    request_id: RequestId
    status: JobState
    created_at: DateTime
    started_at: DateTime | None
    finished_at: DateTime | None
    attempts: int = Field(ge=0)
    result: JobResult | None = Field(json_schema_extra=_one_of)
    reasons: list[str] | None = omitted(
        "Reason codes of the decision (once finished).", examples=[["session_replayed"]]
    )
    failed_steps: list[FailedStep] | None = omitted(
        "Challenge steps the capture did not perform (reason challenge_not_met), in the drawn "
        "order, each with what was measured and what was needed; empty when every step was met "
        "(once finished).",
        examples=[[{"step": "TURN_LEFT", "why": "yaw reached 4°, needs 12°"}]],
    )
    model_versions: dict[str, str] | None = omitted("Model name → version used (once finished).")
    job_url: Url | None = omitted()


class JobInputDeleted(BaseModel):
    request_id: RequestId
    status: Ok


Flag = Literal[0, 1]


class Submission(BaseModel):
    """Exactly one of liveness_data_file, liveness_data_url, image_id."""

    # A multipart form: api/submission.py reads it (the seed's checks and reasons, `0`/`1` as
    # text); this model documents it, and a test checks that the two name the same fields.
    liveness_data_file: bytes | None = omitted(
        "A liveness capture (protobuf `antihack.liveness.v1.Capture`).",
        contentMediaType="application/octet-stream",
    )
    liveness_data_url: Url | None = omitted(
        "http(s) URL of a capture, fetched by the service at submission (no redirects, public "
        "addresses only, ANTIHACK_DOWNLOAD_TIMEOUT_S)."
    )
    image_id: str | None = omitted("An image uploaded by this key with POST /face/liveness_image.")
    return_image: Flag = Field(default=0, description="1: return the judged frame as JPEG.")
    return_extra: Flag = Field(default=0, description="1: return the `extra` signals.")
    callback_url: Url | None = omitted(
        "Where the signed `liveness.completed` webhook is POSTed (instead of the key's "
        "webhook_url)."
    )


class ImageUpload(BaseModel):
    image: bytes = Field(
        description="A JPEG or PNG image.", json_schema_extra={"contentMediaType": "image/*"}
    )


class ImageUploaded(BaseModel):
    request_id: RequestId
    status: Ok
    image_id: str = Field(pattern="^IMG[0-9a-f]{32}$")
    expires_at: DateTime


# --- usage ----------------------------------------------------------------------------------


def _digits(value: object) -> object:
    """A number in a query string as the checks before the models took it: decimal digits, no
    sign or space. ``isdecimal``, not ``isdigit``: "²" is a digit that ``int()`` refuses."""
    if isinstance(value, str):
        if not value.isdecimal():
            raise ValueError("not a whole number")
        return int(value)
    return value


class Query(Input):
    """Query parameters: text, a parameter not named here ignored."""

    model_config = ConfigDict(strict=False, extra="ignore")


MAX_DAYS = 366


class UsageQuery(Query):
    """``GET /v1/usage`` and ``GET /admin/usage``."""

    messages: ClassVar[dict[str, str]] = {"days": f"days must be an integer from 1 to {MAX_DAYS}"}

    days: Annotated[int, BeforeValidator(_digits)] = Field(
        default=31, ge=1, le=MAX_DAYS, description="Days of per-day counts, today included."
    )


def query_parameter(model: type[Query], name: str) -> dict[str, Any]:
    """One field of a query model as an OpenAPI parameter object."""
    generated = model.model_json_schema(schema_generator=_Schema)
    schema = dict(generated["properties"][name])
    parameter: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": name in generated.get("required", ()),
    }
    if "description" in schema:
        parameter["description"] = schema.pop("description")
    return {**parameter, "schema": schema}


Count = Annotated[int, Field(ge=0)]


class UsageDay(BaseModel):
    date: date
    accepted: Count
    succeeded: Count
    failed: Count
    refunded: Count


class Usage(BaseModel):
    api_id: str
    period: QuotaPeriod
    period_key: str = Field(examples=["day:2026-11-26", "total"])
    period_start: DateTime | None = optional()
    period_end: DateTime | None = optional()
    used: Count
    limit: int | None = Field(description="null: no quota")
    remaining: int | None
    days: list[UsageDay]


class UsageList(BaseModel):
    keys: list[Usage]


# --- webhooks -------------------------------------------------------------------------------


class WebhookAttempt(BaseModel):
    attempted_at: DateTime
    url: Url
    status_code: int | None
    latency_ms: int | None = optional()
    error: str | None = optional()


class WebhookDelivery(BaseModel):
    id: str = Field(
        pattern="^msg_", description="The `webhook-id` header of every attempt of this delivery."
    )
    event_type: str = Field(examples=["liveness.completed"])
    request_id: RequestId
    api_id: str
    url: Url
    target: Literal["callback", "key"] | None = omitted()
    status: DeliveryState
    attempts: Count
    next_attempt_at: DateTime | None = optional()
    created_at: DateTime | None = omitted()
    delivered_at: DateTime | None = optional()
    last_status_code: int | None = optional()
    last_error: str | None = optional()
    attempt_log: list[WebhookAttempt] | None = omitted("Only when one delivery is read.")


class WebhookDeliveryPage(BaseModel):
    deliveries: list[WebhookDelivery]
    next_before: str | None = Field(
        description="Pass as `before` for the next page; null on the last."
    )


class LivenessCompleted(BaseModel):
    """Body of the `liveness.completed` webhook (Standard Webhooks 1.0)."""

    type: Literal["liveness.completed"]
    timestamp: DateTime
    data: Job


# --- probes ---------------------------------------------------------------------------------


class Health(BaseModel):
    status: Ok


class ReadinessChecks(BaseModel):
    database: str
    redis: str
    workers: str
    consumption: str | None = omitted()


class Readiness(BaseModel):
    status: Literal["OK", "NOT_READY"]
    checks: ReadinessChecks


# --- answering -----------------------------------------------------------------------------


def shown(body: BaseModel) -> dict[str, Any]:
    """A response model as the JSON the API sends: fields in the model's order, a field that
    was not given left out (not null), dates as ``isoformat()``."""
    return body.model_dump(mode="json", exclude_unset=True)


JOB_RESULT: TypeAdapter[SeedResult | Error] = TypeAdapter(JobResult)


def job_result(body: Mapping[str, Any]) -> dict[str, Any]:
    """A job's stored result (the seed endpoint's body) checked and shaped by its model; a
    stored body outside the model is returned as it is (and logged), never refused."""
    try:
        result = JOB_RESULT.validate_python(body)
    except ValidationError as exc:
        log.error("stored result outside its model, sent as it is: %s", exc)
        return dict(body)
    shaped: dict[str, Any] = JOB_RESULT.dump_python(result, mode="json", exclude_unset=True)
    return shaped


# --- the document's part --------------------------------------------------------------------

# (model, mode): requests validate, responses serialize.
DOCUMENTED: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (KeyOptions, "validation"),
    (KeyCreate, "validation"),
    (Key, "serialization"),
    (KeyWithSecrets, "serialization"),
    (KeyList, "serialization"),
    (SessionOptions, "validation"),
    (NewSession, "serialization"),
    (Session, "serialization"),
    (Error, "serialization"),
    (SeedResult, "serialization"),
    (Accepted, "serialization"),
    (Job, "serialization"),
    (JobInputDeleted, "serialization"),
    (Submission, "validation"),
    (ImageUpload, "validation"),
    (ImageUploaded, "serialization"),
    (Usage, "serialization"),
    (UsageList, "serialization"),
    (WebhookDelivery, "serialization"),
    (WebhookDeliveryPage, "serialization"),
    (LivenessCompleted, "serialization"),
    (Health, "serialization"),
    (Readiness, "serialization"),
)
REF_TEMPLATE = "#/components/schemas/{model}"


# Values, not schemas: kept as written (an example body in the order the service sends it).
_AS_WRITTEN = ("examples", "default", "const", "enum")


def _ordered(value: Any, key: str | None) -> Any:
    """pydantic's order (keywords sorted, properties in field order), values as written."""
    if key in _AS_WRITTEN:
        return value
    if isinstance(value, dict):
        names = key == "properties"  # field names, in the model's order
        items = value.items() if names else sorted(value.items())
        return {k: _ordered(v, None if names else k) for k, v in items}
    if isinstance(value, list):
        return [_ordered(v, key) for v in value]
    return value


class _Schema(GenerateJsonSchema):
    """pydantic's JSON Schema (2020-12, as OpenAPI 3.1 uses) without the titles it derives
    from field names (the property names say it), and examples in the order of the wire."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def sort(self, value: Any, parent_key: str | None = None) -> Any:
        return _ordered(value, parent_key)


def component_schemas() -> dict[str, Any]:
    """``components/schemas`` entries generated from the models and the named types."""
    _, top = models_json_schema(DOCUMENTED, ref_template=REF_TEMPLATE, schema_generator=_Schema)
    schemas: dict[str, Any] = top.get("$defs", {})
    for schema in schemas.values():
        schema.pop("title", None)
    return schemas
