"""A minimal faust-streaming app: one agent copying topic A to topic B.

Run as a real worker process by test_smoke_faust.py; configured by env vars.
"""

import os

import faust

app = faust.App(
    os.environ["SMOKE_APP_ID"],
    broker=f"kafka://{os.environ['SMOKE_BOOTSTRAP']}",
    store="memory://",
    topic_replication_factor=1,
    topic_partitions=3,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(os.environ["SMOKE_SOURCE"], key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ["SMOKE_SINK"], key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def copy(stream):
    async for key, value in stream.items():
        await sink.send(key=key, value=value)


if __name__ == "__main__":
    app.main()
