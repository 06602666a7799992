from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdminCall(_message.Message):
    __slots__ = ("command", "args_json")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    command: str
    args_json: bytes
    def __init__(self, command: _Optional[str] = ..., args_json: _Optional[bytes] = ...) -> None: ...

class AdminFailure(_message.Message):
    __slots__ = ("kind", "message", "hint")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    hint: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class AdminEvent(_message.Message):
    __slots__ = ("progress_json", "result_json", "failure")
    PROGRESS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    progress_json: bytes
    result_json: bytes
    failure: AdminFailure
    def __init__(self, progress_json: _Optional[bytes] = ..., result_json: _Optional[bytes] = ..., failure: _Optional[_Union[AdminFailure, _Mapping]] = ...) -> None: ...
