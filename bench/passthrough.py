"""The baselines: a raw aiokafka consume-then-produce passthrough with the worker's delivery semantics.

One record out per record in, each produced with acks=all and acknowledged before its offset may be committed.
``per-record`` (the old worker's shape): one record at a time, each send awaited; offsets committed like Faust
does it (every 100 records or every second, whichever comes first, and on shutdown). ``per-poll`` (the best an
at-least-once consumer can do): a poll's records sent together, every acknowledgement awaited once, then the
poll's offsets committed. Run as its own process,
``python -m bench.passthrough``, so that its CPU and memory compare with the worker subprocess. It imports
nothing of the product: it is the floor the pipeline is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

#: Faust's ``broker_commit_every`` and ``broker_commit_interval`` as the worker sets them.
COMMIT_EVERY = 100
COMMIT_INTERVAL_S = 1.0
#: A passthrough left behind by a crashed bench stops by itself.
MAX_RUNTIME_S = 900.0


@dataclass
class CommitPolicy:
    """When acknowledged offsets are due for a commit: after ``every`` records or ``interval_s`` seconds."""

    every: int = COMMIT_EVERY
    interval_s: float = COMMIT_INTERVAL_S
    pending: int = 0
    last_commit: float = 0.0

    def processed(self) -> None:
        self.pending += 1

    def due(self, now: float) -> bool:
        return self.pending >= self.every or (self.pending > 0 and now - self.last_commit >= self.interval_s)

    def committed(self, now: float) -> None:
        self.pending = 0
        self.last_commit = now


async def passthrough(
    bootstrap_servers: str,
    source: str,
    target: str,
    group: str,
    stop: asyncio.Event,
    max_runtime_s: float = MAX_RUNTIME_S,
    per_poll: bool = False,
) -> int:
    """Copy ``source`` to ``target`` until ``stop`` is set; returns how many records it copied."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    await consumer.start()
    policy = CommitPolicy(last_commit=time.monotonic())
    offsets: dict[TopicPartition, int] = {}
    copied = 0
    deadline = time.monotonic() + max_runtime_s
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            if per_poll:
                copied += await _copy_poll(producer, target, batch, offsets)
                if batch:
                    await consumer.commit(dict(offsets))
                continue
            for tp, messages in batch.items():
                for message in messages:
                    await producer.send_and_wait(
                        target, value=message.value, key=message.key, headers=list(message.headers or ())
                    )
                    offsets[tp] = message.offset + 1
                    copied += 1
                    policy.processed()
                    if policy.due(time.monotonic()):
                        await consumer.commit(dict(offsets))
                        policy.committed(time.monotonic())
            if policy.due(time.monotonic()):
                await consumer.commit(dict(offsets))
                policy.committed(time.monotonic())
        if offsets:
            await consumer.commit(dict(offsets))
    finally:
        await consumer.stop()
        await producer.stop()
    return copied


async def _copy_poll(
    producer: AIOKafkaProducer,
    target: str,
    batch: dict[TopicPartition, list[ConsumerRecord]],
    offsets: dict[TopicPartition, int],
) -> int:
    """Send a poll's records together and wait for every acknowledgement; returns how many."""
    pending = [
        await producer.send(target, value=m.value, key=m.key, headers=list(m.headers or ()))
        for messages in batch.values()
        for m in messages
    ]
    await asyncio.gather(*pending)
    for tp, messages in batch.items():
        offsets[tp] = messages[-1].offset + 1
    return len(pending)


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await passthrough(
        args.bootstrap_servers, args.source, args.target, args.group, stop, args.max_runtime, args.mode == "per-poll"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--max-runtime", type=float, default=MAX_RUNTIME_S)
    parser.add_argument("--mode", choices=("per-record", "per-poll"), default="per-record")
    args = parser.parse_args(argv)
    copied = asyncio.run(_main(args))
    print(f"copied={copied}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
