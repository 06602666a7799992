from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ShareRequest(_message.Message):
    __slots__ = ("agreement_id", "columns", "compression")
    AGREEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    agreement_id: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    compression: str
    def __init__(self, agreement_id: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., compression: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("receipt_json",)
    RECEIPT_JSON_FIELD_NUMBER: _ClassVar[int]
    receipt_json: bytes
    def __init__(self, receipt_json: _Optional[bytes] = ...) -> None: ...

class ReceiptAck(_message.Message):
    __slots__ = ("ledger_seq",)
    LEDGER_SEQ_FIELD_NUMBER: _ClassVar[int]
    ledger_seq: int
    def __init__(self, ledger_seq: _Optional[int] = ...) -> None: ...

class AgreementSubmission(_message.Message):
    __slots__ = ("agreement_json",)
    AGREEMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    agreement_json: bytes
    def __init__(self, agreement_json: _Optional[bytes] = ...) -> None: ...

class AgreementAck(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class RevocationNotice(_message.Message):
    __slots__ = ("notice_json",)
    NOTICE_JSON_FIELD_NUMBER: _ClassVar[int]
    notice_json: bytes
    def __init__(self, notice_json: _Optional[bytes] = ...) -> None: ...

class RevocationAck(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...
