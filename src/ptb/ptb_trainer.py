"""Training, evaluation and reward passes of the PTB child (the reference's
`PTBEnasChild._build_train`, `eval_once`, `_build_valid_rl`, with
`get_train_ops`).

`PtbTrainer` owns the child's optimiser (SGD on the reference's step-based
learning-rate schedule), the optional moving average of the weights, and
three traced functions: the training step (one trace for every arc), the
evaluation pass over a window with a carried state, and the controller's
reward pass.

States: training carries its final state from step to step in the child's
`starting_states` variables (the reference's `start_h`). Evaluation and the
reward pass carry their states as tensors of their own and never touch the
training state. (The reference's valid graph shares `start_h` with
training; it resets the shared state before and after every evaluation, so
keeping them apart changes nothing it computes.)
"""

import contextlib
import dataclasses

import numpy as np
import tensorflow as tf

from src import distribute, precision, schedules
from src.baked_arc import BakedArc
from src.common_ops import traced
from src.ptb import data as ptb_data
from src.train_ops import TrainConfig, apply_update, l2_loss, make_optimizer

__all__ = ["PtbTrainConfig", "PtbTrainer", "progress_points"]


@dataclasses.dataclass
class PtbTrainConfig(TrainConfig):
    """`get_train_ops`' settings as the PTB child passes them, and the PTB
    objective's extra terms.

    lr: schedules.LrConfig with lr_dec_start and lr_dec_every already in
    steps (epochs x training batches per epoch, as the reference converts).
    l2_reg: child_l2_reg (None -> 0). rnn_l2_reg: weight of sum(outputs^2)
    / batch_size; rnn_slowness_reg: weight of sum over steps of
    (out[t+1] - out[t])^2 / batch_size (None: off). moving_average: the
    decay of child_optim_moving_average (None: off).
    """
    l2_reg: float = 0.0
    clip_mode: str = "global"
    grad_bound: float = 5.0
    optim_algo: str = "sgd"
    rnn_l2_reg: float = None
    rnn_slowness_reg: float = None
    moving_average: float = None

    def __post_init__(self):
        if self.l2_reg is None:
            self.l2_reg = 0.0


def progress_points(result, every=1000):
    """(windows so far, perplexity so far) after every `every` windows of an
    `evaluate(..., window_losses=True)` result: the reference's progress
    lines ("{:<5d} {:<6.2f}"); its perplexity so far is exp(loss so far /
    (bptt_steps x batch_size x windows so far))."""
    losses = result["window_losses"]
    per_window = result["num_words"] / max(1, len(losses))
    cum = np.cumsum(losses)
    return [(k, float(np.exp(cum[k - 1] / (per_window * k))))
            for k in range(every, len(losses) + 1, every)]


