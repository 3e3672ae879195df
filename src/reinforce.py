"""REINFORCE with a moving-average baseline: the reference's controller
trainer (`build_trainer` of its controllers), shared by every search space.

One `run()` samples an architecture, scores it with the reward function,
updates the baseline, and computes the policy gradient of

    loss = -log_prob * (reward - baseline) + skip_weight * skip_penalty,

the baseline being updated first, b <- b - (1 - bl_dec)(b - reward), as the
reference does. With `sync_replicas` the gradients of `num_aggregate` runs
are averaged before one optimiser update (the reference's
SyncReplicasOptimizer with one replica); otherwise every run updates.
"""

import dataclasses

import tensorflow as tf

from src import schedules
from src.common_ops import traced
from src.train_ops import (all_finite, apply_update, l2_loss, make_optimizer,
                           norm_clip_lr)


@dataclasses.dataclass
class ReinforceConfig:
    """The reference's controller training settings."""
    lr: float = 1e-3
    lr_dec_start: int = 0
    lr_dec_every: int = 1000000   # the reference never decays it
    lr_dec_rate: float = 0.9
    l2_reg: float = 0.0
    clip_mode: str = None
    grad_bound: float = None
    bl_dec: float = 0.99
    entropy_weight: float = None
    skip_weight: float = None
    sync_replicas: bool = False
    num_aggregate: int = 1
    optim_algo: str = "adam"


class Reinforce:
    """Trains `controller` by REINFORCE on `reward_fn(arc, *batch)`.

    controller: has `sample()` -> dict with "arc", "log_prob" (a negative
      number), "entropy", and optionally "skip_rate", "skip_penalty";
      and `trainable_variables`.
    reward_fn: (arc, *batch) -> float32 scalar reward (no gradient taken).
    """

    def __init__(self, controller, reward_fn, cfg):
        self.controller = controller
        self.reward_fn = reward_fn
        self.cfg = cfg
        self.baseline = tf.Variable(0.0, trainable=False, name="baseline")
        self.lr_cfg = schedules.LrConfig(
            lr_init=cfg.lr, lr_dec_start=cfg.lr_dec_start,
            lr_dec_every=cfg.lr_dec_every, lr_dec_rate=cfg.lr_dec_rate)
        self.optimizer = make_optimizer(
            cfg.optim_algo, schedules.StepSchedule(self.lr_cfg),
            name="controller_optimizer")
        self.variables = list(controller.trainable_variables)
        self.optimizer.build(self.variables)
        self.aggregate = max(1, int(cfg.num_aggregate or 1)) \
            if cfg.sync_replicas else 1
        self._accum = [tf.Variable(tf.zeros_like(v), trainable=False)
                       for v in self.variables]
        self._count = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.run = traced(self._run)

    @property
    def train_step(self):
        """Updates applied so far (the reference's controller train_step)."""
        return self.optimizer.iterations

    def _run(self, *batch):
        cfg = self.cfg
        with tf.GradientTape() as tape:
            sample = self.controller.sample()
            accuracy = tf.stop_gradient(self.reward_fn(sample["arc"], *batch))
            reward = accuracy
            if cfg.entropy_weight is not None:
                # Whether the bonus carries a gradient is the controller's
                # choice (the reference's controllers stop it).
                reward += cfg.entropy_weight * sample["entropy"]
            # A non-finite reward leaves the baseline alone (the entry point
            # then stops or skips this arc).
            finite_reward = tf.math.is_finite(reward)
            self.baseline.assign(tf.where(
                finite_reward,
                self.baseline - (1.0 - cfg.bl_dec) * (
                    self.baseline - tf.stop_gradient(reward)),
                self.baseline))
            loss = -sample["log_prob"] * (
                reward - tf.stop_gradient(self.baseline))
            if cfg.skip_weight is not None and "skip_penalty" in sample:
                loss += cfg.skip_weight * sample["skip_penalty"]
            total = loss
            if cfg.l2_reg > 0:
                total = loss + cfg.l2_reg * l2_loss(self.variables)
        grads = tape.gradient(total, self.variables)
        grads = [tf.zeros_like(v) if g is None else g
                 for g, v in zip(grads, self.variables)]
        if self.aggregate == 1:
            update = apply_update(grads, self.variables, self.optimizer,
                                  self.lr_cfg, cfg.clip_mode, cfg.grad_bound,
                                  check=[loss, reward])
            lr, grad_norm = update.lr, update.grad_norm
        else:
            lr, grad_norm = self._aggregate(grads, loss, reward)
        out = {"loss": loss, "entropy": sample["entropy"], "lr": lr,
               "grad_norm": grad_norm, "valid_acc": accuracy,
               "reward": reward, "baseline": tf.identity(self.baseline),
               "arc": sample["arc"], "log_prob": sample["log_prob"]}
        if "skip_rate" in sample:
            out["skip_rate"] = sample["skip_rate"]
        return out

    def _aggregate(self, grads, loss, reward):
        """The sync_replicas path: this run's clipped gradients are added to
        the aggregate (nothing when its loss, reward or gradient norm is not
        finite); after `num_aggregate` finite runs their mean is applied.
        Returns (learning rate, gradient norm before clipping)."""
        cfg = self.cfg
        grads, grad_norm, lr = norm_clip_lr(grads, self.optimizer,
                                            self.lr_cfg, cfg.clip_mode,
                                            cfg.grad_bound)
        finite = all_finite([loss, reward, grad_norm])
        for acc, g in zip(self._accum, grads):
            acc.assign_add(tf.where(finite, g, tf.zeros_like(g)))
        self._count.assign_add(tf.cast(finite, tf.int64))

        def apply():
            mean = [acc / float(self.aggregate) for acc in self._accum]
            self.optimizer.apply_gradients(zip(mean, self.variables))
            for acc in self._accum:
                acc.assign(tf.zeros_like(acc))
            self._count.assign(0)
            return tf.constant(True)

        tf.cond(self._count >= self.aggregate, apply,
                lambda: tf.constant(False))
        return lr, grad_norm

    def checkpoint_objects(self):
        """What a run checkpoint must hold for the controller's training."""
        return {"controller_optimizer": self.optimizer,
                "controller_baseline": self.baseline}
