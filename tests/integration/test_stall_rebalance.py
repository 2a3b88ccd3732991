"""The stall guard's last resort on a real broker: the rebalance it asks for (``streams.pipeline.stall``) happens.

The guard calls aiokafka's group coordinator inside Faust's consumer thread; this runs a Faust worker of its own
(one agent, the product's Faust settings for the session) that asks once after its first rebalance, and checks
that the group rebalances again and the worker goes on consuming its partitions.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from aiokafka.admin import NewTopic

from streams.admin import admin_client
from streams.settings import Settings

APP = textwrap.dedent(
    """
    import os
    import sys
    from pathlib import Path

    import faust

    from streams.pipeline.stall import request_rebalance

    marks = Path(sys.argv[1])
    app = faust.App(
        os.environ["APP_ID"], broker="kafka://" + os.environ["BOOTSTRAP"], store="memory://", web_enabled=False,
        topic_partitions=2, broker_session_timeout=6.0, broker_heartbeat_interval=2.0,
    )
    topic = app.topic(os.environ["TOPIC"], value_serializer="raw")
    rebalances = []


    def mark(text):
        with marks.open("a") as out:
            out.write(text + "\\n")


    @app.agent(topic)
    async def consume(stream):
        async for _ in stream:
            pass


    async def completed(sender, **kwargs):
        held = [tp.partition for tp in app.consumer.assignment() if tp.topic == topic.get_topic_name()]
        rebalances.append(sorted(held))
        mark(f"rebalanced {rebalances[-1]}")


    app.on_rebalance_complete.connect(completed)


    @app.timer(3.0)
    async def ask():
        if len(rebalances) == 1:
            mark("asked")
            await request_rebalance(app.consumer)
        elif len(rebalances) >= 2:
            mark("done")
            os._exit(0)


    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
    """
)


async def create_topic(settings: Settings, name: str) -> None:
    async with admin_client(settings) as admin:
        await admin.create_topics([NewTopic(name, 2, 1)])


class TestRebalanceRequest:
    def test_the_group_rebalances_when_the_guard_asks(self, kafka_settings: Settings, tmp_path: Path):
        """After one rebalance the worker asks for another: it comes, and the worker holds its partitions again."""
        script, marks = tmp_path / "app.py", tmp_path / "marks.txt"
        script.write_text(APP, encoding="utf-8")
        run = uuid.uuid4().hex[:8]
        env = {
            "APP_ID": f"stall-{run}",
            "BOOTSTRAP": kafka_settings.bootstrap_servers,
            "TOPIC": f"stall-{run}",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "PATH": str(Path(sys.executable).parent),
            "HOME": str(tmp_path),
        }
        asyncio.run(create_topic(kafka_settings, env["TOPIC"]))
        done = subprocess.run(
            [sys.executable, str(script), str(marks)], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        lines = marks.read_text().splitlines() if marks.exists() else []
        assert done.returncode == 0, f"{lines}\n{done.stderr[-3000:]}"
        assert lines[0] == "rebalanced [0, 1]" and lines[1] == "asked", lines
        assert lines[2:] == ["rebalanced [0, 1]", "done"], lines
