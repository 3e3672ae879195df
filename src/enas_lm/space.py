"""The corrected PTB language model's `SPACE` (enas_lm): its configs from
the flags of `python -m src.enas_lm.fixed` and `python -m src.enas_lm.search`,
the sessions of both (data, models, steps, evaluations, the controller's
training), the arc printout and `arcs.jsonl` fields. The loops that drive
the sessions are `src.enas_lm.loop`.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf

from src.enas_lm import arcs
from src.enas_lm.child import (EnasLmChildConfig, EnasLmFixedChild,
                               EnasLmSearchChild)
from src.enas_lm.controller import (REWARD_CONSTANT, EnasLmController,
                                    EnasLmControllerConfig,
                                    SyncReplicasReinforce)
from src.enas_lm.checkpoint import import_enas_lm_checkpoint
from src.enas_lm.data import RandomLengthStream
from src.enas_lm.trainer import (EnasLmFixedTrainer, EnasLmSearchTrainer,
                                 EnasLmTrainConfig)
from src.errors import UserError
from src.ptb import data as ptb_data
from src.reinforce import ReinforceConfig
from src.space import ExportAveraging, RunConfig, SearchSpace


@dataclasses.dataclass(kw_only=True)
class EnasLmFixedConfig(RunConfig):
    """A fixed-model run's config (`num_epochs` is enas_lm's
    `child_num_train_epochs`)."""
    train_on_valid: bool = False
    best_valid_ppl_threshold: int = 10
    num_warmup_epochs: float = 0.0
    space = "enas_lm"


class EnasLmSpace(SearchSpace):
    name = "enas_lm"
    entry = "enas_lm_fixed"
    search_for = "enas_lm"
    model_name = "language_model"
    arc_class = arcs.EnasLmArc

    def config_from_flags(self, f):
        """The fixed entry point's flags (it has --fixed_arc) or the
        search's."""
        if "fixed_arc" in f:
            return fixed_config_from_flags(f)
        return search_config_from_flags(f)

    def build_child(self, child_cfg):
        if child_cfg.fixed_arc is None:
            return EnasLmSearchChild(child_cfg)
        return EnasLmFixedChild(child_cfg)

    def build_lstm_controller(self, controller_cfg):
        return EnasLmController(controller_cfg)

    def build_variables(self, child):
        pass  # the child creates its weights when constructed

    # -- export (src.export): the PTB space's signatures

    def prepare_export(self, cfg, source, reference, log):
        pass  # the vocabulary is --child_vocab_size, as in the run

    def serving_statistics(self, cfg, log):
        return None, None

    def export_averaging(self, cfg, child):
        """A fixed model exports its averaged weights once its run started
        averaging (what enas_lm evaluates from then on)."""
        if child.searching:
            return ExportAveraging()
        return _averaging(EnasLmFixedTrainer(child, cfg.train),
                          restore=True)

    def import_reference(self, cfg, source, child, controller):
        """An enas_lm TF1 checkpoint (`import_enas_lm_checkpoint`), with the
        fixed trainer's averaging state."""
        trainer = None
        if child is not None and not child.searching:
            trainer = EnasLmFixedTrainer(child, cfg.train)
        info = import_enas_lm_checkpoint(source, child, trainer=trainer,
                                         controller=controller)
        steps = {"global_step": info["global_step"],
                 "controller_step": info["train_step"]}
        if trainer is None:
            return steps, ExportAveraging()
        return steps, _averaging(trainer, restore=False)

    def parse_arc(self, values, child_cfg):
        loose = (child_cfg.average_loose_ends if child_cfg.fixed_arc is None
                 else child_cfg.fixed_arc.average_loose_ends)
        return arcs.EnasLmArc.parse(values, child_cfg.num_layers, loose)

    def open_session(self, cfg, data=None):
        if cfg.searching:
            return EnasLmSearchSession(self, cfg, data)
        return EnasLmFixedSession(cfg, data)

    def printout(self, arc, score):
        return ["{} rw={:<.3f}".format(np.array(arc.to_list()), score)]

    def arc_record(self, arc):
        return {"enas_lm_cell": arc.describe()}