class PtbTrainer:
    """Steps of one PTB child.

    `train_step(x, y)` -> dict(loss, lr, grad_norm, train_ppl, arc);
    `evaluate(stream, batch_size, bptt_steps)` -> totals of the reference's
    `eval_once`; `eval_window(x, y, state[, arc])` -> (NLL [N, T], next
    state) of one window, the traced function `evaluate` calls (one trace
    for every arc and window length); `reward_nll(x, y, arc)` -> mean token
    NLL (the controller's reward pass). `global_step` is the optimiser's
    iteration count.

    arc_fn: for a search-mode child, a function returning a fresh arc tensor
    (the controller's sample), called inside the traced training step (a new
    arc every step, as the reference's graph samples one per session run)
    and once per window by `evaluate`.
    jit_compile: compile the training step with XLA (default None: for a
    fixed arc only, `precision.resolve_jit_compile`'s auto). The evaluation
    pass runs without XLA (its window length varies).
    reward_jit_compile: compile the reward pass (`reward_nll`, the
    controller's reward) with XLA (default None: on). Its windows all have
    the controller's shape [batch_size, bptt_steps], so it compiles once per
    process (about 2 s at hidden 64, depth 12), one compilation for every
    arc; the pass then takes a third of its time without XLA (BUILD.md,
    Benchmarks: ptb_controller_cpu).
    mixed_precision: the child was built under the mixed_float16 policy
    (`precision.set_mixed_precision`): the loss is scaled
    (`precision.DynamicLossScale`, in `checkpoint_objects()`) and
    `train_step` also returns `loss_scale` (the scale this step used) and
    `skipped` (its scaled gradients were not finite: no weight and no moving
    average changed, the scale halved; `grad_norm` is then not finite).

    strategy: a tf.distribute strategy (None: one device). With one,
    build the child and the trainer under `strategy.scope()`; each training
    step splits the windows' rows and the carried state's over the replicas
    (`src.distribute`), sums the gradients and puts the next state's rows
    back in order; evaluation and the reward pass run on whole batches in
    the cross-replica context. XLA is used for neither then
    (`entry_point.prepare_run` rejects --jit_compile=true with a strategy).

    Moving average (cfg.moving_average = d): the reference wraps its
    optimiser in TF1's `MovingAverageOptimizer`, i.e. an
    `ExponentialMovingAverage(d)` without num_updates over the optimiser's
    variables: shadows start at the variables' values when the trainer is
    built (their initial values; a resumed run restores them from the
    checkpoint) and after every update shadow <- shadow - (shadow - var)
    (1 - d). Keras'
    `use_ema` differs: its first update copies the variables (momentum 0 at
    iteration 0), and it swaps the averages in only by overwriting the
    variables; so the shadows are kept here (`shadows`, in
    `checkpoint_objects()`), and evaluation swaps them in and back
    (`averaged_weights()`).
    """

    def __init__(self, child, cfg, arc_fn=None, jit_compile=None,
                 mixed_precision=False, reward_jit_compile=None,
                 strategy=None):
        self.strategy = strategy
        self.child = child
        self.cfg = cfg
        self.arc_fn = arc_fn
        self.loss_scale = (precision.DynamicLossScale() if mixed_precision
                           else None)
        precision.check_loss_scaling(child, mixed_precision)
        if child.searching and arc_fn is None:
            raise ValueError("a search-mode child needs arc_fn (the "
                             "controller's sampler)")
        ccfg = child.cfg
        self.optimizer = make_optimizer(cfg.optim_algo,
                                        schedules.StepSchedule(cfg.lr))
        self.variables = list(child.optimizer_variables())
        self.optimizer.build(self.variables)
        self.shadows = None
        if cfg.moving_average is not None:
            self.shadows = [
                tf.Variable(tf.convert_to_tensor(v), trainable=False,
                            name=v.path.replace("/", "_") + "_ema")
                for v in self.variables]
        window = [tf.TensorSpec([ccfg.batch_size, ccfg.bptt_steps], tf.int32)
                  for _ in range(2)]
        if jit_compile is None:
            # XLA halves the fixed child's step on CPU; with a traced arc
            # (search) it is many times slower, so it is off there.
            jit_compile = precision.resolve_jit_compile(
                "auto", child.searching, "ptb")
        if strategy is not None:
            jit_compile = False  # XLA does not compile strategy.run
        self.jit_compile = jit_compile
        if reward_jit_compile is None:
            reward_jit_compile = True
        if strategy is not None:
            # An XLA cluster cannot read the replicas' copies of the
            # sync-on-read moving statistics (other devices).
            reward_jit_compile = False
        self.reward_jit_compile = bool(reward_jit_compile)
        self.train_step = traced(self._train_step,
                                 input_signature=window,
                                 jit_compile=jit_compile)
        tokens = tf.TensorSpec([None, None], tf.int32)
        state = tf.TensorSpec([ccfg.num_layers, None, ccfg.hidden_size],
                              tf.float32)
        arc = tf.TensorSpec([ccfg.arc_length], tf.int32)
        if child.searching:
            self.eval_window = traced(
                self._eval_window, input_signature=[tokens, tokens, state,
                                                    arc])
            self._reward_fn = traced(
                self._reward, input_signature=[tokens, tokens, arc],
                jit_compile=self.reward_jit_compile)
        else:
            self.eval_window = traced(
                lambda x, y, s: self._eval_window(x, y, s, None),
                input_signature=[tokens, tokens, state])
            self._reward_fn = traced(
                lambda x, y: self._reward(x, y, None),
                input_signature=[tokens, tokens],
                jit_compile=self.reward_jit_compile)

    @property
    def global_step(self):
        return self.optimizer.iterations

    # -- training

    def reset_train_state(self):
        """Zeroes the carried training states (the reference's train_reset)."""
        for v in self.child.train_states:
            v.assign(tf.zeros_like(v))

    def _objective(self, x, y, state, arc, batch, replicas=1):
        """(loss, objective, nll [N, T], next state) of one window: the
        loss is the summed NLL over `batch` (the global batch size), the
        objective adds the regularisers (over `batch` too) and the L2 term
        (its 1 / `replicas` share). Call under a gradient tape."""
        cfg = self.cfg
        nll, outputs, next_state = self.child.token_nll(
            x, y, state, arc=arc, training=True)
        # The regularisers in float32 (sums of squares overflow float16).
        outputs = precision.float32(outputs)
        loss = tf.reduce_sum(nll) / batch
        objective = loss
        if cfg.rnn_l2_reg is not None:
            objective += (cfg.rnn_l2_reg * tf.reduce_sum(outputs ** 2)
                          / batch)
        if cfg.rnn_slowness_reg is not None:
            diff = tf.reduce_sum(
                (outputs[:, 1:, :] - outputs[:, :-1, :]) ** 2)
            objective += cfg.rnn_slowness_reg * diff / batch
        if cfg.l2_reg > 0:
            l2 = cfg.l2_reg * l2_loss(self.variables)
            objective += l2 if replicas == 1 else l2 / float(replicas)
        return loss, objective, nll, next_state

    def _replica_gradients(self, x, y, state, arc):
        """One replica's part of a distributed step: its rows of the
        windows and of the carried state, the gradients of its share of the
        global objective (scaled under mixed precision). Returns
        (gradients, its share of the loss, its NLL sum and count, its rows
        of the next state)."""
        x, y = distribute.replica_rows(x), distribute.replica_rows(y)
        state = tf.transpose(distribute.replica_rows(
            tf.transpose(state, [1, 0, 2])), [1, 0, 2])
        batch = tf.cast(distribute.global_sum(tf.shape(x)[0]), tf.float32)
        with tf.GradientTape() as tape:
            loss, objective, nll, next_state = self._objective(
                x, y, state, arc, batch, distribute.num_replicas())
            if self.loss_scale is not None:
                objective = self.loss_scale.scale_loss(objective)
        return (tape.gradient(objective, self.variables), loss,
                tf.reduce_sum(nll), tf.cast(tf.size(nll), tf.float32),
                next_state)

    def _train_step(self, x, y):
        child, cfg = self.child, self.cfg
        arc = self.arc_fn() if child.searching else None
        state = tf.stack([tf.convert_to_tensor(v)
                          for v in child.train_states])
        if self.strategy is None:
            batch = tf.cast(tf.shape(x)[0], tf.float32)
            with tf.GradientTape() as tape:
                loss, objective, nll, next_state = self._objective(
                    x, y, state, arc, batch)
                if self.loss_scale is not None:
                    objective = self.loss_scale.scale_loss(objective)
            grads = tape.gradient(objective, self.variables)
            train_ppl = tf.exp(tf.reduce_mean(nll))
        else:
            # Each replica takes its rows of the windows and of the state;
            # the gradients are summed, the state's rows put back in order.
            grads, (loss, nll_sum, count, next_state) = \
                distribute.summed_gradients(self.strategy,
                                            self._replica_gradients,
                                            (x, y, state, arc))
            loss = distribute.total(self.strategy, loss)
            train_ppl = tf.exp(distribute.total(self.strategy, nll_sum)
                               / distribute.total(self.strategy, count))
            next_state = tf.ensure_shape(
                self.strategy.gather(next_state, axis=1), state.shape)
        # A non-finite loss or gradient never reaches the weights (nor the
        # moving average); the step counter still moves (the entry point
        # stops or skips).
        update = apply_update(grads, self.variables, self.optimizer, cfg.lr,
                              cfg.clip_mode, cfg.grad_bound, check=[loss],
                              loss_scale=self.loss_scale,
                              after_apply=self._update_moving_average)
        for v, s in zip(child.train_states, tf.unstack(next_state)):
            # The carried state keeps its last finite value.
            v.assign(tf.where(tf.math.is_finite(loss),
                              tf.stop_gradient(s), v))
        out = {"loss": loss, "lr": update.lr, "grad_norm": update.grad_norm,
               "train_ppl": train_ppl}
        if self.loss_scale is not None:
            out["loss_scale"] = update.loss_scale
            out["skipped"] = update.skipped
        if arc is not None and not isinstance(arc, BakedArc):
            out["arc"] = arc
        return out

    # -- moving average

    def _update_moving_average(self):
        """shadow <- shadow - (shadow - var) (1 - d) after an applied update
        (TF1's `ExponentialMovingAverage` without num_updates)."""
        if self.shadows is None:
            return
        c = tf.constant(1.0 - self.cfg.moving_average, tf.float32)
        for shadow, v in zip(self.shadows, self.variables):
            shadow.assign(shadow - (shadow - v) * c)

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the block the variables hold their moving averages (no-op
        without a moving average); afterwards their own values again."""
        if self.shadows is None:
            yield
            return
        saved = [tf.convert_to_tensor(v) for v in self.variables]
        for v, shadow in zip(self.variables, self.shadows):
            v.assign(shadow)
        try:
            yield
        finally:
            for v, value in zip(self.variables, saved):
                v.assign(value)

    def checkpoint_objects(self):
        """What a run's checkpoint must hold besides the child's variables
        for an exact resume: the optimiser (its iteration count is the
        global step) and the moving-average shadows."""
        objects = {"optimizer": self.optimizer}
        if self.loss_scale is not None:
            objects["loss_scale"] = self.loss_scale
        if self.shadows is not None:
            objects["moving_average"] = {
                v.path: s for v, s in zip(self.variables, self.shadows)}
        return objects

    # -- evaluation

    def _eval_window(self, x, y, state, arc):
        nll, _, next_state = self.child.token_nll(x, y, state, arc=arc,
                                                  training=False)
        return nll, next_state

    def _reward(self, x, y, arc):
        # The mean of `token_nll` (`PtbChild.mean_nll`: the fused
        # cross-entropy kernel, which also writes a softmax for the
        # gradient, was most of this pass).
        child = self.child
        outputs, _ = child(x, child.zero_state(tf.shape(x)[0]), arc=arc,
                           training=False)
        return child.mean_nll(outputs, y)

    def reward_nll(self, x, y, arc=None):
        """Mean token NLL of one window [B, T] from a zero state, in
        evaluation mode, nothing carried (the reference's valid_rl graph).
        arc: the arc to score (search mode; ignored in fixed mode)."""
        x = tf.convert_to_tensor(x, tf.int32)
        y = tf.convert_to_tensor(y, tf.int32)
        if self.child.searching:
            return self._reward_fn(x, y, tf.cast(arc, tf.int32))
        return self._reward_fn(x, y)

    def evaluate(self, stream, batch_size, bptt_steps, arc=None,
                 arc_window=None, max_tokens=4096, window_losses=False,
                 averaged=None, progress_every=1000):
        """The reference's `eval_once` on a token stream, without printing.

        The stream is cut into `batch_size` rows; the reference runs its
        `num_windows` windows of `bptt_steps` steps from a zero state,
        carrying the state, and sums every token's NLL. The same sum here
        comes from far fewer calls: with a fixed arc, up to about
        `max_tokens` tokens per call (the reference's test pass, batch 1 and
        one word per call, becomes a few long windows: the same
        computation). Searching, every call scores one arc: `arc` when given,
        else a fresh sample of `arc_fn` per window of `arc_window` steps
        (default: the child's bptt_steps). The reference samples one per
        session call: per window of bptt_steps in its valid pass, per word in
        its test pass (batch 1, one word per call), where here one arc scores
        bptt_steps consecutive words.

        averaged: evaluate with the moving averages of the weights (default:
        when the trainer keeps them).

        Returns dict(total_loss, num_words, num_windows, log_ppl,
        ppl = exp(min(log_ppl, 10)), progress: (windows so far, perplexity
        so far) after every `progress_every` windows, the reference's
        verbose lines) and, with window_losses, the loss of each of the
        reference's windows (`window_losses`, float64 [num windows]).
        """
        child = self.child
        rows = ptb_data.batch_rows(stream, batch_size)
        windows = ptb_data.num_windows(stream, batch_size, bptt_steps)
        if windows < 1:
            raise ValueError(
                "the stream has {} tokens: too short for one window of {} x "
                "{} (+1)".format(np.size(stream), batch_size, bptt_steps))
        steps = windows * bptt_steps
        sample = child.searching and arc is None
        if child.searching:
            chunk = arc_window or child.cfg.bptt_steps
        else:
            chunk = max(1, max_tokens // batch_size)
        if averaged is None:
            averaged = self.shadows is not None
        per_step = np.zeros([steps], np.float64)
        context = (self.averaged_weights() if averaged
                   else contextlib.nullcontext())
        with context:
            state = child.zero_state(batch_size)
            for start in range(0, steps, chunk):
                end = min(steps, start + chunk)
                x = tf.constant(rows[:, start:end])
                y = tf.constant(rows[:, start + 1:end + 1])
                if child.searching:
                    this_arc = self.arc_fn() if sample else arc
                    nll, state = self.eval_window(
                        x, y, state, tf.cast(this_arc, tf.int32))
                else:
                    nll, state = self.eval_window(x, y, state)
                per_step[start:end] = nll.numpy().astype(np.float64).sum(0)
        per_window = per_step.reshape(windows, bptt_steps).sum(1)
        total = float(per_window.sum())
        num_words = steps * batch_size
        log_ppl = total / num_words
        out = {"total_loss": total, "num_words": num_words,
               "num_windows": windows, "log_ppl": log_ppl,
               "ppl": float(np.exp(min(log_ppl, 10.0))),
               "window_losses": per_window}
        out["progress"] = progress_points(out, progress_every)
        if not window_losses:
            del out["window_losses"]
        return out
