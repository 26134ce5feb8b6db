"""`intent.latest` is one of the owned topics and the only compacted one (topics.py); unless
LATEST_TOPIC names it, it is named after the scores topic, so apps with topics of their own
(each e2e test) never share it."""

from __future__ import annotations

import pytest

from streams.runtime.topics import latest_topic, owned_topics, topic_configs
from streams.settings import Settings


def test_the_latest_topic_is_created_with_the_others_and_compacted():
    settings = Settings(latest_topic="x.latest", scores_topic="x.scores")
    assert "x.latest" in owned_topics(settings)
    assert topic_configs(settings, "x.latest") == {"cleanup.policy": "compact"}
    assert topic_configs(settings, "x.scores") == {}  # scores keep the broker's retention


@pytest.mark.parametrize(("scores", "latest"), [
    ("intent.scores", "intent.latest"), ("e2e3-ab.scores", "e2e3-ab.latest"),
    ("scores", "scores.latest"),
])
def test_unset_it_is_named_after_the_scores_topic(scores, latest):
    settings = Settings(scores_topic=scores)
    assert latest_topic(settings) == latest
    assert latest in owned_topics(settings)
    assert topic_configs(settings, latest) == {"cleanup.policy": "compact"}
