from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerStatus(_message.Message):
    __slots__ = ("department", "endpoint", "reachable", "detail", "directory_serial")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_SERIAL_FIELD_NUMBER: _ClassVar[int]
    department: str
    endpoint: str
    reachable: bool
    detail: str
    directory_serial: int
    def __init__(self, department: _Optional[str] = ..., endpoint: _Optional[str] = ..., reachable: _Optional[bool] = ..., detail: _Optional[str] = ..., directory_serial: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("federation", "department", "directory_serial", "peers", "ledger_size")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_SERIAL_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    LEDGER_SIZE_FIELD_NUMBER: _ClassVar[int]
    federation: str
    department: str
    directory_serial: int
    peers: _containers.RepeatedCompositeFieldContainer[PeerStatus]
    ledger_size: str
    def __init__(self, federation: _Optional[str] = ..., department: _Optional[str] = ..., directory_serial: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[PeerStatus, _Mapping]]] = ..., ledger_size: _Optional[str] = ...) -> None: ...