def _averaging(trainer, restore):
    """The ExportAveraging of a fixed trainer's averages (`restore`: read
    from a run checkpoint, else already assigned)."""
    return ExportAveraging(
        objects=({"averaging": trainer.checkpoint_objects()["averaging"]}
                 if restore else {}),
        active=lambda: bool(trainer.moving_avg_started.numpy()),
        weights=trainer.averaged_weights)


def _at_least(f, minimums):
    for name, least in minimums.items():
        if getattr(f, name) < least:
            raise UserError("--{} must be at least {}, got {}".format(
                name, least, getattr(f, name)))


def _read_data(cfg, data, test=True):
    """The corpus (read unless given) with enas_lm's size lines."""
    if data is None and cfg.train_on_valid:
        print("note: --train_on_valid: training on the valid text, "
              "validating and testing on the test text")
        data = ptb_data.read_dev_data(cfg.data_path)
    elif data is None:
        data = ptb_data.read_data(cfg.data_path, download=cfg.download)
    print("-" * 80)
    print("train_size: {0}".format(np.size(data.train)))
    print("valid_size: {0}".format(np.size(data.valid)))
    if test:
        print(" test_size: {0}".format(np.size(data.test)))
    if data.vocab_size > cfg.child.vocab_size:
        raise UserError(
            "the data has {} words but --child_vocab_size={}: the "
            "embedding needs a row per word; raise --child_vocab_size"
            .format(data.vocab_size, cfg.child.vocab_size))
    batch, bptt = cfg.child.batch_size, cfg.child.bptt_steps
    ptb_data.check_stream(data.train, batch, bptt, "train")
    ptb_data.check_stream(data.valid, batch, bptt, "valid")
    if test:
        ptb_data.check_stream(data.test, 1, 1, "test")
    return data


def child_config(f, fixed_arc, batch_size):
    """The EnasLmChildConfig of the child flags both entry points share."""
    return EnasLmChildConfig(
        fixed_arc=fixed_arc, vocab_size=f.child_vocab_size,
        hidden_size=f.child_hidden_size, batch_size=batch_size,
        bptt_steps=f.child_bptt_steps, init_range=f.child_init_range,
        drop_e=f.child_drop_e, drop_i=f.child_drop_i, drop_l=f.child_drop_l,
        drop_o=f.child_drop_o, drop_w=f.child_drop_w, drop_x=f.child_drop_x,
        seed=f.seed)


def fixed_config_from_flags(f):
    """Validates the flags of `python -m src.enas_lm.fixed` into an
    EnasLmFixedConfig."""
    if not f.output_dir:
        raise UserError("--output_dir is required: the folder of the run's "
                        "checkpoints and stdout")
    if not f.data_path:
        raise UserError("--data_path is required: enas_lm's ptb.pkl, or a "
                        "folder with it or with the PTB text files")
    if f.fixed_arc is None:
        raise UserError("--fixed_arc is required, e.g. --fixed_arc=\"{}\" "
                        "(the arc of enas_lm's README)".format(
                            arcs.README_FIXED_ARC))
    _at_least(f, {"log_every": 1, "child_num_train_epochs": 1,
                  "child_batch_size": 1, "child_bptt_steps": 1,
                  "child_hidden_size": 1, "child_vocab_size": 1,
                  "child_best_valid_ppl_threshold": 0})
    if f.child_num_warmup_epochs < 0:
        raise UserError("--child_num_warmup_epochs must not be negative, got "
                        "{}".format(f.child_num_warmup_epochs))
    values = arcs.arc_ints(f.fixed_arc, "--fixed_arc")
    if len(values) % 2:
        raise UserError("--fixed_arc has {} integers, an odd number: a "
                        "previous node and a function per node".format(
                            len(values)))
    arc = arcs.EnasLmArc.parse(values, len(values) // 2,
                               f.child_average_loose_ends)
    child = child_config(f, arc, f.child_batch_size)
    child.validate()
    train = EnasLmTrainConfig(
        learning_rate=f.child_learning_rate, bptt_steps=f.child_bptt_steps,
        grad_bound=f.child_grad_bound, weight_decay=f.child_weight_decay,
        alpha=f.child_alpha)
    train.validate()
    return EnasLmFixedConfig(
        data_path=f.data_path, output_dir=f.output_dir,
        reset_output_dir=f.reset_output_dir, batch_size=f.child_batch_size,
        num_epochs=f.child_num_train_epochs, log_every=f.log_every,
        eval_every_epochs=1, seed=f.seed, download=f.download, child=child,
        train=train, train_on_valid=f.train_on_valid,
        best_valid_ppl_threshold=f.child_best_valid_ppl_threshold,
        num_warmup_epochs=f.child_num_warmup_epochs,
        reference_checkpoint=f.reference_checkpoint,
        deterministic=f.deterministic, nan_policy=f.nan_policy,
        jit_compile=f.jit_compile)


