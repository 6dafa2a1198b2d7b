"""Bad input is refused with a clear 4xx JSON error while the server stays healthy and the
gallery unchanged; unusual but valid input is accepted. Limits are those of SERVER_ENV."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator

import cv2
import httpx
import numpy as np
import pytest
from service_fixtures import (
    b64,
    encode,
    encoded_frames,
    multipart_files,
    person_frames,
    zip_archive,
)

MiB = 1024 * 1024


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny, well-formed PNG whose header declares a gigantic image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def huge_jpeg() -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim 60000 x 60000."""
    data = bytearray(encoded_frames(1, 1, fmt="jpeg")[0])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def lying_zip_bomb() -> bytes:
    """A 3 MiB entry of zeros whose headers declare 100 bytes."""
    data = bytearray(zip_archive({"0.png": b"\x00" * (3 * MiB)}))
    local = data.index(b"PK\x03\x04")
    data[local + 22 : local + 26] = struct.pack("<I", 100)
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", 100)
    return bytes(data)


def form(identity: str = "bad-input", **fields: str) -> dict[str, str]:
    return {"identity": identity, **fields}


def one_frame() -> list[tuple[str, tuple]]:
    return multipart_files(encoded_frames(1, 1))


MULTIPART_START = (
    b'--xyz\r\nContent-Disposition: form-data; name="frames"; filename="0.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)


def chunked(total: int, prefix: bytes = b"", chunk: int = 256 * 1024) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends it with chunked transfer encoding."""
    yield prefix
    sent = len(prefix)
    while sent < total:
        yield b"a" * chunk
        sent += chunk


Request = Callable[[httpx.Client], httpx.Response]

BAD_REQUESTS: dict[str, tuple[Request, int, str]] = {
    "no frames": (lambda c: c.post("/tracklets", data=form(), files={}), 400, "no_frames"),
    "file in an unknown field": (
        lambda c: c.post(
            "/tracklets", data=form(), files=[("photo", ("0.png", encoded_frames(1, 1)[0]))]
        ),
        400,
        "bad_request",
    ),
    "non-image bytes": (
        lambda c: c.post(
            "/tracklets", data=form(), files=multipart_files([b"just some text, not a frame"])
        ),
        415,
        "unsupported_format",
    ),
    "GIF (not an allowed format)": (
        lambda c: c.post(
            "/tracklets", data=form(), files=multipart_files([b"GIF89a" + b"\0" * 40])
        ),
        415,
        "unsupported_format",
    ),
    "truncated JPEG": (
        lambda c: c.post(
            "/tracklets",
            data=form(),
            files=multipart_files([encoded_frames(2, 1, "jpeg")[0][:-300]], fmt="jpeg"),
        ),
        400,
        "truncated_image",
    ),
    "truncated PNG": (
        lambda c: c.post(
            "/tracklets", data=form(), files=multipart_files([encoded_frames(2, 1)[0][:-40]])
        ),
        400,
        "truncated_image",
    ),
    "PNG header declaring 60000x60000": (
        lambda c: c.post("/tracklets", data=form(), files=multipart_files([huge_png()])),
        413,
        "frame_too_large",
    ),
    "JPEG header declaring 60000x60000": (
        lambda c: c.post("/query", json={"frames": b64([huge_jpeg()])}),
        413,
        "frame_too_large",
    ),
    "too many frames": (
        lambda c: c.post(
            "/tracklets",
            json={"identity": "x", "frames": b64([encode(np.zeros((8, 8, 3), np.uint8))] * 65)},
        ),
        413,
        "too_many_frames",
    ),
    "frames totalling too many pixels (decompression amplification)": (
        lambda c: c.post(
            "/tracklets",
            data=form(),
            files=multipart_files([encode(np.zeros((1000, 1000, 3), np.uint8))] * 3),
        ),
        413,
        "tracklet_too_large",
    ),
    "zip bomb (compressible entry over the inflated limit)": (
        lambda c: c.post(
            "/tracklets",
            data=form(),
            files={"archive": ("bomb.zip", zip_archive({"0.png": b"\x00" * (3 * MiB)}))},
        ),
        413,
        "archive_too_large",
    ),
    "zip bomb with lying size headers": (
        lambda c: c.post(
            "/tracklets", data=form(), files={"archive": ("bomb.zip", lying_zip_bomb())}
        ),
        400,
        "bad_archive",
    ),
    "zip with a .. path": (
        lambda c: c.post(
            "/tracklets",
            data=form(),
            files={"archive": ("a.zip", zip_archive({"../../etc/0.png": encoded_frames(1, 1)[0]}))},
        ),
        400,
        "unsafe_archive_path",
    ),
    "zip with an absolute path": (
        lambda c: c.post(
            "/tracklets",
            data=form(),
            files={"archive": ("a.zip", zip_archive({"/tmp/0.png": encoded_frames(1, 1)[0]}))},
        ),
        400,
        "unsafe_archive_path",
    ),
    "zip with too many entries": (
        lambda c: c.post(
            "/tracklets",
            data=form(),
            files={"archive": ("a.zip", zip_archive({f"{i}.txt": b"" for i in range(101)}))},
        ),
        413,
        "archive_too_many_entries",
    ),
    "not a zip": (
        lambda c: c.post("/tracklets", data=form(), files={"archive": ("a.zip", b"PK nonsense")}),
        400,
        "bad_archive",
    ),
    "frames as a text field": (
        lambda c: c.post("/tracklets", data=form(frames="0001.jpg")),
        400,
        "bad_request",
    ),
    "frames and archive together": (
        lambda c: c.post(
            "/tracklets",
            data=form(),
            files=[*one_frame(), ("archive", ("a.zip", zip_archive({"0.png": b""})))],
        ),
        400,
        "bad_request",
    ),
    "oversized body sent chunked": (
        lambda c: c.post(
            "/tracklets",
            content=chunked(6 * MiB, MULTIPART_START),
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        ),
        413,
        "request_too_large",
    ),
    "oversized JSON body sent chunked": (
        lambda c: c.post(
            "/query",
            content=chunked(6 * MiB, b'{"frames": ["'),
            headers={"content-type": "application/json"},
        ),
        413,
        "request_too_large",
    ),
    "oversized body with Content-Length": (
        lambda c: c.post(
            "/query", content=b"{" + b" " * (5 * MiB), headers={"content-type": "application/json"}
        ),
        413,
        "request_too_large",
    ),
    "invalid base64": (
        lambda c: c.post("/query", json={"frames": ["@@@ not base64 @@@"]}),
        400,
        "bad_base64",
    ),
    "empty JSON frame list": (
        lambda c: c.post("/tracklets", json={"identity": "x", "frames": []}),
        422,
        "invalid_request",
    ),
    "malformed JSON": (
        lambda c: c.post(
            "/query", content=b'{"frames": [', headers={"content-type": "application/json"}
        ),
        422,
        "invalid_request",
    ),
    "wrong content type": (
        lambda c: c.post("/query", content=b"frames", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    ),
    "missing identity": (
        lambda c: c.post("/tracklets", data={"camera": "c"}, files=one_frame()),
        422,
        "invalid_request",
    ),
    "bad ISO time": (
        lambda c: c.post("/tracklets", data=form(start_time="yesterday noon"), files=one_frame()),
        422,
        "invalid_request",
    ),
    "end before start": (
        lambda c: c.post(
            "/tracklets",
            data=form(start_time="2024-01-02T00:00:00Z", end_time="2024-01-01T00:00:00Z"),
            files=one_frame(),
        ),
        422,
        "invalid_request",
    ),
    "bad metadata JSON": (
        lambda c: c.post("/tracklets", data=form(metadata="{not json"), files=one_frame()),
        422,
        "invalid_request",
    ),
    "metadata not an object": (
        lambda c: c.post("/tracklets", data=form(metadata="[1, 2]"), files=one_frame()),
        422,
        "invalid_request",
    ),
    "unknown JSON field": (
        lambda c: c.post(
            "/tracklets", json={"identity": "x", "frames": b64(encoded_frames(1, 1)), "path": "/"}
        ),
        422,
        "invalid_request",
    ),
    "top_k zero": (
        lambda c: c.post("/query", json={"frames": b64(encoded_frames(1, 1)), "top_k": 0}),
        422,
        "invalid_request",
    ),
    "top_k over the limit": (
        lambda c: c.post("/query", data={"top_k": "51"}, files=one_frame()),
        422,
        "top_k_too_large",
    ),
    "negative max_distance": (
        lambda c: c.post("/query", json={"frames": b64(encoded_frames(1, 1)), "max_distance": -1}),
        422,
        "invalid_request",
    ),
    "page limit zero": (lambda c: c.get("/identities?limit=0"), 422, "invalid_request"),
    "batch over REID_MAX_BATCH_FRAMES, refused before any work": (
        lambda c: c.post(
            "/tracklets/batch",
            json={
                "tracklets": [
                    {
                        "identity": f"b{i}",
                        "frames": b64([encode(np.zeros((8, 8, 3), np.uint8))] * 60),
                    }
                    for i in range(4)
                ]
            },
        ),
        413,
        "too_many_frames",
    ),
    "batch with no tracklets": (
        lambda c: c.post("/tracklets/batch", json={"tracklets": []}),
        422,
        "invalid_request",
    ),
    "delete of an unknown identity": (
        lambda c: c.delete("/identities/nobody-enrolled-this"),
        404,
        "identity_not_found",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_refused_clearly(service_client: httpx.Client, case: str) -> None:
    send, status, code = BAD_REQUESTS[case]
    before = service_client.get("/readyz").json()["gallery"]["count"]
    response = send(service_client)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 10
    with httpx.Client(base_url=str(service_client.base_url)) as fresh:
        assert fresh.get("/healthz").status_code == 200
        assert fresh.get("/readyz").json()["gallery"]["count"] == before


def test_limit_messages_name_the_limit(service_client: httpx.Client) -> None:
    response = service_client.post("/tracklets", data=form(), files=multipart_files([huge_png()]))
    message = response.json()["error"]["message"]
    assert "60000x60000" in message and "REID_MAX_PIXELS_PER_FRAME" in message
    response = service_client.post(
        "/query", content=chunked(6 * MiB), headers={"content-type": "application/json"}
    )
    assert str(4 * MiB) in response.json()["error"]["message"]


def _enroll_ok(client: httpx.Client, files: list[tuple[str, tuple]]) -> dict:
    before = client.get("/readyz").json()["gallery"]["count"]
    response = client.post("/tracklets", data={"identity": "accepted"}, files=files)
    assert response.status_code == 201, response.text
    assert client.get("/readyz").json()["gallery"]["count"] == before + 1
    body = response.json()
    assert len(body["attention"]) == body["num_frames"]
    assert sum(body["attention"]) == pytest.approx(1.0, abs=1e-4)
    return body


def test_single_frame_tracklet_is_accepted(service_client: httpx.Client) -> None:
    body = _enroll_ok(service_client, multipart_files(encoded_frames(20, 1)))
    assert body["num_frames"] == 1 and body["attention"] == [pytest.approx(1.0)]


def test_frames_of_mixed_sizes_and_formats_are_accepted(service_client: httpx.Client) -> None:
    frames = person_frames(21, 4)
    files = [
        ("frames", ("0.png", encode(frames[0], "png"), "image/png")),
        ("frames", ("1.jpg", encode(cv2.resize(frames[1], (30, 70)), "jpeg"), "image/jpeg")),
        ("frames", ("2.png", encode(cv2.resize(frames[2], (200, 400)), "png"), "image/png")),
        # Declared type and name are ignored: the bytes say PNG.
        ("frames", ("3.jpg", encode(frames[3], "png"), "application/octet-stream")),
    ]
    assert _enroll_ok(service_client, files)["num_frames"] == 4


def test_grey_and_rgba_pngs_are_accepted(service_client: httpx.Client) -> None:
    frames = person_frames(22, 4)
    grey = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([frames[1], np.full(frames[1].shape[:2], 200, np.uint8)])
    grey16 = cv2.cvtColor(frames[2], cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    files = multipart_files([encode(grey), encode(rgba), encode(grey16), encode(frames[3])])
    assert _enroll_ok(service_client, files)["num_frames"] == 4


def test_long_tracklet_is_subsampled_but_answers_one_weight_per_frame(
    service_client: httpx.Client,
) -> None:
    # SERVER_ENV embeds at most 16 frames; 40 are uploaded.
    body = _enroll_ok(service_client, multipart_files(encoded_frames(23, 40)))
    assert body["num_frames"] == 40
    assert all(weight > 0 for weight in body["attention"])


def test_line_wrapped_base64_is_accepted(service_client: httpx.Client) -> None:
    import base64

    wrapped = base64.encodebytes(encoded_frames(24, 1)[0]).decode()  # 76-column lines
    response = service_client.post("/query", json={"frames": [wrapped]})
    assert response.status_code == 200, response.text


def test_zip_with_os_litter_and_subfolders_is_accepted(service_client: httpx.Client) -> None:
    frames = encoded_frames(25, 3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("__MACOSX/._1.png", b"resource fork")
        archive.writestr("seq/.DS_Store", b"finder")
        for i, frame in enumerate(frames):
            archive.writestr(f"seq/{i}.png", frame)
    response = service_client.post(
        "/tracklets", data={"identity": "zipped"}, files={"archive": ("s.zip", buffer.getvalue())}
    )
    assert response.status_code == 201, response.text
    assert response.json()["num_frames"] == 3
