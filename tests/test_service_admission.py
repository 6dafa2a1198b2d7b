"""In-process tests of admission control (service/admission.py), the image data checks
(service/image_data.py) and the zip central-directory walk (service/zip_directory.py)."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import cv2
import numpy as np
import pytest
from service_fixtures import ServiceProcess, encode, person_frames

from bench.hostile import many_entry_zip, png_chunk, png_with_data, truncated_jpeg_with_end_marker
from model.preprocessing import PAPER_INPUT
from service.admission import SMALL_SHARE, Admission, Budget, Deadline, run_to_end
from service.embedding import CheckedTracklet, _decode_and_prepare
from service.frames import EncodedFrame, FrameLimits, check_frames
from service.image_data import check_jpeg_data, check_png_data, png_raw_size
from service.schemas import ApiError
from service.settings import Settings
from service.zip_directory import BadDirectory, directory_totals

# ---------------------------------------------------------------------------------- budgets


def test_budget_grants_in_order_and_waiters_time_out() -> None:
    async def scenario() -> list[str]:
        budget = Budget({"pixels": 100})
        events: list[str] = []
        first = await budget.acquire({"pixels": 80}, timeout=1)

        async def wants(name: str, amount: int, timeout: float) -> None:
            try:
                grant = await budget.acquire({"pixels": amount}, timeout)
            except TimeoutError:
                events.append(f"{name} timed out")
                return
            events.append(f"{name} got {amount}")
            await asyncio.sleep(0.05)
            budget.release(grant)

        waiting = [
            asyncio.create_task(wants("big", 90, 2)),
            asyncio.create_task(wants("medium", 30, 2)),  # not small: waits behind big
            asyncio.create_task(wants("late", 90, 0.01)),
        ]
        await asyncio.sleep(0.1)
        budget.release(first)
        await asyncio.gather(*waiting)
        assert budget.used["main"]["pixels"] == 0 and not budget._waiting
        return events

    assert asyncio.run(scenario()) == ["late timed out", "big got 90", "medium got 30"]


def test_small_requests_have_a_lane_past_a_huge_one() -> None:
    async def scenario() -> None:
        budget = Budget({"frames": 160})
        huge = await budget.acquire({"frames": 160}, timeout=1)
        queued = asyncio.create_task(budget.acquire({"frames": 160}, timeout=5))
        await asyncio.sleep(0.01)
        small = await budget.acquire({"frames": int(160 * SMALL_SHARE)}, timeout=0.1)
        assert small.lane == "small"
        with pytest.raises(TimeoutError):  # the lane is full: the next small one waits
            await budget.acquire({"frames": 1}, timeout=0.05)
        budget.release(small)
        budget.release(huge)
        budget.release(await queued)
        assert budget.used == {"main": {"frames": 0}, "small": {"frames": 0}}

    asyncio.run(scenario())


def test_a_cost_beyond_the_budget_is_clamped_to_it() -> None:
    budget = Budget({"bytes": 10, "pixels": 5})
    assert budget.clamp({"bytes": 50, "pixels": 3}) == {"bytes": 10, "pixels": 3}


def test_deadline() -> None:
    deadline = Deadline.start(0.05)
    deadline.check("now")
    time.sleep(0.06)
    assert deadline.remaining() == 0
    with pytest.raises(ApiError) as raised:
        deadline.check("while testing")
    assert raised.value.status == 503 and raised.value.code == "deadline_exceeded"
    assert "REID_REQUEST_TIMEOUT_S" in raised.value.message
    assert raised.value.headers == {"Retry-After": "5"}


def test_room_is_held_until_cancelled_work_in_a_thread_has_stopped() -> None:
    """A failed batch cancels its other tracklets; one of them is being decoded in a thread,
    which the cancellation does not stop. Its room must stay taken until the thread is done,
    or the next tracklet is admitted beside it."""
    admission = Admission.create(body_bytes=1, pixels=100, frames=10, wait_s=5.0)
    finished: list[float] = []

    def decode() -> None:
        time.sleep(0.3)
        finished.append(time.monotonic())

    async def tracklet() -> None:
        async with admission.tracklet(100, 10, Deadline.start(5.0)):
            await run_to_end(anyio.to_thread.run_sync(decode))

    async def failing_sibling() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("a sibling failed")

    async def batch() -> float:
        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as group:
                group.create_task(tracklet())
                group.create_task(failing_sibling())
        # The group ends once the cancelled tracklet has returned its room.
        assert admission.work.used["main"] == {"pixels": 0, "frames": 0}
        return time.monotonic()

    ended = asyncio.run(batch())
    assert finished and finished[0] <= ended


class _ExpiresAfter:
    """A deadline that passes after ``checks`` checks (here: mid-way through decoding)."""

    def __init__(self, checks: int) -> None:
        self.left = checks

    def check(self, stage: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise Deadline.start(0.0).error(stage)


def _arrays_in(value: object) -> int:
    if isinstance(value, np.ndarray):
        return 1
    if isinstance(value, list | tuple):
        return sum(_arrays_in(item) for item in value)
    return 0


def test_an_error_while_decoding_keeps_no_pixels_in_its_traceback() -> None:
    """A failed batch's errors sit in reference cycles until a garbage collection; whatever the
    frames of their tracebacks hold stays resident that long (eight 42 MB tracklets once)."""
    limits = FrameLimits.from_settings(Settings())
    encoded = [EncodedFrame(f"{i}.png", encode(f)) for i, f in enumerate(person_frames(3, 8))]
    tracklet = CheckedTracklet(check_frames(encoded, limits), 0.0)
    with pytest.raises(ApiError) as raised:
        _decode_and_prepare(tracklet, PAPER_INPUT, _ExpiresAfter(5), None)  # type: ignore[arg-type]
    assert raised.value.code == "deadline_exceeded"
    held = 0
    tb = raised.value.__traceback__
    while tb is not None:
        held += sum(_arrays_in(v) for v in tb.tb_frame.f_locals.values())
        tb = tb.tb_next
    assert held == 0


def test_run_to_end_passes_results_and_errors_through() -> None:
    async def value() -> int:
        return 7

    async def error() -> None:
        raise KeyError("x")

    assert asyncio.run(run_to_end(value())) == 7
    with pytest.raises(KeyError):
        asyncio.run(run_to_end(error()))


# ------------------------------------------------------------------------------- image data


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "grey16", "odd"])
def test_real_pngs_inflate_to_their_declared_size(kind: str) -> None:
    frame = person_frames(3, 1)[0]
    images = {
        "rgb": frame,
        "grey": cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY),
        "rgba": np.dstack([frame, np.full(frame.shape[:2], 9, np.uint8)]),
        "grey16": cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257,
        "odd": cv2.resize(frame, (13, 7)),
    }
    check_png_data(encode(images[kind]), "frame")


def test_interlaced_png_size_follows_the_adam7_passes() -> None:
    # 8 x 8 RGB: passes of 1x1, 1x1, 2x1, 2x2, 4x2, 4x4, 8x4 pixels, each row a filter byte
    # plus 3 bytes a pixel.
    passes = [(1, 1), (1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]
    assert png_raw_size(8, 8, 8, 2, True) == sum(h * (1 + 3 * w) for w, h in passes)
    assert png_raw_size(8, 8, 8, 2, False) == 8 * (1 + 24)
    assert png_raw_size(3, 1, 1, 0, False) == 2  # three 1-bit pixels pack into one byte


def test_png_data_larger_or_smaller_than_its_header_is_refused() -> None:
    with pytest.raises(ApiError) as raised:
        check_png_data(png_with_data(10, 10, 8 << 20), "frame")
    assert raised.value.code == "corrupt_image" and "larger than its header" in raised.value.message
    short = png_with_data(10, 10, 100)  # 10 rows need 310 bytes
    with pytest.raises(ApiError) as raised:
        check_png_data(short, "frame")
    assert raised.value.code == "truncated_image"


def test_png_with_a_cut_chunk_or_bad_deflate_is_refused() -> None:
    data = encode(person_frames(4, 1)[0])
    with pytest.raises(ApiError) as raised:
        check_png_data(data[: len(data) // 2] + png_chunk(b"IEND", b""), "frame")
    assert raised.value.code == "truncated_image"
    header = data[8:33]
    garbage = b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", b"not deflate")
    with pytest.raises(ApiError) as raised:
        check_png_data(garbage + png_chunk(b"IEND", b""), "frame")
    assert raised.value.code == "corrupt_image"


@pytest.mark.parametrize("progressive", [False, True])
def test_complete_jpegs_pass_and_truncated_ones_do_not(progressive: bool) -> None:
    frame = cv2.cvtColor(person_frames(5, 1)[0], cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    check_jpeg_data(data.tobytes(), "frame")
    with pytest.raises(ApiError) as raised:
        check_jpeg_data(data.tobytes()[: len(data) // 2] + b"\xff\xd9", "frame")
    assert raised.value.code == "truncated_image"


def test_a_grey_jpeg_passes_and_the_cut_test_jpeg_does_not() -> None:
    grey = cv2.cvtColor(person_frames(6, 1)[0], cv2.COLOR_RGB2GRAY)
    check_jpeg_data(encode(grey, "jpeg"), "frame")
    with pytest.raises(ApiError):
        check_jpeg_data(truncated_jpeg_with_end_marker(), "frame")


# ------------------------------------------------------------------------------ zip directory


def test_directory_totals_match_zipfile() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.comment = b"a comment"
        for i in range(5):
            archive.writestr(f"seq/{i}.png", b"x" * (100 * i))
    totals = directory_totals(buffer.getvalue(), max_entries=100)
    infos = zipfile.ZipFile(buffer).infolist()
    assert totals.entries == len(infos) == 5
    assert totals.declared_bytes == sum(info.file_size for info in infos)


def test_directory_walk_stops_one_past_the_limit() -> None:
    data = many_entry_zip(70_000)  # past 65535: the entry count no longer fits the end record
    start = time.perf_counter()
    assert directory_totals(data, max_entries=100).entries == 101
    assert time.perf_counter() - start < 0.5
    assert directory_totals(data, max_entries=10**6).entries == 70_000


def test_broken_directories_are_refused() -> None:
    with pytest.raises(BadDirectory):
        directory_totals(b"PK not a zip at all", 10)
    data = bytearray(many_entry_zip(3))
    end = data.rindex(b"PK\x05\x06")
    data[end + 12 : end + 16] = struct.pack("<L", len(data) * 2)  # directory larger than file
    with pytest.raises(BadDirectory):
        directory_totals(bytes(data), 10)


# ------------------------------------------------------------------------- through a server


@pytest.fixture(scope="module")
def tight_server(
    exported_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """Budgets small enough to fill by hand: 2000 body bytes, a 2 s deadline."""
    env = {
        "REID_ADMISSION_BODY_BYTES": "2000",
        "REID_ADMISSION_WAIT_S": "0.5",
        "REID_REQUEST_TIMEOUT_S": "2",
    }
    with ServiceProcess(exported_model, tmp_path_factory.mktemp("tight") / "data", env) as server:
        yield server


def _open_upload(port: int, declared: int) -> socket.socket:
    """A request that declares a body of ``declared`` bytes and sends none of it (yet)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
    )
    return sock