def averaging_starts(history, valid_ppl, threshold, started):
    """enas_lm's trigger: not `started`, more than `threshold` earlier
    perplexities in `history`, and `valid_ppl` worse than the best of all
    of them but the last `threshold`."""
    return (not started and len(history) > threshold
            and valid_ppl > min(history[:len(history) - threshold]))


class EnasLmFixedSession:
    """A fixed-model run (what enas_lm's `fixed.train` holds): the data read
    and checked, the steps per epoch and in all, then (`build`) the child,
    the trainer and the training stream.

    data: a PtbData already read, else read from cfg.data_path.
    """

    def __init__(self, cfg, data=None):
        self.cfg = cfg
        data = _read_data(cfg, data)
        batch, bptt = cfg.child.batch_size, cfg.child.bptt_steps
        self.data = data
        self.num_train_batches = ptb_data.num_windows(data.train, batch,
                                                      bptt)
        self.num_train_steps = self.num_train_batches * cfg.num_epochs
        cfg.train.num_warmup_steps = (cfg.num_warmup_epochs
                                      * self.num_train_batches)
        self.child = self.trainer = self.stream = None

    def hparams(self):
        """enas_lm's HParams object as it prints it, by name."""
        cfg, c, t = self.cfg, self.cfg.child, self.cfg.train
        return {
            "alpha": t.alpha, "batch_size": c.batch_size,
            "best_valid_ppl_threshold": cfg.best_valid_ppl_threshold,
            "bptt_steps": c.bptt_steps, "data_path": cfg.data_path,
            "drop_e": c.drop_e, "drop_i": c.drop_i, "drop_l": c.drop_l,
            "drop_o": c.drop_o, "drop_w": c.drop_w, "drop_x": c.drop_x,
            "fixed_arc": c.fixed_arc.to_list(), "grad_bound": t.grad_bound,
            "hidden_size": c.hidden_size, "init_range": c.init_range,
            "learning_rate": t.learning_rate, "log_every": cfg.log_every,
            "num_train_batches": self.num_train_batches,
            "num_train_epochs": cfg.num_epochs,
            "num_train_steps": self.num_train_steps,
            "num_warmup_epochs": cfg.num_warmup_epochs,
            "num_warmup_steps": t.num_warmup_steps,
            "output_dir": cfg.output_dir, "vocab_size": c.vocab_size,
            "weight_decay": t.weight_decay}

    def build(self):
        """Builds the child and trainer, printing enas_lm's lines; returns
        the checkpoint's models and objects ({name: layer}, {name:
        trackable})."""
        cfg = self.cfg
        print("-" * 80)
        print("Building LM")
        self.child = EnasLmFixedChild(cfg.child)
        self.trainer = EnasLmFixedTrainer(
            self.child, cfg.train, jit_compile=cfg.jit_compile == "true")
        print("Model has {0} params".format(sum(
            int(np.prod(v.shape)) for v in self.trainer.variables)))
        self.stream = RandomLengthStream(
            self.data.train, cfg.child.batch_size, cfg.child.bptt_steps,
            cfg.seed)
        self.start_idx = tf.Variable(0, dtype=tf.int32, trainable=False,
                                     name="start_idx")
        # The validation perplexities so far (the averaging trigger's).
        self.best_valid_ppl = tf.Variable(
            tf.zeros([0], tf.float64), shape=tf.TensorShape([None]),
            trainable=False, name="best_valid_ppl")
        print("-" * 80)
        print("HParams:\n{0}".format(json.dumps(self.hparams(), indent=2,
                                                sort_keys=True)))
        return {"child": self.child}, dict(
            self.trainer.checkpoint_objects(), start_idx=self.start_idx,
            best_valid_ppl=self.best_valid_ppl)

    # -- what the loop calls

    def next_batch(self):
        """(x, y, should_reset) of the next training window."""
        self.stream.position = int(self.start_idx.numpy())
        x, y, should_reset = self.stream.next(
            int(self.trainer.global_step.numpy()))
        self.start_idx.assign(self.stream.position)
        return x, y, should_reset

    def train_step(self, x, y):
        return {k: v.numpy() for k, v in self.trainer.train_step(x, y).items()}

    def evaluate_valid(self, use_average):
        """enas_lm's `eval_valid`: every valid window in order from a zero
        state (on the averaged weights when `use_average`); prints and
        returns the perplexity."""
        cfg = self.cfg
        state = tf.zeros([cfg.child.batch_size, cfg.child.hidden_size])
        with self.trainer.averaged_weights(use_average):
            losses, _ = self.trainer.evaluate_windows(
                ptb_data.iter_windows(self.data.valid, cfg.child.batch_size,
                                      cfg.child.bptt_steps), state)
        valid_ppl = float(np.exp(np.mean(losses)))
        print("valid_ppl={0:<.2f}".format(valid_ppl))
        return valid_ppl

    def evaluate_test(self, use_average):
        """enas_lm's `eval_test`: batch 1 over the test stream from a zero
        state, a line every 1000 tokens and at the end; returns the
        perplexity."""
        with self.trainer.averaged_weights(use_average):
            losses, _ = self.trainer.test_pass(
                np.asarray(self.data.test, np.int32),
                tf.zeros([1, self.cfg.child.hidden_size]))
        sums = np.cumsum(losses.numpy().astype(np.float64))
        total = sums.size
        for done in range(1000, total + 1, 1000):
            print("step={0:<6d} test_ppl={1:<.2f}".format(
                done, np.exp(sums[done - 1] / done)))
        test_ppl = float(np.exp(sums[-1] / total))
        print("step={0:<6d} test_ppl={1:<.2f}".format(total, test_ppl))
        return test_ppl

    def averaging_trigger(self, valid_ppl):
        """enas_lm's NT-ASGD rule after an evaluation: start averaging when
        it has not started, more than `threshold` perplexities are known
        and this one is worse than the best of all but the last `threshold`
        of them. Records `valid_ppl`; returns whether averaging starts."""
        best = list(self.best_valid_ppl.numpy())
        start = averaging_starts(
            best, valid_ppl, self.cfg.best_valid_ppl_threshold,
            bool(self.trainer.moving_avg_started.numpy()))
        if start:
            print("Starting moving_avg")
            self.trainer.start_average()
        self.best_valid_ppl.assign(np.array(best + [valid_ppl]))
        return start


