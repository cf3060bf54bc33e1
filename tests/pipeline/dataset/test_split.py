import pytest

from pipeline.dataset.split import Split, SplitFractions, assign_split, read_seed_ids
from pipeline.errors import InvalidArgument


def test_assignment_is_stable_and_close_to_the_fractions():
    fractions = SplitFractions(0.8, 0.1, 0.1)
    ids = [str(10**15 + i) for i in range(20000)]
    first = [assign_split(i, fractions, frozenset()) for i in ids]
    assert first == [assign_split(i, fractions, frozenset()) for i in ids]
    shares = {split: first.count(split) / len(ids) for split in Split}
    assert shares[Split.TRAIN] == pytest.approx(0.8, abs=0.02)
    assert shares[Split.VALIDATION] == pytest.approx(0.1, abs=0.02)
    assert shares[Split.HOLDOUT] == pytest.approx(0.1, abs=0.02)


def test_a_profile_keeps_its_split_when_the_fractions_of_others_change_nothing():
    # Weekly runs: new profiles arrive, old ones keep their assignment (it depends on the id only).
    fractions = SplitFractions()
    holdout = [i for i in map(str, range(5000)) if assign_split(i, fractions, frozenset()) is Split.HOLDOUT]
    assert holdout and all(assign_split(i, fractions, frozenset()) is Split.HOLDOUT for i in holdout)


def test_seed_profiles_are_always_held_out_as_seeds():
    fractions = SplitFractions(1.0, 0.0, 0.0)
    assert assign_split("7", fractions, frozenset({"7"})) is Split.SEEDS
    assert assign_split("8", fractions, frozenset({"7"})) is Split.TRAIN


@pytest.mark.parametrize("text", ["0.8,0.1", "0.5,0.5,0.5", "a,b,c", "1.2,-0.1,-0.1", "0,0.5,0.5"])
def test_bad_fractions_are_named(text):
    with pytest.raises(InvalidArgument):
        SplitFractions.parse(text)


def test_seed_list_format():
    assert read_seed_ids("# known researchers\n123\n\n456  # jane\n") == frozenset({"123", "456"})
