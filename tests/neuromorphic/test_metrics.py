"""Scores of the detector (numpy only)."""

import numpy as np


def test_the_float_fixed_point_check_fails_when_lava_flags_nothing_slayer_flags():
    """Anomalies are rare: a Lava run that flagged nothing agreed with SLAYER on 99.6 % of a day's windows (8 of
    1,950 flagged in float) and passed the blocking check at 95 %; the flagged windows must agree too."""
    from models.neuromorphic.metrics import agreement, agreement_passes

    slayer = np.zeros((1950, 2), np.int64)
    slayer[:8, 1] = 3
    silent = agreement(slayer, np.zeros_like(slayer))
    assert silent["decision_agreement"] > 0.99 and silent["flagged_agreement"] == 0.0
    assert not agreement_passes(silent, 0.95)
    assert agreement_passes(agreement(slayer, slayer.copy()), 0.95)
    assert agreement_passes(agreement(np.zeros_like(slayer), np.zeros_like(slayer)), 0.95)  # neither flags any
    one_off = slayer.copy()
    one_off[8, 1] = 3  # Lava flags one more window: 8 of 9 flagged windows agree
    assert agreement(slayer, one_off)["flagged_agreement"] == round(8 / 9, 4)
    # one borderline window apart is tolerated (a fixed-point rounding), two are not
    assert agreement(slayer, one_off)["flagged_disagreements"] == 1 and agreement_passes(agreement(slayer, one_off), 0.95)
    two_off = one_off.copy()
    two_off[0, 1] = 0  # and misses one SLAYER flags: 7 of 9 agree
    assert not agreement_passes(agreement(slayer, two_off), 0.95) and agreement_passes(agreement(slayer, two_off), 0.75)
    single = np.zeros_like(slayer)
    single[0, 1] = 3
    assert agreement_passes(agreement(single, np.zeros_like(single)), 0.95)  # a day with one flag, missed: tolerated
