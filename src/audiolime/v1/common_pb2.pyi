from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AudioInput(_message.Message):
    __slots__ = ("content", "uri", "filename")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    uri: str
    filename: str
    def __init__(self, content: _Optional[bytes] = ..., uri: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...
