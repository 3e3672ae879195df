"""The learning-rate schedules' values at chosen steps."""

import numpy as np
import pytest

from src import schedules


def lr_at(step, **kw):
    return float(schedules.learning_rate(step, schedules.LrConfig(**kw)))


def test_exponential_decay_is_a_staircase_after_lr_dec_start():
    kw = dict(lr_init=0.1, lr_dec_start=10, lr_dec_every=100, lr_dec_rate=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(109, **kw) == pytest.approx(0.1)
    assert lr_at(110, **kw) == pytest.approx(0.01)
    assert lr_at(310, **kw) == pytest.approx(1e-4)


def test_exponential_decay_is_floored_at_lr_dec_min():
    kw = dict(lr_init=1.0, lr_dec_every=1, lr_dec_rate=0.5, lr_dec_min=0.2)
    assert [round(lr_at(s, **kw), 4) for s in range(5)] == [
        1.0, 0.5, 0.25, 0.2, 0.2]


def test_warmup_value_holds_for_the_warmup_steps():
    kw = dict(lr_init=0.5, lr_warmup_val=0.01, lr_warmup_steps=3)
    assert [lr_at(s, **kw) for s in range(5)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.5, 0.5])


# Recorded by running the reference's cosine code (utils.get_train_ops) in
# TF1 graph mode with reference variables: 3 batches per epoch, T_0 = 2,
# T_mul = 2, lr in [0.001, 0.05]. Restarts land at epochs 2 and 6; their
# first step runs at the midpoint 0.0255 (the reference's restart quirk).
REFERENCE_COSINE = [
    0.05, 0.05, 0.05, 0.0255, 0.0255, 0.0255,
    0.0255, 0.05, 0.05, 0.042824, 0.042824, 0.042824,
    0.0255, 0.0255, 0.0255, 0.008176, 0.008176, 0.008176,
    0.0255, 0.05, 0.05, 0.048135, 0.048135, 0.048135, 0.042824]


def test_cosine_with_restarts_matches_the_reference_step_by_step():
    kw = dict(lr_cosine=True, lr_max=0.05, lr_min=0.001, lr_T_0=2,
              lr_T_mul=2, num_train_batches=3)
    got = [lr_at(s, **kw) for s in range(len(REFERENCE_COSINE))]
    np.testing.assert_allclose(got, REFERENCE_COSINE, atol=1e-6)


def test_cosine_restart_state_follows_t_mul():
    assert [tuple(int(v) for v in schedules.cosine_restart_state(e, 10, 2))
            for e in (0, 9, 10, 29, 30, 70)] == [
        (0, 10), (0, 10), (10, 20), (10, 20), (30, 40), (70, 80)]


def test_cosine_without_its_settings_is_a_user_error():
    from src.errors import UserError
    with pytest.raises(UserError, match="--child_lr_max"):
        schedules.LrConfig(lr_cosine=True, lr_min=0.1, lr_T_0=1, lr_T_mul=2)


def test_step_schedule_reads_the_optimizer_step():
    cfg = schedules.LrConfig(lr_init=0.1, lr_dec_every=2, lr_dec_rate=0.5)
    sched = schedules.StepSchedule(cfg)
    assert float(sched(3)) == pytest.approx(0.05)