@dataclasses.dataclass(kw_only=True)
class EnasLmSearchConfig(RunConfig):
    """A search run's config (`num_epochs` is enas_lm's hard-coded
    num_train_epochs)."""
    train_on_valid: bool = False
    space = "enas_lm"


def search_config_from_flags(f):
    """Validates the flags of `python -m src.enas_lm.search` into an
    EnasLmSearchConfig."""
    if not f.output_dir:
        raise UserError("--output_dir is required: the folder of the run's "
                        "checkpoints and stdout")
    if not f.data_path:
        raise UserError("--data_path is required: enas_lm's ptb.pkl, or a "
                        "folder with it or with the PTB text files")
    _at_least(f, {"log_every": 1, "child_num_train_epochs": 1,
                  "child_batch_size": 1, "child_bptt_steps": 1,
                  "child_hidden_size": 1, "child_vocab_size": 1,
                  "controller_num_layers": 1, "controller_hidden_size": 1,
                  "controller_num_aggregate": 1,
                  "controller_num_train_steps": 1})
    if not 0.0 <= f.controller_baseline_dec <= 1.0:
        raise UserError("--controller_baseline_dec={} is not in [0, 1]"
                        .format(f.controller_baseline_dec))
    child = child_config(f, None, f.child_batch_size)
    child.search_layers = f.controller_num_layers
    child.average_loose_ends = f.child_average_loose_ends
    child.validate()
    train = EnasLmTrainConfig(
        learning_rate=f.child_learning_rate, bptt_steps=f.child_bptt_steps,
        grad_bound=f.child_grad_bound, weight_decay=f.child_weight_decay,
        alpha=f.child_alpha, beta=f.child_beta)
    train.validate()
    controller = EnasLmControllerConfig(
        num_layers=f.controller_num_layers,
        lstm_size=f.controller_hidden_size,
        temperature=f.controller_temperature or None,
        tanh_constant=f.controller_tanh_constant or None, seed=f.seed)
    controller.validate()
    reinforce = ReinforceConfig(
        lr=f.controller_learning_rate, bl_dec=f.controller_baseline_dec,
        entropy_weight=f.controller_entropy_weight or None,
        sync_replicas=True, num_aggregate=f.controller_num_aggregate)
    return EnasLmSearchConfig(
        data_path=f.data_path, output_dir=f.output_dir,
        reset_output_dir=f.reset_output_dir, batch_size=f.child_batch_size,
        num_epochs=f.child_num_train_epochs, log_every=f.log_every,
        eval_every_epochs=1, seed=f.seed, download=f.download, child=child,
        train=train, train_on_valid=f.train_on_valid, controller=controller,
        reinforce=reinforce, controller_training=True,
        controller_train_every=1,
        controller_train_steps=f.controller_num_train_steps,
        controller_num_aggregate=f.controller_num_aggregate,
        reference_checkpoint=f.reference_checkpoint,
        deterministic=f.deterministic, nan_policy=f.nan_policy,
        jit_compile=f.jit_compile)


