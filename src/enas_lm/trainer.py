"""Training and evaluating the enas_lm fixed model (`fixed_lib.LM`'s
train, valid and test graphs and its weight averaging).

A training step on a window x, y [N, L] (L varies: variable-length BPTT)
from the carried state `init_states/batch/s`:
  loss      = mean token NLL;
  objective = loss + weight_decay * sum over the trainable weights of
              sum(w^2) + alpha * mean(outputs^2)  (outputs before the
              output dropout);
  SGD on the objective's gradient clipped to global norm `grad_bound`,
  learning rate = learning_rate (linear warm-up over `num_warmup_steps`
  when set) * L / bptt_steps.
The carried state becomes the window's last state.

Averaging (NT-ASGD style, enas_lm's `_create_average_ops`): once
`moving_avg_flag/flag` is set, `update_average()` after every step does
avg_step += 1; average <- (1 / avg_step) w + (1 - 1 / avg_step) average,
so with avg_step starting at 0 the averages are the running mean of the
weights since the start. `averaged_weights()` swaps them in for an
evaluation.

Evaluation: `eval_window` (one [N, T] window from a given state, as the
valid graph) and `test_pass` (batch 1 over a whole token stream, in one
traced tf.while_loop over chunks, the state carried).
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf

from src import schedules
from src.common_ops import mean_softmax_nll, traced
from src.determinism import loop_parallel_iterations
from src.errors import UserError
from src.train_ops import apply_update, l2_loss

# The test pass runs the stream in chunks of this many tokens (the NLL of
# a chunk's tokens needs [chunk, vocab] logits at once).
TEST_CHUNK = 1000


@dataclasses.dataclass
class EnasLmTrainConfig:
    """The fixed model's training settings (enas_lm's hparams)."""
    learning_rate: float = 20.0
    bptt_steps: int = 35
    grad_bound: float = 0.25
    weight_decay: float = 8e-7
    alpha: float = 0.7
    num_warmup_steps: float = 0.0
    # The search child's: its activation slowness weight, and its weight
    # decay term (enas_lm's `child.py`: 1/2 sum(w^4) over w_prev and the
    # selected blocks of nodes 2..K).
    beta: float = 0.0

    def validate(self):
        if self.grad_bound <= 0:
            raise UserError("--child_grad_bound must be positive, got {}"
                            .format(self.grad_bound))
        if self.bptt_steps < 1:
            raise UserError("--child_bptt_steps must be at least 1, got {}"
                            .format(self.bptt_steps))


def base_learning_rate(step, learning_rate, num_warmup_steps):
    """enas_lm's `get_lr`: learning_rate, ramped up linearly from 0 over
    the first num_warmup_steps steps when that is positive."""
    lr = tf.constant(learning_rate, tf.float32)
    if num_warmup_steps > 0:
        step = tf.cast(step, tf.float32)
        warm = learning_rate * step / float(num_warmup_steps)
        lr = tf.where(step < float(num_warmup_steps), warm, lr)
    return lr


class _WindowLr(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate of the step being applied: `value`, which the
    training step sets before it applies the update."""

    def __init__(self):
        self.value = tf.Variable(0.0, trainable=False, name="lr")

    def __call__(self, step):
        return tf.convert_to_tensor(self.value)

    def get_config(self):
        return {}


