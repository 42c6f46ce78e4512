"""Several dashboard processes as one group, through Redis (DASHBOARD_MESSAGE_QUEUE).

Flask-SocketIO's message queue (python-socketio's RedisManager, on DASHBOARD_MESSAGE_CHANNEL) relays
every `latest_data` emit to every process of the group, and each delivers it to its own clients. This
module decides which process reads the store: the one holding the group's leader lock, a Redis key with
a TTL (SET NX PX, redis-py's Lock) that the holder renews on every loop of its live feed. When the
leader dies, the key expires within `ttl_s` and the next process to try takes it; a leader that stops
cleanly hands it over at once. Beside the lock, under the same prefix:

- `<channel>:tick`, the group's tick counter (INCR), so tick numbers go on across a change of leader;
- `<channel>:latest`, the last payload, which a process that does not lead sends a client at connect;
- `<channel>:watched`, set by every process that has clients, so that the leader reads the store only
  while someone in the group is watching (as a single process does).

If Redis cannot be reached, each process reads the store for its own clients until Redis answers again.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis
from redis.exceptions import LockError, RedisError

from rtds.logs import RateLimitedLog

log = logging.getLogger(__name__)

# The leader lock lives this many push intervals (at least LEADER_TTL_MIN_S): a leader that misses a
# renewal or two keeps its place, and a dead one is replaced within a few seconds.
LEADER_TTL_INTERVALS = 3
LEADER_TTL_MIN_S = 3.0
# A Redis that does not answer within this time counts as unreachable for this loop.
REDIS_TIMEOUT_S = 1.0

ROLE_LEADER = "leader"
ROLE_FOLLOWER = "follower"
ROLE_ALONE = "alone"  # Redis unreachable: this process serves its own clients from the store


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)


class FeedGroup:
    """This process's membership in the group: who reads the store, the shared tick and last payload."""

    def __init__(self, url: str, channel: str, interval_s: float) -> None:
        self.ttl_s = max(LEADER_TTL_MIN_S, LEADER_TTL_INTERVALS * interval_s)
        self._ttl_ms = int(self.ttl_s * 1000)
        self._redis = redis_client(url)
        # thread_local=False: the feed's thread takes the lock, and close() may release it from another.
        self._leader = self._redis.lock(f"{channel}:leader", timeout=self.ttl_s, blocking=False, thread_local=False)
        self._tick_key = f"{channel}:tick"
        self._latest_key = f"{channel}:latest"
        self._watched_key = f"{channel}:watched"
        self.leading = False
        self.role = ROLE_FOLLOWER
        self.terms = 0  # how many times this process became the leader
        self.redis_errors = 0
        self._warn = RateLimitedLog(log, 30.0)

    def should_tick(self, local_clients: int) -> bool:
        """Called once per feed loop: True when this process is to read the store and emit this tick."""
        try:
            if local_clients:
                self._redis.set(self._watched_key, b"1", px=self._ttl_ms)
            if not self._hold_leadership():
                self.role = ROLE_FOLLOWER
                return False
            self.role = ROLE_LEADER
            return local_clients > 0 or bool(self._redis.exists(self._watched_key))
        except RedisError as exc:
            self._unreachable(exc)
            return local_clients > 0

    def _hold_leadership(self) -> bool:
        if self.leading:
            try:
                self._leader.reacquire()
                return True
            except LockError:
                self.leading = False
                log.info("another dashboard process reads the store for the group now")
        if self._leader.acquire(blocking=False):
            self.leading = True
            self.terms += 1
            log.info("this dashboard process reads the store for the group (leader lock for %.0f s)", self.ttl_s)
        return self.leading

    def next_tick(self, fallback: int) -> int:
        """The group's next tick number (`fallback`, this process's own count, while Redis is unreachable)."""
        try:
            return int(self._redis.incr(self._tick_key))
        except RedisError as exc:
            self._unreachable(exc)
            return fallback

    def share(self, payload: dict[str, Any]) -> None:
        """Keep the payload just emitted for the processes that do not lead, for their newly connected clients."""
        try:
            self._redis.set(self._latest_key, orjson.dumps(payload), px=self._ttl_ms)
        except RedisError as exc:
            self._unreachable(exc)

    def last_payload(self) -> dict[str, Any] | None:
        """The leader's last payload, or None when there is none younger than the lock's TTL."""
        try:
            shared = self._redis.get(self._latest_key)
        except RedisError as exc:
            self._unreachable(exc)
            return None
        return orjson.loads(shared) if shared else None

    def _unreachable(self, exc: RedisError) -> None:
        self.redis_errors += 1
        self.role = ROLE_ALONE
        self._warn.warning(
            "redis",
            "DASHBOARD_MESSAGE_QUEUE cannot be reached (%s): this dashboard process serves its own clients "
            "from the store until Redis answers",
            exc,
        )

    def close(self) -> None:
        """Hand the leadership over at once (instead of after the TTL) and close the connection."""
        if self.leading:
            try:
                self._leader.release()
            except (LockError, RedisError):
                pass  # expired or unreachable: the TTL ends it
            self.leading = False
        self._redis.close()

    def stats(self) -> dict[str, Any]:
        return {"role": self.role, "leader_terms": self.terms, "redis_errors": self.redis_errors}
