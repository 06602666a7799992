from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("federation", "department", "display_name", "directory_serial", "version", "caller_department")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_SERIAL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CALLER_DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    federation: str
    department: str
    display_name: str
    directory_serial: int
    version: str
    caller_department: str
    def __init__(self, federation: _Optional[str] = ..., department: _Optional[str] = ..., display_name: _Optional[str] = ..., directory_serial: _Optional[int] = ..., version: _Optional[str] = ..., caller_department: _Optional[str] = ...) -> None: ...