class EnasLmFixedTrainer:
    """SGD training, averaging and evaluation of an EnasLmFixedChild.

    train_step(x, y) -> {"loss", "reg_loss", "l2_sum", "grad_norm", "lr",
      "moving_avg_started"} (numpy-convertible tensors), x, y [batch, L].
    """

    def __init__(self, child, cfg, jit_compile=False):
        """jit_compile: XLA for the training step (compiled once per
        window length)."""
        cfg.validate()
        self.child = child
        self.cfg = cfg
        self.variables = child.optimizer_variables()
        self._lr = _WindowLr()
        self.optimizer = keras.optimizers.SGD(self._lr)
        self.optimizer.build(self.variables)
        # enas_lm's scope names: moving_avg_flag/flag, avg_step/step,
        # average/0, average/1, ... (in the order of `variables`).
        self.moving_avg_started = tf.Variable(0, dtype=tf.int32,
                                              trainable=False, name="flag")
        self.avg_step = tf.Variable(0.0, trainable=False, name="step")
        self.averages = [tf.Variable(tf.zeros(v.shape), trainable=False,
                                     name=str(i))
                         for i, v in enumerate(self.variables)]
        batch = child.cfg.batch_size
        window = tf.TensorSpec([batch, None], tf.int32)
        self.jit_compile = bool(jit_compile)
        self.train_step = traced(self._train_step,
                                 input_signature=[window, window],
                                 jit_compile=self.jit_compile)
        tokens = tf.TensorSpec([None, None], tf.int32)
        state = tf.TensorSpec([None, child.cfg.hidden_size], tf.float32)
        self.eval_window = traced(
            self._eval_window, input_signature=[tokens, tokens, state])
        self.test_pass = traced(
            self._test_pass, input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([1, child.cfg.hidden_size], tf.float32)])
        self.update_average = traced(self._update_average,
                                     input_signature=[])

    @property
    def global_step(self):
        return self.optimizer.iterations

    def checkpoint_objects(self):
        """What a run checkpoint keeps besides the child's weights."""
        return {"optimizer": self.optimizer,
                "averaging": {"moving_avg_flag/flag": self.moving_avg_started,
                              "avg_step/step": self.avg_step,
                              **{"average/{}".format(i): a
                                 for i, a in enumerate(self.averages)}}}

    # -- training

    def reset_batch_state(self):
        """Zeroes the carried state of training and validation."""
        self.child.batch_state.assign(tf.zeros_like(self.child.batch_state))

    def reset_test_state(self):
        self.child.test_state.assign(tf.zeros_like(self.child.test_state))

    def objective(self, x, y, state):
        """(loss, objective, l2 sum, next state) of a training window
        (dropouts on). Call under a gradient tape."""
        cfg = self.cfg
        nll, outputs, next_state = self.child.token_nll(x, y, state,
                                                        training=True)
        loss = tf.reduce_mean(nll)
        l2_sum = l2_loss(self.variables)
        objective = (loss + cfg.weight_decay * l2_sum
                     + cfg.alpha * tf.reduce_mean(outputs ** 2))
        return loss, objective, l2_sum, next_state

    def _sgd_step(self, x, y, *arc):
        """One SGD step of the window x -> y from the carried state (the
        search trainer's `arc` after them): (loss, objective, the decay
        term, gradient norm, learning rate)."""
        cfg, child = self.cfg, self.child
        state = tf.convert_to_tensor(child.batch_state)
        with tf.GradientTape() as tape:
            loss, objective, l2, next_state = self.objective(x, y, state,
                                                             *arc)
        grads = tape.gradient(objective, self.variables)
        # As enas_lm: get_lr(step) * (float32(L) / float32(bptt)).
        lr = base_learning_rate(self.optimizer.iterations, cfg.learning_rate,
                                cfg.num_warmup_steps) * (
            tf.cast(tf.shape(y)[1], tf.float32)
            / tf.cast(cfg.bptt_steps, tf.float32))
        self._lr.value.assign(lr)
        update = apply_update(
            grads, self.variables, self.optimizer,
            schedules.LrConfig(lr_init=cfg.learning_rate, lr_dec_rate=1.0),
            "global", cfg.grad_bound, check=[objective])
        # The carried state keeps its last finite value.
        child.batch_state.assign(tf.where(tf.math.is_finite(loss),
                                          next_state, child.batch_state))
        return loss, objective, l2, update.grad_norm, lr

    def _train_step(self, x, y):
        loss, objective, l2_sum, grad_norm, lr = self._sgd_step(x, y)
        return {"loss": loss, "reg_loss": objective, "l2_sum": l2_sum,
                "grad_norm": grad_norm, "lr": lr,
                "moving_avg_started": tf.identity(self.moving_avg_started)}

    def start_average(self):
        self.moving_avg_started.assign(1)

    def _update_average(self):
        self.avg_step.assign_add(1.0)
        mu = 1.0 / self.avg_step
        for v, avg in zip(self.variables, self.averages):
            avg.assign(mu * v + (1.0 - mu) * avg)

    @contextlib.contextmanager
    def averaged_weights(self, use=True):
        """Within the block the weights hold their averages (when `use`);
        afterwards their own values again."""
        if not use:
            yield
            return
        backup = [tf.identity(v) for v in self.variables]
        for v, avg in zip(self.variables, self.averages):
            v.assign(avg)
        try:
            yield
        finally:
            for v, b in zip(self.variables, backup):
                v.assign(b)

    # -- evaluation

    def _eval_window(self, x, y, state):
        nll, _, next_state = self.child.token_nll(x, y, state)
        return nll, next_state

    def _test_pass(self, tokens, state):
        """Per-token NLL [len(tokens) - 1] of the stream, batch 1, from
        `state` [1, H]; and the final state."""
        total = tf.size(tokens) - 1
        chunks = (total + TEST_CHUNK - 1) // TEST_CHUNK

        def body(i, s, out):
            start = i * TEST_CHUNK
            end = tf.minimum(start + TEST_CHUNK, total)
            x = tokens[None, start:end]
            y = tokens[None, start + 1:end + 1]
            nll, _, s = self.child.token_nll(x, y, s)
            return i + 1, s, out.write(i, nll[0])

        out = tf.TensorArray(tf.float32, size=chunks, infer_shape=False,
                             element_shape=[None])
        _, state, out = tf.while_loop(
            lambda i, *_: i < chunks, body, (tf.constant(0), state, out),
            parallel_iterations=loop_parallel_iterations())
        return out.concat(), state

    def evaluate_windows(self, windows, state):
        """enas_lm's `eval_valid` loop: the mean NLL of each window (x, y)
        in order, the state carried from `state`. Returns (losses, state)."""
        losses = []
        for x, y in windows:
            nll, state = self.eval_window(x, y, state)
            losses.append(float(tf.reduce_mean(nll)))
        return losses, state


