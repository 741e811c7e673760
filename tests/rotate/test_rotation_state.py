"""The rotation state's bookkeeping (pure): finished credentials are not restarted by a resumed run, the last
roll is remembered until the rotation ends, and roll ids are stable per roll and distinct between rolls."""

from __future__ import annotations

from pydantic import SecretStr

from blocks.rotation_state import RotationState
from helix_ops.rotation import batch_roll_id


def test_a_finished_credential_is_remembered_until_the_rotation_ends():
    state = RotationState(rotation_id="abc123def456", redis_step="retired", redis_new=SecretStr("n"),
                          neo4j_step="bridge-current", roll_id="rabc123ffff", roll_steps="redis=current,neo4j=bridge-current")
    state = state.cleared("redis")
    assert state.redis_step is None and state.redis_new is None and state.done() == ["redis"]
    assert state.in_progress() == ["neo4j"] and state.rotation_id == "abc123def456"
    assert state.rolled() == {"redis": "current", "neo4j": "bridge-current"} and state.roll_id == "rabc123ffff"
    state = state.cleared("neo4j")
    assert state.in_progress() == [] and state.done() == [] and state.rotation_id is None
    assert state.roll_id is None and state.rolled() == {}


def test_roll_ids_are_stable_per_roll_and_distinct_between_rolls():
    first = {"redis": "current", "neo4j": "bridge-current", "nextauth": "current"}
    again = {"nextauth": "current", "redis": "current", "neo4j": "bridge-current"}
    second = {"neo4j": "primary-current"}
    assert batch_roll_id("abc123def456", first) == batch_roll_id("abc123def456", again)
    assert batch_roll_id("abc123def456", first) != batch_roll_id("abc123def456", second)
    assert batch_roll_id("abc123def456", first) != batch_roll_id("fff999def456", first)
    assert batch_roll_id("abc123def456", first).startswith("rabc123") and len(batch_roll_id("abc123def456", first)) == 11


def test_the_redis_roll_re_creates_the_sentinel_mode_followers_after_the_consumers():
    from datetime import datetime, timezone

    from helix_ops import guide, rotation

    now = datetime.now(timezone.utc)
    redis = rotation.CredentialState("redis", "r1", "auth-set", now, now)
    neo4j = rotation.CredentialState("neo4j", "r1", "bridge-tested", now, now)
    followers = {"redis": ("redis-2", "redis-3", "redis-sentinel", "redis-sentinel-2", "redis-sentinel-3")}
    batch = rotation.roll_batch([redis, neo4j], followers)
    assert batch.steps == {"redis": "current", "neo4j": "bridge-current"}
    assert batch.services == (*guide.APP_SERVICES, *followers["redis"])
    # no followers (single mode), or a roll that is not Redis's follower roll: the consumers only
    assert rotation.roll_batch([redis], {}).services == guide.APP_SERVICES
    later = rotation.CredentialState("neo4j", "r1", "primary-tested", now, now)
    assert rotation.roll_batch([later], followers).services == guide.APP_SERVICES
    # auth-set (masterauth, Sentinel auth-pass) runs while both passwords are valid: before the roll
    assert rotation.steps_before_roll(rotation.CredentialState("redis", "r1", "set", now, now)) == \
        ("tested", "auth-set")
    assert "redis:auth-set" in rotation.all_crash_points()
