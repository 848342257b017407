"""The channel layer: channels_redis' pub/sub layer, publishing through one ordered queue per
Redis host instead of one lock.

channels_redis holds a per-host ``asyncio.Lock`` for the whole round trip of every ``PUBLISH``
(and of every ``SUBSCRIBE``): a process's publishes go to Redis one at a time, each waiting for
the previous one's answer, and behind the subscriptions of a connection storm. Under a few
hundred events a second that queue, not Redis, was most of a message's latency.

Here every publish joins a queue that one task drains: whatever queued while the previous
batch was on the wire goes out as one pipeline, one round trip. Publishes still reach Redis in
the order they were made (a user's events keep their ``seq`` order), a caller still returns only
once its message is published, and a Redis error still reaches the callers of that batch.
Subscriptions and receiving are channels_redis' own.
"""

from __future__ import annotations

import asyncio

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer
from channels_redis.utils import _close_redis, _consistent_hash, _wrap_close, create_pool
from redis import asyncio as aioredis


class _Publisher:
    """The ordered publish queue of one Redis host, on one event loop."""

    def __init__(self, host: dict):
        self.host = host
        self._redis: aioredis.Redis | None = None
        self._queue: list[tuple[str, bytes, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def publish(self, channel: str, data: bytes) -> None:
        done = asyncio.get_running_loop().create_future()
        self._queue.append((channel, data, done))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        await done

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                if self._redis is None:
                    self._redis = aioredis.Redis(connection_pool=create_pool(self.host))
                async with self._redis.pipeline(transaction=False) as pipe:
                    for channel, data, _ in batch:
                        pipe.publish(channel, data)
                    await pipe.execute()
            except asyncio.CancelledError:  # the layer is closing
                for _, _, done in batch:
                    done.cancel()
                raise
            except Exception as exc:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for _, _, done in self._queue:
            if not done.done():
                done.cancel()
        self._queue = []
        if self._redis is not None:
            await _close_redis(self._redis)
            self._redis = None


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._publishers = [_Publisher(shard.host) for shard in self._shards]

    def _publisher(self, name: str) -> _Publisher:
        return self._publishers[_consistent_hash(name, len(self._publishers))]

    async def send(self, channel, message):
        await self._publisher(channel).publish(channel, self.channel_layer.serialize(message))

    async def group_send(self, group, message):
        channel = self._get_group_channel_name(group)
        await self._publisher(channel).publish(channel, self.channel_layer.serialize(message))

    async def flush(self):
        for publisher in self._publishers:
            await publisher.close()
        await super().flush()


class PubSubChannelLayer(RedisPubSubChannelLayer):
    """``CHANNEL_LAYERS`` backend: channels_redis' ``RedisPubSubChannelLayer`` (same
    configuration), with the publish queue above."""

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
