"""HTTP → Kafka → Faust → ClickHouse: the whole pipeline, as real processes.

The endpoint, a stream worker and the sink run as the same subprocesses
``eventsieve run`` starts, configured for this test's topics and database.
The demo's scripted traffic mix (every compatible API, bots, a spam
referrer, duplicates, an email-open burst, a repeated order id, malformed
requests) must land as exactly the expected counts per event name and per
drop reason — nothing lost, nothing counted twice, nothing extra.
"""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess
import uuid
from collections import Counter

from eventsieve.config import Settings
from ops.cli.run import curl_examples
from ops.demo import Script, differences, script, send, wait_for_counts
from ops.pipeline import endpoint_url


def test_scripted_traffic_lands_as_exact_counts(pipeline: Settings):
    traffic = script(uuid.uuid4().hex[:8])
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)

    results = send(endpoint_url(pipeline), traffic.calls)

    assert [(r.call.label, r.status) for r in results if not r.ok] == []
    accepted, dropped = wait_for_counts(pipeline, "demo", traffic, since, timeout=120)
    assert differences(traffic.accepted, accepted) == {}
    assert differences(traffic.dropped, dropped) == {}
    assert sum(accepted.values()) + sum(dropped.values()) == traffic.events == 25


def test_every_curl_example_of_the_run_banner_lands(pipeline: Settings):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    examples = curl_examples(pipeline)
    for api, command in examples:
        argv = [*shlex.split(command), "-s", "-o", "/dev/null", "-w", "%{http_code}"]
        status = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert status in {"200", "202"}, (api, status)
    expected = Counter(
        {"$pageview": 1, "signup": 1, "Viewed Product": 1, "confirmation": 1,
         "Plan Upgraded": 1, "Report Exported": 1}
    )  # fmt: skip
    traffic = Script("curl", (), expected, Counter())
    accepted, dropped = wait_for_counts(pipeline, "demo", traffic, since, timeout=90)
    assert (accepted, dropped) == (expected, Counter())
    assert len(examples) == 6
