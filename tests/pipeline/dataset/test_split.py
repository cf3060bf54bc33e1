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


def documented_split(twitter_id: str, fractions: SplitFractions) -> Split:
    """The rule the manifest states ("sha256(twitter_id) position"), computed here independently:
    the first 8 bytes of the digest as a fraction of 2**64, against the cumulative fractions."""
    import hashlib

    position = int(hashlib.sha256(twitter_id.encode()).hexdigest()[:16], 16) / 2**64
    if position < fractions.train:
        return Split.TRAIN
    return Split.VALIDATION if position < fractions.train + fractions.validation else Split.HOLDOUT


def test_a_profile_keeps_its_split_from_week_to_week():
    """Weekly runs: the split depends on the id alone (never on which other profiles arrived, or
    their order), so a held-out profile never enters training later."""
    fractions = SplitFractions()
    week_one = [str(10**15 + i) for i in range(3000)]
    week_two = [str(10**15 + i) for i in range(6000)][::-1]  # more profiles, another order
    first = {i: assign_split(i, fractions, frozenset()) for i in week_one}
    second = {i: assign_split(i, fractions, frozenset()) for i in week_two}
    assert all(second[i] is first[i] for i in week_one)
    assert all(first[i] is documented_split(i, fractions) for i in week_one)
    assert documented_split("1", fractions) is assign_split("1", fractions, frozenset())


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


def test_other_train_validation_shares_never_move_a_profile_out_of_the_holdout():
    ids = [str(number) for number in range(20_000)]

    def held_out(fractions):
        return {i for i in ids if assign_split(i, fractions, frozenset()) is Split.HOLDOUT}

    default = held_out(SplitFractions())
    assert held_out(SplitFractions.parse("0.5,0.4,0.1")) == default
    assert default < held_out(SplitFractions.parse("0.5,0.25,0.25"))
    # A smaller holdout would hand earlier held-out profiles to training: refused by name.
    with pytest.raises(InvalidArgument, match="holdout share 0.05 is below 0.1"):
        SplitFractions.parse("0.95,0,0.05")