def _read_answer(sock: socket.socket) -> str:
    """One whole HTTP answer: its head and body may arrive in separate segments."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            if len(body) >= length:
                return data.decode()
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk


def test_bodies_beyond_the_budget_wait_then_get_503_and_a_trickled_body_gets_408(
    tight_server: ServiceProcess,
) -> None:
    holder = _open_upload(tight_server.port, 1900)  # holds 1900 of the 2000 body bytes
    try:
        with tight_server.client() as client:
            # Until the server has admitted the holder, the body passes (and is bad JSON, 422);
            # a busy machine may take a while to get there, inside the holder's 2 s deadline.
            give_up = time.monotonic() + 1.5
            while True:
                refused = client.post(
                    "/query", content=b"x" * 1500, headers={"content-type": "application/json"}
                )
                if refused.status_code != 422 or time.monotonic() > give_up:
                    break
                time.sleep(0.05)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "overloaded"
            assert refused.headers["retry-after"] == "1"
            assert "REID_ADMISSION_BODY_BYTES" in refused.json()["error"]["message"]
            # Small bodies have their lane: a GET and a small body pass meanwhile.
            assert client.get("/healthz").status_code == 200
            small = client.post("/query", json={"frames": ["bm90IGFuIGltYWdl"]})
            assert small.status_code == 415, small.text
        # The holder never sends its body: the deadline answers it.
        answer = _read_answer(holder)
        assert answer.startswith("HTTP/1.1 408") and "request_timeout" in answer
    finally:
        holder.close()
