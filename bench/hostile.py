"""Hostile inputs: the requests issue 18's attack sent, as builders the regression tests
(``tests/test_service_hostile.py``) and the attack measurement (``bench/attack.py``) share.

Each :class:`Hostile` is one request and the statuses a correct server may answer it with
(never a 5xx, except a 503 where admission control may refuse it under load). ``scale`` shrinks
the expensive ones for the test suite; at ``scale=1`` they are the sizes of the original attack
(a 61 MB zip of 700,000 entries, a 10 x 10 PNG carrying 1.2 GB of pixel data, 32 solid-colour
1448 x 1448 PNGs).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import httpx
import numpy as np

Send = Callable[[httpx.Client], httpx.Response]


@dataclass(frozen=True)
class Hostile:
    name: str
    send: Send
    statuses: frozenset[int]
    code: str | None = None  # the error code expected, when one is
    heavy: bool = False  # one of the memory/CPU attacks of the measurement
    note: str = field(default="", compare=False)


# ------------------------------------------------------------------------------- image bytes


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_data(width: int, height: int, raw_bytes: int) -> bytes:
    """An RGB PNG whose header says ``width`` x ``height`` but whose pixel data inflates to
    ``raw_bytes`` (zeros, compressed about 1000:1)."""
    compressor = zlib.compressobj(9)
    block = b"\x00" * (1 << 20)
    parts = []
    for start in range(0, raw_bytes, len(block)):
        parts.append(compressor.compress(block[: min(len(block), raw_bytes - start)]))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def solid_png(side: int, seed: int = 0) -> bytes:
    """A solid-colour PNG: a few hundred bytes on the wire, side x side x 3 bytes decoded."""
    colour = np.random.default_rng(seed).integers(0, 256, 3).astype(np.uint8)
    image = np.empty((side, side, 3), np.uint8)
    image[:] = colour
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def person_jpeg(seed: int = 0, size: tuple[int, int] = (128, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3)).astype(np.uint8), (5, 5), 2)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def person_png(seed: int = 0, size: tuple[int, int] = (128, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3)).astype(np.uint8), (5, 5), 2)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def truncated_jpeg_with_end_marker() -> bytes:
    """A JPEG cut in the middle of its scan with the end-of-image marker put back: decoders
    fill the missing rows with grey and say nothing."""
    data = person_jpeg(7)
    return data[: len(data) // 2] + b"\xff\xd9"


def many_entry_zip(entries: int) -> bytes:
    """A stored zip of ``entries`` empty files, written directly (zipfile takes seconds for
    700,000): each is a local header and a central-directory header."""
    local, central = [], []
    offset = 0
    for i in range(entries):
        name = f"{i}.png".encode()
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
        local.append(header + name)
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )
        offset += len(header) + len(name)
    directory = b"".join(central)
    count = min(entries, 0xFFFF)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    return b"".join(local) + directory + end


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------------------- requests


def _enroll_form(fields: dict[str, str], frames: list[bytes] | None = None) -> Send:
    files = [
        ("frames", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(frames or [person_jpeg()])
    ]
    return lambda c: c.post("/tracklets", data=fields, files=files)


def _post_json(path: str, body: dict | str | bytes) -> Send:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return lambda c: c.post(path, content=content, headers={"content-type": "application/json"})


def _raw_multipart(field_name: str, value: bytes) -> Send:
    """A multipart body with one text field holding ``value`` byte for byte, plus one frame."""
    frame = person_jpeg()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="'
        + field_name.encode()
        + b'"\r\n\r\n'
        + value
        + b'\r\n--b\r\nContent-Disposition: form-data; name="frames"; '
        b'filename="0.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + frame + b"\r\n--b--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=b"}
    return lambda c: c.post("/tracklets", content=body, headers=headers)


def _with_frame(template: str) -> str:
    """A hand-written JSON body (it may hold what ``json.dumps`` never writes: NaN, escapes)
    with FRAME replaced by one base64 frame."""
    return template.replace("FRAME", json.dumps(b64(person_jpeg())))


def _frames_json(**fields: object) -> dict:
    return {"frames": [b64(person_jpeg())], **fields}


def tiny_frame_batch(tracklets: int, frames: int) -> bytes:
    """A JSON batch of many tracklets of many tiny frames: a few megabytes on the wire, a lot
    of decoding, optical flow and embedding."""
    tiny = [b64(solid_png(8, seed)) for seed in range(frames)]
    items = [{"identity": f"tiny-{i}", "frames": tiny} for i in range(tracklets)]
    return json.dumps({"tracklets": items}).encode()


def _times_and_numbers() -> list[Hostile]:
    return [
        Hostile(
            "start_time whose UTC overflows (year 10000)",
            _enroll_form({"identity": "x", "start_time": "9999-12-31T23:59:59-14:00"}),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "start_time whose UTC underflows (year 0)",
            _enroll_form({"identity": "x", "start_time": "0001-01-01T00:00:00+14:00"}),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "start_after whose UTC overflows",
            _post_json("/query", _frames_json(start_after="9999-12-31T23:59:59-14:00")),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "max_distance=1e308 (no cut, not an overflow)",
            _post_json("/query", _frames_json(max_distance=1e308)),
            frozenset({200}),
        ),
        Hostile(
            "max_distance=1e400 (infinity)",
            _post_json("/query", _with_frame('{"frames": [FRAME], "max_distance": 1e400}')),
            frozenset({422}),
            "invalid_request",
        ),
    ]


def _json_values() -> list[Hostile]:
    deep = "[" * 100_000 + "]" * 100_000
    return [
        Hostile(
            "NaN in JSON metadata",
            _post_json(
                "/tracklets",
                _with_frame('{"identity": "x", "frames": [FRAME], "metadata": {"a": NaN}}'),
            ),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "Infinity in JSON metadata",
            _post_json(
                "/tracklets",
                _with_frame(
                    '{"identity": "x", "frames": [FRAME], "metadata": {"a": [1, -Infinity]}}'
                ),
            ),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "NaN in form metadata",
            _enroll_form({"identity": "x", "metadata": '{"a": NaN}'}),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "lone surrogate in JSON metadata",
            _post_json(
                "/tracklets",
                _with_frame('{"identity": "x", "frames": [FRAME], "metadata": {"a": "\\ud800"}}'),
            ),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "lone surrogate in JSON identity",
            _post_json("/tracklets", _with_frame('{"identity": "\\udfff", "frames": [FRAME]}')),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "lone surrogate in form metadata",
            _enroll_form({"identity": "x", "metadata": '{"a": "\\ud800"}'}),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "form metadata nested 100,000 deep",
            _enroll_form({"identity": "x", "metadata": deep}),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "JSON metadata nested 100,000 deep",
            _post_json(
                "/tracklets",
                _with_frame(
                    '{"identity": "x", "frames": [FRAME], "metadata": {"a": DEEP}}'
                ).replace("DEEP", deep),
            ),
            frozenset({422}),
            "invalid_request",
        ),
    ]


def _text_pages_and_frames() -> list[Hostile]:
    bad = frozenset({400, 413, 415, 422})
    return [
        Hostile(
            "offset=2**63",
            lambda c: c.get("/identities", params={"offset": str(2**63)}),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "offset=2**63-1 (the largest, an empty page)",
            lambda c: c.get("/identities", params={"offset": str(2**63 - 1)}),
            frozenset({200}),
        ),
        Hostile(
            "multipart identity that is not UTF-8",
            _raw_multipart("identity", b"\xff\xfe caf\xe9"),
            frozenset({400}),
            "bad_request",
        ),
        Hostile(
            "multipart identity with a UTF-8-encoded surrogate",
            _raw_multipart("identity", b"\xed\xa0\x80"),
            frozenset({400}),
            "bad_request",
        ),
        Hostile(
            "top_k: true in JSON",
            _post_json("/query", _frames_json(top_k=True)),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            'group_by_identity: "yes" in JSON',
            _post_json("/query", _frames_json(group_by_identity="yes")),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "10,000 cameras in a filter",
            _post_json("/query", _frames_json(cameras=[f"c{i}" for i in range(10_000)])),
            frozenset({422}),
            "invalid_request",
        ),
        Hostile(
            "truncated JPEG with an end marker appended",
            _enroll_form({"identity": "x"}, [truncated_jpeg_with_end_marker()]),
            frozenset({400}),
            "truncated_image",
        ),
        Hostile(
            "JPEG with garbage between its scan and its end marker",
            _enroll_form({"identity": "x"}, [person_jpeg()[:-2] + b"\x00" * 5000 + b"\xff\xd9"]),
            frozenset({400}),
            "corrupt_image",
        ),
        Hostile(
            "JSON body that is not UTF-8", _post_json("/query", b'{"frames": ["\xff"]}'), bad, None
        ),
    ]


def every_budget_query(frames: int = 255) -> bytes:
    """A JSON query just under the default REID_MAX_REQUEST_BYTES that fills every budget at
    once: 255 noisy 256 x 256 PNGs are 67 MB of base64, 16.7 MiP and 255 frames."""
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(frames):
        ok, data = cv2.imencode(".png", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        assert ok
        encoded.append(b64(data.tobytes()))
    return json.dumps({"frames": encoded}).encode()


def malformed_corpus() -> list[Hostile]:
    """The inputs that gave a 500, or were wrongly accepted, before issue 18."""
    return [*_times_and_numbers(), *_json_values(), *_text_pages_and_frames()]


def heavy_corpus(scale: float = 1.0, solid_fitting: int = 8) -> list[Hostile]:
    """The memory and CPU attacks; ``scale`` < 1 shrinks them (same shape) for the tests.
    ``solid_fitting`` solid 1448 x 1448 PNGs fit the default REID_MAX_PIXELS_PER_TRACKLET: a
    valid request, each costing the whole pixel budget."""
    entries = max(2_000, int(700_000 * scale))
    png_bytes = max(8 << 20, int(1.2e9 * scale))
    side = 1448
    solid = [solid_png(side, seed) for seed in range(32)]
    fitting = solid[:solid_fitting]
    many = many_entry_zip(entries)
    lying = png_with_data(10, 10, png_bytes)
    batch = tiny_frame_batch(max(4, int(256 * scale)), max(16, int(256 * scale)))
    every_budget = every_budget_query(max(4, int(255 * scale)))
    # The default REID_MAX_BATCH_FRAMES (16,384): a valid batch, costly to embed.
    fitting_batch = tiny_frame_batch(max(4, int(64 * scale)), max(16, int(256 * scale)))

    def frames(items: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [("frames", (f"{i}.png", data, "image/png")) for i, data in enumerate(items)]

    json_headers = {"content-type": "application/json"}
    return [
        Hostile(
            f"zip of {entries:,} empty entries ({len(many) / 1e6:.0f} MB), read key",
            lambda c: c.post("/query", files={"archive": ("a.zip", many, "application/zip")}),
            frozenset({413}),
            "archive_too_many_entries",
            True,
        ),
        Hostile(
            f"32 solid {side}x{side} PNGs ({sum(map(len, solid)) // 1024} KiB)",
            lambda c: c.post("/query", files=frames(solid)),
            frozenset({413}),
            "tracklet_too_large",
            True,
        ),
        Hostile(
            f"{len(fitting)} solid {side}x{side} PNGs, within the limits (valid, costly)",
            lambda c: c.post("/query", files=frames(fitting)),
            frozenset({200, 413, 503}),
            None,
            True,
        ),
        Hostile(
            f"10x10 PNG carrying {png_bytes / 1e9:.2f} GB of pixel data "
            f"({len(lying) / 1e6:.1f} MB)",
            lambda c: c.post("/query", files=frames([lying])),
            frozenset({400}),
            "corrupt_image",
            True,
        ),
        Hostile(
            f"JSON query filling every budget ({len(every_budget) / 1e6:.0f} MB of noisy PNGs, "
            "valid)",
            lambda c: c.post("/query", content=every_budget, headers=json_headers),
            frozenset({200, 503}),
            None,
            True,
        ),
        Hostile(
            f"batch of {len(batch) // 1000} kB of tiny frames",
            lambda c: c.post("/tracklets/batch", content=batch, headers=json_headers),
            frozenset({201, 413}),
            "too_many_frames" if scale == 1.0 else None,
            True,
        ),
        Hostile(
            f"batch of tiny frames within the limits ({len(fitting_batch) // 1000} kB, valid)",
            lambda c: c.post("/tracklets/batch", content=fitting_batch, headers=json_headers),
            frozenset({201, 503}),
            None,
            True,
        ),
    ]
