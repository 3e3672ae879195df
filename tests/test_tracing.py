"""No retracing across architectures.

For a macro search, a micro search and a PTB search (tiny sizes, the real
search objects of the entry points), every traced function runs over at
least 5 different sampled arcs: the child's training step, its evaluation
step or pass, the reward pass, REINFORCE's update (`Reinforce.run`), the
printout's sample-and-score, and the controller's `sample` / `log_prob`.
Each tf.function must have traced exactly once, the controller's sampler
included (it also runs inside the other functions' graphs).
"""

import types

import numpy as np
import pytest
import tensorflow as tf

from src import schedules
from src.reinforce import ReinforceConfig
from src.train_ops import TrainConfig

ROUNDS = 6          # arcs per function (the first one traces)
BATCH = 4


def tracing_counts(functions):
    return {name: fn.experimental_get_tracing_count()
            for name, fn in functions.items()}


def check_single_traces(functions, run_round):
    """Runs `run_round(i)` ROUNDS times (a new arc each); each function of
    `functions` must have traced exactly once. Returns what each round
    returned."""
    results = [run_round(i) for i in range(ROUNDS)]
    counts = tracing_counts(functions)
    assert counts == {name: 1 for name in functions}, counts
    return results


def distinct(arcs):
    return len({tuple(np.asarray(a).reshape(-1).tolist()) for a in arcs})


def cifar_batch(seed):
    images = tf.random.stateless_normal([BATCH, 32, 32, 3], seed=[seed, 7])
    labels = tf.random.stateless_uniform([BATCH], seed=[seed, 8],
                                         minval=0, maxval=10, dtype=tf.int32)
    return images, labels


def cifar_search(space, tmp_path):
    """Child, ChildTrainer and ControllerPhase as the CIFAR entry point
    builds them when searching, at tiny sizes."""
    from src import registry
    from src.cifar10.child_trainer import ChildTrainer
    from src.cifar10.session import phase_hooks
    from src.search import ControllerPhase

    if space == "macro":
        from src.macro.child import MacroConfig, SearchMacroChild
        from src.macro.controller import MacroControllerConfig
        child_cfg = MacroConfig(num_layers=2, out_filters=4, num_branches=4,
                                keep_prob=0.9, seed=1)
        child = SearchMacroChild(child_cfg)
        ctrl_cfg = MacroControllerConfig(
            num_layers=2, num_branches=4, out_filters=4, lstm_size=8,
            tanh_constant=1.5, skip_target=0.4, skip_weight=0.8, seed=3)
        reinforce = ReinforceConfig(lr=1e-3, entropy_weight=1e-4,
                                    skip_weight=0.8)
        training_mode = False
    else:
        from src.micro.child import MicroConfig, SearchMicroChild
        from src.micro.controller import MicroControllerConfig
        child_cfg = MicroConfig(num_layers=0, num_cells=1, out_filters=4,
                                keep_prob=0.9, seed=1)
        child = SearchMicroChild(child_cfg)
        ctrl_cfg = MicroControllerConfig(num_cells=1, num_branches=5,
                                         lstm_size=8, tanh_constant=1.1,
                                         op_tanh_reduce=2.5, seed=3)
        reinforce = ReinforceConfig(lr=1e-3, entropy_weight=1e-4)
        training_mode = True
    cfg = types.SimpleNamespace(
        search_for=space, controller=ctrl_cfg, reinforce=reinforce,
        batch_size=BATCH, output_dir=str(tmp_path), seed=1, child=child_cfg,
        eval_training_mode=training_mode)
    search_space = registry.space(space)
    search = ControllerPhase(search_space, cfg,
                             search_space.build_controller(ctrl_cfg),
                             phase_hooks(cfg, child, None))
    trainer = ChildTrainer(
        child, TrainConfig(clip_mode="norm", grad_bound=5.0),
        arc_fn=search.sample_arc, eval_training_mode=training_mode)
    return child, trainer, search


