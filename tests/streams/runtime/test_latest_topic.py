"""`intent.latest` is one of the owned topics and the only compacted one (topics.py)."""

from __future__ import annotations

from streams.runtime.topics import owned_topics, topic_configs
from streams.settings import Settings


def test_the_latest_topic_is_created_with_the_others_and_compacted():
    settings = Settings(latest_topic="x.latest", scores_topic="x.scores")
    assert "x.latest" in owned_topics(settings)
    assert topic_configs(settings, "x.latest") == {"cleanup.policy": "compact"}
    assert topic_configs(settings, "x.scores") == {}  # scores keep the broker's retention
