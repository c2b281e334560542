"""The API's typed request and response models (pydantic v2): one definition per schema.

A model validates what comes in (``parse`` turns pydantic's errors into the seed's
``INVALID_ARGUMENT`` body, with the same reasons as before the models), shapes what goes out,
and generates its part of the OpenAPI document (``component_schemas``); the CLI and the admin
API use the same key models. The vocabularies (challenges, quota periods, permissions) are
``shared/choices.py``'s ``Literal`` types, named here so that the document refers to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from antihack.shared import choices
from antihack.shared.domain.errors import ApiError

MAX_NAME = 200  # api_keys.name
MAX_INT = 2**31 - 1  # api_keys.quota_limit and .burst are PostgreSQL integers

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
            examples=["TID8bf47ab6eda64476973cc5f5b6ebf57e"],
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
        choices.SessionState, Field(description="USED once a submission redeemed its nonce.")
    ]
    job_id: Annotated[RequestId | None, Field(description="The job that redeemed the nonce.")]
    light: LightSequence | None = None


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
)
REF_TEMPLATE = "#/components/schemas/{model}"


class _Schema(GenerateJsonSchema):
    """pydantic's JSON Schema (2020-12, as OpenAPI 3.1 uses) without the titles it derives
    from field names: the property names say it."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def component_schemas() -> dict[str, Any]:
    """``components/schemas`` entries generated from the models and the named types."""
    _, top = models_json_schema(DOCUMENTED, ref_template=REF_TEMPLATE, schema_generator=_Schema)
    schemas: dict[str, Any] = top.get("$defs", {})
    for schema in schemas.values():
        schema.pop("title", None)
    return schemas