@pytest.mark.parametrize("space", ["macro", "micro"])
def test_cifar_search_traces_once_over_many_arcs(space, tmp_path):
    _, trainer, search = cifar_search(space, tmp_path)
    controller = search.controller
    functions = {
        "train_step": trainer.train_step,
        "eval_step": trainer.eval_step,
        "reinforce.run": search.reinforce.run,
        "sample_and_score": search._score,
        "controller.sample": controller._sample_fn,
        "controller.log_prob": controller._log_prob_fn,
    }

    def run_round(i):
        images, labels = cifar_batch(i)
        out = trainer.train_step(images, labels)
        assert np.isfinite(out["loss"].numpy())
        trainer.eval_step(images, labels).numpy()
        ctrl = search.reinforce.run(images, labels)
        assert np.isfinite(ctrl["loss"].numpy())
        arc, acc = search._score(images, labels)
        assert 0.0 <= float(acc) <= 1.0
        sample = controller.sample()
        forced = controller.log_prob(sample["arc"])
        np.testing.assert_allclose(forced["log_prob"].numpy(),
                                   sample["log_prob"].numpy(), rtol=1e-4,
                                   atol=1e-5)
        return [ctrl["arc"].numpy(), arc.numpy(), sample["arc"].numpy()]

    results = check_single_traces(functions, run_round)
    arcs = [a for r in results for a in r]
    assert len(arcs) >= 3 * ROUNDS
    assert distinct(arcs) >= 5
    assert int(trainer.global_step) == ROUNDS
    assert int(search.reinforce.train_step) == ROUNDS


def test_ptb_search_traces_once_over_many_arcs(tmp_path):
    from src.ptb.data import batch_rows
    from src.ptb.ptb_child import PtbChildConfig, SearchPtbChild
    from src.ptb.ptb_controller import PtbController, PtbControllerConfig
    from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer
    from src import registry
    from src.ptb.space import phase_hooks
    from src.search import ControllerPhase

    vocab, depth, b, t = 17, 4, 2, 5
    child_cfg = PtbChildConfig(vocab_size=vocab, hidden_size=4,
                               rhn_depth=depth, batch_size=b, bptt_steps=t,
                               e_keep=0.8, x_keep=0.8, h_keep=0.8,
                               o_keep=0.8, seed=1)
    child = SearchPtbChild(child_cfg)
    cfg = types.SimpleNamespace(
        controller=PtbControllerConfig(rhn_depth=depth, lstm_size=8,
                                       tanh_constant=2.5, temperature=5.0,
                                       seed=3),
        reinforce=ReinforceConfig(lr=1e-3, entropy_weight=1e-3),
        output_dir=str(tmp_path), seed=1, bptt_steps=t, batch_size=b,
        child=child_cfg)
    search = None

    def arc_fn():
        return search.sample_arc()

    trainer = PtbTrainer(child, PtbTrainConfig(
        lr=schedules.LrConfig(lr_init=0.5), grad_bound=5.0), arc_fn=arc_fn)
    stream = np.random.default_rng(0).integers(0, vocab, 200).astype(
        np.int32)
    search = ControllerPhase(
        registry.space("ptb"), cfg, PtbController(cfg.controller),
        phase_hooks(cfg, trainer, batch_rows(stream, b)))
    search.start_epoch(0)
    controller = search.controller
    functions = {
        "train_step": trainer.train_step,
        "eval_window": trainer.eval_window,
        "reward": trainer._reward_fn,
        "reinforce.run": search.reinforce.run,
        "sample_and_score": search._score,
        "controller.sample": controller._sample_fn,
        "controller.log_prob": controller._log_prob_fn,
    }

    def run_round(i):
        x, y = next(search._batches)
        out = trainer.train_step(x, y)
        assert np.isfinite(out["loss"].numpy())
        # A sampled arc per window of t steps (4 windows).
        result = trainer.evaluate(stream[:2 * b * t + 1], 1, t)
        assert np.isfinite(result["ppl"])
        ctrl = search.reinforce.run(x, y)
        assert np.isfinite(ctrl["loss"].numpy())
        arc, rw = search._score(x, y)
        assert float(rw) > 0
        sample = controller.sample()
        assert np.isfinite(trainer.reward_nll(x, y, sample["arc"]).numpy())
        forced = controller.log_prob(sample["arc"])
        np.testing.assert_allclose(forced["log_prob"].numpy(),
                                   sample["log_prob"].numpy(), rtol=1e-4,
                                   atol=1e-5)
        return [out["arc"].numpy(), ctrl["arc"].numpy(), arc.numpy(),
                sample["arc"].numpy()]

    results = check_single_traces(functions, run_round)
    arcs = [a for r in results for a in r]
    assert distinct(arcs) >= 5
    assert int(trainer.global_step) == ROUNDS
