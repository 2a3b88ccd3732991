"""A library's repeated lines are written once per interval: a broker outage must not flood the logs."""

from __future__ import annotations

import logging

from streams.logs import RepeatFilter
from streams.settings import RETRY_BACKOFF_MS, Settings


def line(name: str, msg: str = "Unable connect to node with id %s") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (1,), None)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_library_line_repeated_a_thousand_times_is_written_once_per_interval():
    clock = Clock()
    repeat = RepeatFilter(every_s=10, clock=clock)
    passed = [repeat.filter(line("aiokafka.conn")) for _ in range(1000)]
    assert passed.count(True) == 1
    clock.now = 10.5
    again = line("aiokafka.conn")
    assert repeat.filter(again) and "999 alike held back" in str(again.msg)


def test_other_templates_and_our_own_lines_are_not_held_back():
    repeat = RepeatFilter(every_s=10, clock=Clock())
    assert repeat.filter(line("aiokafka.conn"))
    assert repeat.filter(line("aiokafka.conn", "Unable to update metadata from %s"))
    assert all(repeat.filter(line("streams.pipeline.engine", "alert_sent")) for _ in range(5))


def test_clients_back_off_between_attempts_to_reach_the_broker():
    assert Settings().kafka_client_kwargs()["retry_backoff_ms"] == RETRY_BACKOFF_MS >= 250
