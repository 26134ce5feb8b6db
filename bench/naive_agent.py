"""Baseline for `intentstream bench`: a naive Faust agent that calls the model once per event.

It keeps the same per-user session (same table, same rendering) and writes one score per
event; what it lacks is micro-batching and per-user coalescing. Run by the bench as
`python -m bench.naive_agent worker`, configured by the same INTENTSTREAM_* settings.
"""

from __future__ import annotations

import faust
import orjson
from faust.types import StreamT

from bench.baseline_app import app, events_topic, out_topic, settings
from inference.client import TritonScorer
from streams.core.events import Rejection, parse_event
from streams.core.sessions import absorb, empty_state, render

sessions = app.Table("sessions", default=None, partitions=settings.partitions,
                     schema=faust.Schema(key_type=str, key_serializer="json",
                                         value_serializer="json"))
POLICY = settings.session_policy()


@app.agent(events_topic)
async def score_each_event(stream: StreamT) -> None:
    scorer = TritonScorer(settings.triton_url, model_name=settings.triton_model, max_batch=1)
    async for event in stream.events():
        parsed = parse_event(event.value, event.key, settings.max_event_bytes)
        if isinstance(parsed, Rejection):
            continue
        state = sessions.get(parsed.user_id) or empty_state()
        absorb(state, parsed, POLICY)
        sessions[parsed.user_id] = state
        [prediction] = await scorer.score([render(state["current"], POLICY.max_chars)])
        await out_topic.send(key=event.key, value=orjson.dumps(
            {"user_id": parsed.user_id, "event_id": parsed.event_id,
             "churn": prediction.churn}))


if __name__ == "__main__":
    app.main()
