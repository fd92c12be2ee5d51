"""Which stores a process uses: in memory (the default), or in Redis when ``REDIS_URL`` is set."""

from __future__ import annotations

from typing import NamedTuple

from token_service.config.shared_state import RedisSettings
from token_service.state import FailureStore, ReplayStore
from token_service.state.failure_limiter import FailureLimiter
from token_service.state.replay_cache import ReplayCache


class Stores(NamedTuple):
    replays: ReplayStore
    failures: FailureStore


def build_stores(redis_settings: RedisSettings | None, max_connections: int) -> Stores:
    if redis_settings is None:
        return Stores(ReplayCache(), FailureLimiter())
    # Only here: a deployment without Redis never loads the client library.
    from token_service.state.redis_connection import redis_client
    from token_service.state.redis_failure_limiter import RedisFailureLimiter
    from token_service.state.redis_replay_cache import RedisReplayCache

    client = redis_client(redis_settings, max_connections)
    return Stores(RedisReplayCache(client, redis_settings), RedisFailureLimiter(client, redis_settings))
