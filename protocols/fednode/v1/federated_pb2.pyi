from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FlowerEnvelope(_message.Message):
    __slots__ = ("message", "job_id")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    job_id: str
    def __init__(self, message: _Optional[bytes] = ..., job_id: _Optional[str] = ...) -> None: ...
