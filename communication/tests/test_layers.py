"""The channel layer on the real Redis: publishes made at once all arrive, in the order they
were made (a user's events in ``seq`` order), and a failed publish reaches its caller."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from communication.layers import PubSubChannelLayer


def test_the_gateway_uses_the_queued_pub_sub_layer():
    assert isinstance(get_channel_layer(), PubSubChannelLayer)


def test_concurrent_publishes_arrive_all_and_in_order():
    layer = PubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("user.layer-test", channel)
        try:
            # Many callers at once, as a busy gateway publishes: one pipeline per round trip.
            await asyncio.gather(
                *(
                    layer.group_send("user.layer-test", {"type": "deliver", "n": n})
                    for n in range(300)
                )
            )
            return [(await layer.receive(channel))["n"] for _ in range(300)]
        finally:
            await layer.group_discard("user.layer-test", channel)
            await layer.flush()

    assert asyncio.run(scenario()) == list(range(300))


def test_a_publish_to_an_unreachable_redis_raises_to_its_caller():
    layer = PubSubChannelLayer(hosts=[{"address": "redis://127.0.0.1:1/0"}])

    async def scenario():
        try:
            with pytest.raises(Exception) as failure:
                await asyncio.wait_for(layer.group_send("user.nobody", {"type": "deliver"}), 10)
            return failure.value
        finally:
            await layer.flush()

    error = asyncio.run(scenario())
    assert "onnect" in str(error)  # ConnectionError: the caller learns the event did not go out
