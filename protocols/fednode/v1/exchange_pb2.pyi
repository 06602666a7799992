from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ShareRequest(_message.Message):
    __slots__ = ("agreement_id",)
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    agreement_id: str
    def __init__(self, agreement_id: _Optional[str] = ...) -> None: ...

class ShareFrame(_message.Message):
    __slots__ = ("header", "chunk", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    chunk: bytes
    trailer: bytes
    def __init__(self, header: _Optional[bytes] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[bytes] = ...) -> None: ...

class ShareReceipt(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: bytes
    def __init__(self, receipt: _Optional[bytes] = ...) -> None: ...

class ReceiptAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
