from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("payload", "response_size", "delay_ms")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    response_size: int
    delay_ms: int
    def __init__(self, payload: _Optional[bytes] = ..., response_size: _Optional[int] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("payload", "sequence")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    sequence: int
    def __init__(self, payload: _Optional[bytes] = ..., sequence: _Optional[int] = ...) -> None: ...

class EchoStreamRequest(_message.Message):
    __slots__ = ("count", "response_size", "interval_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    response_size: int
    interval_ms: int
    def __init__(self, count: _Optional[int] = ..., response_size: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("role", "version", "services", "memory_budget_bytes")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    role: str
    version: str
    services: _containers.RepeatedScalarFieldContainer[str]
    memory_budget_bytes: int
    def __init__(self, role: _Optional[str] = ..., version: _Optional[str] = ..., services: _Optional[_Iterable[str]] = ..., memory_budget_bytes: _Optional[int] = ...) -> None: ...
