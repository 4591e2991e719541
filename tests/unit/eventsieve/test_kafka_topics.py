"""New topics' configuration: replicated topics require more than one in-sync replica."""

from __future__ import annotations

from eventsieve.kafka import topic_config


def test_replicated_topics_require_all_replicas_but_one_in_sync() -> None:
    assert topic_config(1) == {}
    assert topic_config(2) == {"min.insync.replicas": "1"}
    assert topic_config(3) == {"min.insync.replicas": "2"}
    assert topic_config(3, {"cleanup.policy": "compact"}) == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }


def test_an_explicit_setting_wins() -> None:
    assert topic_config(3, {"min.insync.replicas": "3"}) == {"min.insync.replicas": "3"}
