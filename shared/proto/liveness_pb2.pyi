from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Platform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLATFORM_UNSPECIFIED: _ClassVar[Platform]
    ANDROID: _ClassVar[Platform]
    IOS: _ClassVar[Platform]
    WEB: _ClassVar[Platform]
    OTHER: _ClassVar[Platform]

class Challenge(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHALLENGE_UNSPECIFIED: _ClassVar[Challenge]
    BLINK: _ClassVar[Challenge]
    MOUTH: _ClassVar[Challenge]
    NOD: _ClassVar[Challenge]
    YAW: _ClassVar[Challenge]
    TURN_LEFT: _ClassVar[Challenge]
    TURN_RIGHT: _ClassVar[Challenge]
    LOOK_UP: _ClassVar[Challenge]
    LOOK_DOWN: _ClassVar[Challenge]
    OPEN_MOUTH: _ClassVar[Challenge]
    SMILE: _ClassVar[Challenge]
    MOVE_CLOSER: _ClassVar[Challenge]
    LIGHT: _ClassVar[Challenge]
PLATFORM_UNSPECIFIED: Platform
ANDROID: Platform
IOS: Platform
WEB: Platform
OTHER: Platform
CHALLENGE_UNSPECIFIED: Challenge
BLINK: Challenge
MOUTH: Challenge
NOD: Challenge
YAW: Challenge
TURN_LEFT: Challenge
TURN_RIGHT: Challenge
LOOK_UP: Challenge
LOOK_DOWN: Challenge
OPEN_MOUTH: Challenge
SMILE: Challenge
MOVE_CLOSER: Challenge
LIGHT: Challenge

class DeviceInfo(_message.Message):
    __slots__ = ("model", "os_version", "is_emulator", "is_rooted", "virtual_camera")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_EMULATOR_FIELD_NUMBER: _ClassVar[int]
    IS_ROOTED_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_CAMERA_FIELD_NUMBER: _ClassVar[int]
    model: str
    os_version: str
    is_emulator: bool
    is_rooted: bool
    virtual_camera: bool
    def __init__(self, model: _Optional[str] = ..., os_version: _Optional[str] = ..., is_emulator: _Optional[bool] = ..., is_rooted: _Optional[bool] = ..., virtual_camera: _Optional[bool] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("image", "timestamp_ms", "challenge_step", "best", "light_index")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_STEP_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    LIGHT_INDEX_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    timestamp_ms: int
    challenge_step: Challenge
    best: bool
    light_index: int
    def __init__(self, image: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ..., challenge_step: _Optional[_Union[Challenge, str]] = ..., best: _Optional[bool] = ..., light_index: _Optional[int] = ...) -> None: ...

class StepPrompt(_message.Message):
    __slots__ = ("step", "shown_at_ms")
    STEP_FIELD_NUMBER: _ClassVar[int]
    SHOWN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    step: Challenge
    shown_at_ms: int
    def __init__(self, step: _Optional[_Union[Challenge, str]] = ..., shown_at_ms: _Optional[int] = ...) -> None: ...

class Capture(_message.Message):
    __slots__ = ("version", "session_id", "sdk_version", "platform", "device", "started_at_ms", "challenges", "frames", "session_nonce", "prompts", "signature")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SESSION_NONCE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    version: int
    session_id: str
    sdk_version: str
    platform: Platform
    device: DeviceInfo
    started_at_ms: int
    challenges: _containers.RepeatedScalarFieldContainer[Challenge]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    session_nonce: str
    prompts: _containers.RepeatedCompositeFieldContainer[StepPrompt]
    signature: bytes
    def __init__(self, version: _Optional[int] = ..., session_id: _Optional[str] = ..., sdk_version: _Optional[str] = ..., platform: _Optional[_Union[Platform, str]] = ..., device: _Optional[_Union[DeviceInfo, _Mapping]] = ..., started_at_ms: _Optional[int] = ..., challenges: _Optional[_Iterable[_Union[Challenge, str]]] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., session_nonce: _Optional[str] = ..., prompts: _Optional[_Iterable[_Union[StepPrompt, _Mapping]]] = ..., signature: _Optional[bytes] = ...) -> None: ...
