"""The migration's routing: stable, monotone in the share, and close to the share asked for."""

from __future__ import annotations

import pytest

from pipeline import contracts
from pipeline.errors import InvalidArgument
from pipeline.scoring import routing

IDS = [str(1_000_000 + i) for i in range(20_000)]


def test_a_share_routes_about_that_share_of_profiles():
    for share in (1, 10, 50, 90):
        routed = sum(routing.routed_to_custom(twitter_id, share) for twitter_id in IDS)
        assert abs(routed / len(IDS) * 100 - share) < 1.0, share
    assert not any(routing.routed_to_custom(twitter_id, 0) for twitter_id in IDS)
    assert all(routing.routed_to_custom(twitter_id, 100) for twitter_id in IDS)


def test_raising_the_share_only_adds_profiles():
    at_10 = {twitter_id for twitter_id in IDS if routing.routed_to_custom(twitter_id, 10)}
    at_20 = {twitter_id for twitter_id in IDS if routing.routed_to_custom(twitter_id, 20)}
    assert at_10 < at_20


def test_the_routed_share_is_not_the_holdout():
    """The holdout (split.py) is the top 10 % of another hash: routing 10 % must not pick it."""
    from pipeline.dataset import split

    holdout = {twitter_id for twitter_id in IDS if split.hash_position(twitter_id) >= 1 - contracts.HOLDOUT_SHARE}
    routed = {twitter_id for twitter_id in IDS if routing.routed_to_custom(twitter_id, 10)}
    assert 0.05 < len(holdout & routed) / len(routed) < 0.15  # about 10 %: independent


@pytest.mark.parametrize("value", ["-0.1", "100.5", "x", "inf"])
def test_a_share_outside_0_to_100_is_a_named_error(value):
    with pytest.raises(ValueError, match="from 0 to 100"):
        routing.parse_share(value)
    with pytest.raises(InvalidArgument, match="from 0 to 100"):
        routing.check_share(float(value) if value != "x" else value)


def test_the_audit_slice_is_its_share_of_the_routed_profiles_at_any_share():
    """At 100 % customModelShare the teacher would label nothing routed; the slice keeps 5 % coming,
    chosen independently of the routing (a slice inside the first 10 % routed would be empty at 10 %)."""
    for share in (10, 100):
        routed = [twitter_id for twitter_id in IDS if routing.routed_to_custom(twitter_id, share)]
        audited = [twitter_id for twitter_id in routed if routing.in_audit_slice(twitter_id, routing.DEFAULT_AUDIT_SHARE)]
        assert abs(len(audited) / len(routed) * 100 - routing.DEFAULT_AUDIT_SHARE) < 1.5, share
    assert not any(routing.in_audit_slice(twitter_id, 0) for twitter_id in IDS)
    with pytest.raises(ValueError, match="teacherAuditShare must be a percentage"):
        routing.parse_audit_share("101")