def quartic_l2(weights):
    """enas_lm's search weight-decay term: sum over `weights` of
    tf.nn.l2_loss(w ** 2), i.e. 1/2 sum(w^4)."""
    return tf.add_n([0.5 * tf.reduce_sum(tf.square(tf.square(w)))
                     for w in weights])


class EnasLmSearchTrainer(EnasLmFixedTrainer):
    """SGD training of an EnasLmSearchChild on the arc of each step, and
    its evaluation (enas_lm's `child.LM`).

    train_step(x, y, arc) -> {"loss", "reg_loss", "l2_reg_loss" (the
      decay term before its weight, the `|w|` of the log line),
      "grad_norm", "lr"}; the objective is loss + weight_decay *
      quartic_l2(w_prev, the selected blocks of nodes 2..K) + alpha *
      mean(outputs^2) + beta * mean((outputs[:, 1:] - outputs[:, :-1])^2).
    eval_window(x, y, state, arc), reward_nll(x, y, arc): the mean NLL of a
      window from a zero state (the controller's reward).
    """

    def __init__(self, child, cfg, jit_compile=False):
        cfg.validate()
        self.child = child
        self.cfg = cfg
        self.variables = child.optimizer_variables()
        self._lr = _WindowLr()
        self.optimizer = keras.optimizers.SGD(self._lr)
        self.optimizer.build(self.variables)
        batch, ccfg = child.cfg.batch_size, child.cfg
        window = tf.TensorSpec([batch, None], tf.int32)
        arc = tf.TensorSpec([ccfg.arc_length], tf.int32)
        self.jit_compile = bool(jit_compile)
        self.train_step = traced(self._train_step,
                                 input_signature=[window, window, arc],
                                 jit_compile=self.jit_compile)
        tokens = tf.TensorSpec([None, None], tf.int32)
        state = tf.TensorSpec([None, ccfg.hidden_size], tf.float32)
        self.eval_window = traced(
            self._eval_window, input_signature=[tokens, tokens, state, arc])
        self.reward_nll = traced(
            self._reward_nll, input_signature=[tokens, tokens, arc])

    def checkpoint_objects(self):
        return {"optimizer": self.optimizer}

    def objective(self, x, y, state, arc):
        cfg = self.cfg
        nll, outputs, next_state, weights = \
            self.child.token_nll_and_weights(x, y, state, arc=arc,
                                             training=True)
        loss = tf.reduce_mean(nll)
        l2 = quartic_l2([weights[0]] + weights[2:])
        objective = loss + cfg.weight_decay * l2
        if cfg.alpha:
            objective += cfg.alpha * tf.reduce_mean(outputs ** 2)
        if cfg.beta:
            objective += cfg.beta * tf.reduce_mean(
                (outputs[:, 1:, :] - outputs[:, :-1, :]) ** 2)
        return loss, objective, l2, next_state

    def _train_step(self, x, y, arc):
        loss, objective, l2, grad_norm, lr = self._sgd_step(x, y, arc)
        return {"loss": loss, "reg_loss": objective, "l2_reg_loss": l2,
                "grad_norm": grad_norm, "lr": lr}

    def _eval_window(self, x, y, state, arc):
        nll, _, next_state = self.child.token_nll(x, y, state, arc=arc)
        return nll, next_state

    def _reward_nll(self, x, y, arc):
        # The mean in chunks: no gradient is taken, and the window's whole
        # [N T, V] softmax would set the controller update's peak memory.
        outputs, _, _ = self.child.forward(
            x, self.child.zero_state(tf.shape(x)[0]), arc=arc)
        return mean_softmax_nll(outputs, self.child.w_emb, y)