class EnasLmSearchSession:
    """A search run (what enas_lm's `search.train` holds): the data, then
    (`build`) the controller, the shared-weight child, their trainers and
    the training stream. The validation windows form one stream that the
    controller's rewards and the evaluations share, as enas_lm's valid
    queue (`valid_position`)."""

    def __init__(self, space, cfg, data=None):
        self.space = space
        self.cfg = cfg
        self.data = _read_data(cfg, data, test=False)
        batch, bptt = cfg.child.batch_size, cfg.child.bptt_steps
        self.num_train_batches = ptb_data.num_windows(self.data.train, batch,
                                                      bptt)
        self.num_train_steps = self.num_train_batches * cfg.num_epochs
        self.valid_windows = [
            (tf.constant(x), tf.constant(y)) for x, y in
            ptb_data.iter_windows(self.data.valid, batch, bptt)]
        self.child = self.trainer = self.controller = None
        self.reinforce = self.stream = None

    def hparams(self):
        cfg, c, t = self.cfg, self.cfg.child, self.cfg.train
        ctrl, rf = cfg.controller, cfg.reinforce
        return {
            "alpha": t.alpha, "batch_size": c.batch_size,
            "best_valid_ppl_threshold": 5, "beta": t.beta,
            "bptt_steps": c.bptt_steps,
            "controller_baseline_dec": rf.bl_dec,
            "controller_entropy_weight": rf.entropy_weight or 0.0,
            "controller_hidden_size": ctrl.lstm_size,
            "controller_learning_rate": rf.lr,
            "controller_num_aggregate": rf.num_aggregate,
            "controller_num_functions": len(arcs.ENAS_LM_FUNCS),
            "controller_num_layers": ctrl.num_layers,
            "controller_num_train_steps": cfg.controller_train_steps,
            "controller_tanh_constant": ctrl.tanh_constant,
            "controller_temperature": ctrl.temperature,
            "data_path": cfg.data_path, "drop_e": c.drop_e,
            "drop_i": c.drop_i, "drop_l": c.drop_l, "drop_o": c.drop_o,
            "drop_w": c.drop_w, "drop_x": c.drop_x,
            "grad_bound": t.grad_bound, "hidden_size": c.hidden_size,
            "init_range": c.init_range, "learning_rate": t.learning_rate,
            "log_every": cfg.log_every,
            "num_train_batches": self.num_train_batches,
            "num_train_epochs": cfg.num_epochs,
            "num_train_steps": self.num_train_steps,
            "output_dir": cfg.output_dir, "vocab_size": c.vocab_size,
            "weight_decay": t.weight_decay}

    def build(self):
        """Builds the controller, the child and their trainers, printing
        enas_lm's lines; returns the checkpoint's models and objects."""
        cfg = self.cfg
        print("-" * 80)
        print("Create a controller")
        self.controller = self.space.build_controller(cfg.controller)
        print("Controller has {0} params".format(sum(
            int(np.prod(v.shape))
            for v in self.controller.trainable_variables)))
        print("-" * 80)
        print("Building LM")
        self.child = EnasLmSearchChild(cfg.child)
        self.trainer = EnasLmSearchTrainer(
            self.child, cfg.train, jit_compile=cfg.jit_compile == "true")
        variables = self.trainer.variables
        print("All children have {0} params".format(sum(
            int(np.prod(v.shape)) for v in variables)))
        print("Each child has {0} params".format(sum(
            int(np.prod(v.shape[-2:])) if i > 0 else int(np.prod(v.shape))
            for i, v in enumerate(variables))))
        trainer = self.trainer

        def reward(arc, x, y):
            return REWARD_CONSTANT / tf.exp(trainer.reward_nll(x, y, arc))

        self.reinforce = SyncReplicasReinforce(self.controller, reward,
                                               cfg.reinforce)
        self.stream = RandomLengthStream(
            self.data.train, cfg.child.batch_size, cfg.child.bptt_steps,
            cfg.seed)
        self.start_idx = tf.Variable(0, dtype=tf.int32, trainable=False,
                                     name="start_idx")
        self.valid_position = tf.Variable(0, dtype=tf.int64, trainable=False,
                                          name="valid_position")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name="search_epoch")
        print("-" * 80)
        print("HParams:\n{0}".format(json.dumps(self.hparams(), indent=2,
                                                sort_keys=True)))
        return ({"child": self.child, "controller": self.controller},
                dict(trainer.checkpoint_objects(),
                     **self.reinforce.checkpoint_objects(),
                     start_idx=self.start_idx,
                     valid_position=self.valid_position,
                     search_epoch=self.epoch))

    # -- what the loop calls

    def next_batch(self):
        self.stream.position = int(self.start_idx.numpy())
        x, y, should_reset = self.stream.next(
            int(self.trainer.global_step.numpy()))
        self.start_idx.assign(self.stream.position)
        return x, y, should_reset

    def train_step(self, x, y):
        """One child step on an arc the controller samples."""
        arc = self.controller.sample()["arc"]
        out = self.trainer.train_step(x, y, arc)
        out = {k: v.numpy() for k, v in out.items()}
        out["arc"] = arc.numpy()
        return out

    def next_valid_window(self):
        """The next window of the shared validation stream."""
        i = int(self.valid_position.numpy()) % len(self.valid_windows)
        self.valid_position.assign_add(1)
        return self.valid_windows[i]

    def train_controller(self, log_every=10):
        """enas_lm's `controller.train`: num_aggregate * num_train_steps
        REINFORCE calls, each rewarded on the next validation window; a
        line every `log_every` calls. Returns the last call's values."""
        cfg = self.cfg
        print("-" * 80)
        print("Training controller")
        out = None
        for step in range(cfg.controller_num_aggregate
                          * cfg.controller_train_steps):
            out = self.reinforce.run(*self.next_valid_window())
            out = {k: v.numpy() for k, v in out.items()}
            if step % log_every == 0:
                print(controller_line(step, out))
        return out

    def evaluate_valid(self):
        """enas_lm's search `eval_valid`: every validation window, each
        from a zero state on an arc the controller samples; prints and
        returns exp(mean window loss)."""
        total = 0.0
        for _ in range(len(self.valid_windows)):
            x, y = self.next_valid_window()
            arc = self.controller.sample()["arc"]
            total += float(self.trainer.reward_nll(x, y, arc))
        valid_ppl = float(np.exp(total / len(self.valid_windows)))
        print("valid_ppl={0:<.2f}".format(valid_ppl))
        return valid_ppl


def controller_line(step, out):
    """enas_lm's controller log line (ppl = 80 / reward, the entropy bonus
    included)."""
    return ("step={0:<5d}".format(step)
            + " ent={0:<7.3f}".format(float(out["entropy"]))
            + " ppl={0:<7.2f}".format(REWARD_CONSTANT / float(out["reward"]))
            + " rw={0:<7.4f}".format(float(out["reward"]))
            + " bl={0:<7.4f}".format(float(out["baseline"]))
            + " arc=[{0}]".format(" ".join(str(int(v))
                                           for v in out["arc"])))


SPACE = EnasLmSpace()
