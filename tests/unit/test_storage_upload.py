"""WebHDFS writes stream through a bounded queue: a slow upload holds back the writer, and a
failed one fails the writer's next call."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from dicomlake.errors import StorageError
from dicomlake.storage.hdfs import UPLOAD_PIECE, UPLOAD_QUEUE, _Upload

MiB = 1 << 20
PATH = "hdfs://nn:8020/lake/_staging/r1/pixels/r1/p.pack"


def test_a_slow_upload_bounds_what_the_writer_has_queued() -> None:
    received: list[bytes] = []

    def send(body: Iterator[bytes]) -> None:
        for piece in body:
            time.sleep(0.001)
            received.append(piece)

    data = os.urandom(48 * MiB)
    ahead = []
    with _Upload(PATH, send) as upload:
        for start in range(0, len(data), 3 * MiB):
            upload.write(data[start : start + 3 * MiB])
            ahead.append(start + 3 * MiB - sum(map(len, received)))
    assert b"".join(received) == data
    # Queued pieces, the one being sent and the one waiting to be queued, never a whole file
    assert max(ahead) <= (UPLOAD_QUEUE + 2) * UPLOAD_PIECE + 3 * MiB
    assert max(ahead) < len(data) / 4


def _write_until_it_fails(send) -> list[BaseException]:
    """Write more than the queue holds on another thread; what it raised, once it ended."""
    raised: list[BaseException] = []

    def produce() -> None:
        try:
            with _Upload(PATH, send) as upload:
                for _ in range(4 * UPLOAD_QUEUE):
                    upload.write(bytes(UPLOAD_PIECE))
        except Exception as exc:
            raised.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(timeout=30)
    assert not producer.is_alive(), "the writer waits for room an ended upload never makes"
    return raised


def test_a_failed_upload_fails_the_next_write_with_the_path() -> None:
    def send(body: Iterator[bytes]) -> None:
        next(body)
        raise requests.ConnectionError("datanode went away")

    [error] = _write_until_it_fails(send)
    assert isinstance(error, StorageError)
    assert PATH in str(error) and "datanode went away" in str(error)


def test_an_upload_that_stops_taking_bytes_fails_the_writer() -> None:
    [error] = _write_until_it_fails(lambda body: next(body))
    assert isinstance(error, StorageError) and "ended early" in str(error)


def test_a_failure_at_the_end_of_the_upload_is_raised_on_close() -> None:
    def send(body: Iterator[bytes]) -> None:
        for _ in body:
            pass
        raise requests.HTTPError("refused at close")

    with pytest.raises(StorageError, match="refused at close"), _Upload(PATH, send) as upload:
        upload.write(b"pack bytes")
