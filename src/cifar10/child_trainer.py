"""Training and evaluation steps of a CIFAR-10 child network.

`ChildTrainer` owns the child's optimiser and two `tf.function`s traced once
per run (their input signature admits the smaller last batch): the training
step of the reference's `_build_train` + `get_train_ops`, and the evaluation
step of `_build_valid` / `_build_test`.
"""

import tensorflow as tf

from src import distribute, precision, schedules
from src.common_ops import traced
from src.train_ops import (apply_train_step, apply_update, l2_loss,
                           make_optimizer)

IMAGE_SPEC = tf.TensorSpec([None, 32, 32, 3], tf.float32, name="images")
LABEL_SPEC = tf.TensorSpec([None], tf.int32, name="labels")


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy: the loss the reference logs (float32
    whatever the logits' dtype)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=precision.float32(logits)))


def num_correct(logits, labels):
    """How many argmax predictions equal the labels (int32 scalar)."""
    preds = tf.argmax(logits, axis=1, output_type=tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(preds, labels), tf.int32))


class ChildTrainer:
    """Steps of one child: `train_step(images, labels)` -> dict of loss,
    lr, grad_norm, train_acc; `eval_step(images, labels)` -> correct count.

    The optimiser's `iterations` is the child's global step (updates so far).
    arc_fn: for a search-mode child, a function returning a fresh arc tensor
    (the controller's sample); called once per step, inside the traced step,
    as the reference's graph samples a new arc at every session run.
    eval_training_mode: evaluate with the child in training mode (batch
    statistics, dropout), as the reference's micro search does.
    train_aux_head: children with an aux head (the micro child) leave its
    weights out of the optimiser, as the reference, unless this is set.

    child: a CIFAR child (`src.macro.child`, `src.micro.child`): its
    `child(images, training, ...)` gives a `ChildOutput(logits,
    aux_logits)`; with aux logits (the micro child's
    aux head, in training) the objective is cross-entropy + 0.4 x aux
    cross-entropy, and the logged loss the first term alone, as the
    reference logs it. When its `takes_step` is True its `call` receives
    the global step (drop-path's training progress). The optimiser updates
    `child.optimizer_variables(train_aux_head)`.

    jit_compile: compile the training and evaluation steps with XLA
    (`precision.resolve_jit_compile` gives the measured choice).
    mixed_precision: the child was built under the mixed_float16 policy
    (`precision.set_mixed_precision`): the loss is scaled
    (`precision.DynamicLossScale`, in `checkpoint_objects()`), and
    `train_step` also returns `loss_scale` (the scale this step used) and
    `skipped` (its scaled gradients were not finite: no weight changed, the
    scale halved; `grad_norm` is then not finite either).

    strategy: a tf.distribute strategy (None: TensorFlow's default, the
    single-device step). With one, build the child and the trainer under
    `strategy.scope()`; each training step splits its batch over the
    replicas as `src.distribute` describes (the same arc on every replica,
    gradients summed, one update). Evaluation runs on whole batches in the
    cross-replica context. XLA is not used with a strategy
    (`entry_point.prepare_run` rejects --jit_compile=true with one).
    """

    def __init__(self, child, train_cfg, jit_compile=False, arc_fn=None,
                 eval_training_mode=False, train_aux_head=False,
                 mixed_precision=False, strategy=None):
        if strategy is not None:
            jit_compile = False  # XLA does not compile strategy.run
        self.strategy = strategy
        self.child = child
        self.cfg = train_cfg
        self.arc_fn = arc_fn
        self.eval_training_mode = eval_training_mode
        self.jit_compile = bool(jit_compile)
        self.loss_scale = (precision.DynamicLossScale() if mixed_precision
                           else None)
        precision.check_loss_scaling(child, mixed_precision)
        self.optimizer = make_optimizer(
            train_cfg.optim_algo, schedules.StepSchedule(train_cfg.lr))
        # Variables are created eagerly, outside the traced steps.
        self._forward(tf.zeros([2, 32, 32, 3]), training=False)
        self.variables = list(child.optimizer_variables(train_aux_head))
        self.optimizer.build(self.variables)
        self.train_step = traced(
            self._train_step if strategy is None
            else self._distributed_train_step,
            input_signature=[IMAGE_SPEC, LABEL_SPEC],
            jit_compile=jit_compile)
        self.eval_step = traced(
            self._eval_step, input_signature=[IMAGE_SPEC, LABEL_SPEC],
            jit_compile=jit_compile)

    @property
    def global_step(self):
        return self.optimizer.iterations

    def checkpoint_objects(self):
        """What a run's checkpoint must hold besides the child's variables:
        the optimiser (its iteration count is the global step) and, under
        mixed precision, the loss scale."""
        objects = {"optimizer": self.optimizer}
        if self.loss_scale is not None:
            objects["loss_scale"] = self.loss_scale
        return objects

    def _forward(self, images, training, arc=None):
        kwargs = {}
        if arc is not None:
            kwargs["arc"] = arc
        elif self.arc_fn is not None:
            kwargs["arc"] = self.arc_fn()
        if self.child.takes_step:
            kwargs["step"] = self.optimizer.iterations
        return self.child(images, training=training, **kwargs)

    def _train_step(self, images, labels):
        with tf.GradientTape() as tape:
            out = self._forward(images, training=True)
            loss = cross_entropy(out.logits, labels)
            objective = loss
            if out.aux_logits is not None:
                objective = loss + 0.4 * cross_entropy(out.aux_logits, labels)
        update = apply_train_step(tape, objective, self.variables,
                                  self.optimizer, self.cfg, self.loss_scale)
        return self._step_output(loss, num_correct(out.logits, labels),
                                 update)

    def _step_output(self, loss, correct, update):
        out = {"loss": loss, "lr": update.lr, "grad_norm": update.grad_norm,
               "train_acc": correct}
        if self.loss_scale is not None:
            out["loss_scale"] = update.loss_scale
            out["skipped"] = update.skipped
        return out

    def _distributed_train_step(self, images, labels):
        """`_train_step` under `self.strategy`: the arc sampled once, each
        replica's gradients of its share of the global objective summed,
        then norm, clipping and the update once (cross-replica)."""
        arc = self.arc_fn() if self.arc_fn is not None else None
        grads, (loss, correct) = distribute.summed_gradients(
            self.strategy, self._replica_gradients, (images, labels, arc))
        loss = distribute.total(self.strategy, loss)
        correct = distribute.total(self.strategy, correct)
        cfg = self.cfg
        update = apply_update(grads, self.variables, self.optimizer, cfg.lr,
                              cfg.clip_mode, cfg.grad_bound, check=[loss],
                              loss_scale=self.loss_scale)
        return self._step_output(loss, correct, update)

    def _replica_gradients(self, images, labels, arc):
        """One replica's part of a step: its rows of the batch, the
        gradients of its share of the global objective (summed loss over
        the global batch size, 1 / replicas of the L2 term; scaled under
        mixed precision). Returns (gradients, its share of the mean loss,
        its correct count)."""
        images = distribute.replica_rows(images)
        labels = distribute.replica_rows(labels)
        global_n = tf.cast(distribute.global_sum(tf.shape(labels)[0]),
                           tf.float32)

        def share(logits):
            return tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels,
                    logits=precision.float32(logits))) / global_n

        with tf.GradientTape() as tape:
            out = self._forward(images, training=True, arc=arc)
            loss = share(out.logits)
            objective = loss
            if out.aux_logits is not None:
                objective = loss + 0.4 * share(out.aux_logits)
            if self.cfg.l2_reg > 0:
                objective = objective + (
                    self.cfg.l2_reg * l2_loss(self.variables)
                    / float(distribute.num_replicas()))
            if self.loss_scale is not None:
                objective = self.loss_scale.scale_loss(objective)
        return (tape.gradient(objective, self.variables), loss,
                num_correct(out.logits, labels))

    def logits(self, images):
        """Evaluation logits: inference mode, or training mode when
        `eval_training_mode` (aux logits dropped)."""
        return self._forward(images, training=self.eval_training_mode).logits

    def _eval_step(self, images, labels):
        # Searching, every batch is scored with a fresh arc, as the
        # reference's valid and test graphs read the controller's sample.
        return num_correct(self.logits(images), labels)

    def evaluate(self, dataset):
        """Accuracy over a whole evaluation dataset (every example once)."""
        correct, total = 0, 0
        for images, labels in dataset:
            correct += int(self.eval_step(images, labels))
            total += int(labels.shape[0])
        return correct / max(1, total)
