"""A multipart upload streamed to disk as it arrives: a video of gigabytes never sits in memory.

Starlette's form parser keeps each file part in memory up to 1 MB and needs a second copy to hand
a named file to FFmpeg; this reader writes every file part straight into its own file in a
per-request folder, hashes it on the way (the request's fingerprint, for idempotent retries), and
enforces the limits while reading: how many parts, how large a text field, how large a named
file part may be. The body as a whole is capped by ``BodySizeLimitMiddleware``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.schemas import ApiError

MAX_FIELD_BYTES = 1024 * 1024  # a text field (identities may map hundreds of tracks)
MAX_FIELDS = 64


@dataclass
class FilePart:
    field: str
    filename: str
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class Upload:
    """The parts of one multipart request; :meth:`cleanup` deletes its files."""

    directory: Path
    fields: dict[str, str] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)

    def files_named(self, name: str) -> list[FilePart]:
        return [part for part in self.files if part.field == name]

    def fingerprint(self) -> str:
        """Same fields and file contents in the same order -> same digest, whatever boundary
        or client built the body."""
        digest = hashlib.sha256()
        for key in sorted(self.fields):
            digest.update(f"field\x1f{key}\x1f{self.fields[key]}\x1e".encode())
        for part in self.files:
            digest.update(f"file\x1f{part.field}\x1f{part.filename}\x1f{part.sha256}\x1e".encode())
        return digest.hexdigest()

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class _Receiver:
    """python-multipart callbacks writing file parts to disk and keeping text fields."""

    def __init__(
        self, upload: Upload, max_files: int, file_limits: Mapping[str, tuple[int, str]]
    ) -> None:
        self.upload = upload
        self.max_files = max_files
        self.file_limits = file_limits
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._text: bytearray | None = None
        self._name = ""
        self._file: FilePart | None = None
        self._handle: BinaryIO | None = None
        self._hash = hashlib.sha256()

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "bad_request", "a multipart part has no name")
        self._name = _decode(options[b"name"], "part name")
        if b"filename" not in options:
            if len(self.upload.fields) >= MAX_FIELDS:
                raise ApiError(400, "bad_request", f"more than {MAX_FIELDS} form fields")
            if self._name in self.upload.fields:
                raise ApiError(400, "bad_request", f"form field {self._name!r} is given twice")
            self._text = bytearray()
            return
        if len(self.upload.files) >= self.max_files:
            raise ApiError(
                413, "too_many_files", f"more than {self.max_files} files in one request"
            )
        filename = _decode(options[b"filename"], "file name")
        path = self.upload.directory / f"part-{len(self.upload.files):06d}"
        self._file = FilePart(self._name, filename, path)
        self._handle = path.open("wb")
        self._hash = hashlib.sha256()
        self._text = None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._text is not None:
            self._text += chunk
            if len(self._text) > MAX_FIELD_BYTES:
                raise ApiError(
                    413,
                    "field_too_large",
                    f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes",
                )
            return
        assert self._file is not None and self._handle is not None
        self._file.size += len(chunk)
        limit = self.file_limits.get(self._file.field)
        if limit is not None and self._file.size > limit[0]:
            raise ApiError(
                413,
                "file_too_large",
                f"file {self._file.field!r} is larger than {limit[0]} bytes ({limit[1]})",
            )
        self._hash.update(chunk)
        self._handle.write(chunk)

    def on_part_end(self) -> None:
        if self._text is not None:
            self.upload.fields[self._name] = _decode(bytes(self._text), f"field {self._name!r}")
            self._text = None
            return
        assert self._file is not None and self._handle is not None
        self._handle.close()
        self._handle = None
        self._file.sha256 = self._hash.hexdigest()
        self.upload.files.append(self._file)
        self._file = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", f"the {what} is not valid UTF-8") from None


async def receive_multipart(
    content_type: str,
    stream: AsyncIterator[bytes],
    directory: Path,
    *,
    max_files: int,
    file_limits: Mapping[str, tuple[int, str]] | None = None,
) -> Upload:
    """Read a multipart body into a new folder under ``directory``. ``file_limits`` maps a
    file field to (most bytes, the setting that says so). On any error the files are deleted."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_request", "multipart/form-data without a boundary")
    directory.mkdir(parents=True, exist_ok=True)
    upload = Upload(Path(tempfile.mkdtemp(prefix="upload-", dir=directory)))
    receiver = _Receiver(upload, max_files, file_limits or {})
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        upload.cleanup()
        raise ApiError(400, "bad_request", f"the multipart body is malformed: {exc}") from exc
    except BaseException:
        upload.cleanup()
        raise
    finally:
        receiver.close()
    return upload
