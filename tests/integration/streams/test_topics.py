"""A worker creates every topic it needs, changelogs included, before it consumes.

Faust's assignor ignores a changelog topic not yet in the cluster metadata
and its agent then fails on every record of that table's source (issue: a
cold start that never decided its order events), so both engines' changelog
topics are made, compacted and with the source's partitions, at start.
"""

from __future__ import annotations

import contextlib
import uuid

from confluent_kafka.admin import AdminClient, ConfigResource

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from schemas.topology import ORDER_STORE, USER_STORE, changelog_topic, faust_changelog_topic
from streams.worker import prepare_topics


def test_changelog_topics_exist_compacted_before_the_worker_consumes(
    test_settings: Settings, engine: str
):
    streams = test_settings.streams.model_copy(update={"app_id": f"topics-{uuid.uuid4().hex[:8]}"})
    settings = test_settings.model_copy(update={"streams": streams})
    name_of = changelog_topic if engine == "kafka" else faust_changelog_topic
    wanted = [name_of(settings, store) for store in (USER_STORE, ORDER_STORE)]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(settings)})
    try:
        prepare_topics(settings)
        metadata = admin.list_topics(timeout=10).topics
        for name in wanted:
            assert len(metadata[name].partitions) == settings.topics.partitions
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in wanted]
        for future in admin.describe_configs(resources).values():
            assert future.result(10)["cleanup.policy"].value == "compact"
    finally:
        internal = [t for t in admin.list_topics(timeout=10).topics if t.startswith(streams.app_id)]
        for future in admin.delete_topics(internal, operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result(20)
