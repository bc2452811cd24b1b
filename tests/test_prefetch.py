"""deid.io.prefetch: the background reader shared by the pipeline and the evaluation."""

import itertools
import threading
import time

import pytest

from deid.io.prefetch import prefetch


def _reader_threads(name):
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_yields_every_item_in_order():
    assert list(prefetch(iter(range(50)), maxsize=2)) == list(range(50))


def test_an_error_in_the_source_is_raised_where_the_items_are_consumed():
    def source():
        yield 1
        yield 2
        raise ValueError("corrupt at frame 3")

    got = []
    with pytest.raises(ValueError, match="corrupt at frame 3"):
        for x in prefetch(source(), name="deid-test-err"):
            got.append(x)
    assert got == [1, 2]
    assert not _reader_threads("deid-test-err")


def test_stopping_early_stops_the_reader_and_reads_little_ahead():
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield i

    gen = prefetch(endless(), maxsize=2, name="deid-test-stop")
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # what a `break` or an error in the consumer does
    assert not _reader_threads("deid-test-stop")
    n = len(pulled)
    time.sleep(0.3)
    assert len(pulled) == n, "the reader went on after the consumer stopped"
    assert n <= 3 + 2 + 2, f"read {n} items ahead of 3 consumed with maxsize=2"
