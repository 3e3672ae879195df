"""The corrected PTB language model's `SPACE` (enas_lm): its config from
the flags of `python -m src.enas_lm.fixed`, the fixed model's session (data,
models, steps, evaluations), the arc printout and `arcs.jsonl` fields.
The loop that drives the session is `src.enas_lm.loop`.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf

from src.enas_lm import arcs
from src.enas_lm.child import EnasLmChildConfig, EnasLmFixedChild
from src.enas_lm.data import RandomLengthStream
from src.enas_lm.trainer import EnasLmFixedTrainer, EnasLmTrainConfig
from src.errors import UserError
from src.ptb import data as ptb_data
from src.space import RunConfig, SearchSpace


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
        return fixed_config_from_flags(f)

    def build_child(self, child_cfg):
        return EnasLmFixedChild(child_cfg)

    def build_variables(self, child):
        pass  # the child creates its weights when constructed

    def parse_arc(self, values, child_cfg):
        return arcs.EnasLmArc.parse(
            values, child_cfg.fixed_arc.num_layers,
            child_cfg.fixed_arc.average_loose_ends)

    def open_session(self, cfg, data=None):
        return EnasLmFixedSession(cfg, data)

    def printout(self, arc, score):
        return ["{} rw={:<.3f}".format(np.array(arc.to_list()), score)]

    def arc_record(self, arc):
        return {"enas_lm_cell": arc.describe()}


def _at_least(f, minimums):
    for name, least in minimums.items():
        if getattr(f, name) < least:
            raise UserError("--{} must be at least {}, got {}".format(
                name, least, getattr(f, name)))


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
        deterministic=f.deterministic, nan_policy=f.nan_policy)


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
        if data is None and cfg.train_on_valid:
            print("note: --train_on_valid: training on the valid text, "
                  "validating and testing on the test text")
            data = ptb_data.read_dev_data(cfg.data_path)
        elif data is None:
            data = ptb_data.read_data(cfg.data_path, download=cfg.download)
        print("-" * 80)
        print("train_size: {0}".format(np.size(data.train)))
        print("valid_size: {0}".format(np.size(data.valid)))
        print(" test_size: {0}".format(np.size(data.test)))
        if data.vocab_size > cfg.child.vocab_size:
            raise UserError(
                "the data has {} words but --child_vocab_size={}: the "
                "embedding needs a row per word; raise --child_vocab_size"
                .format(data.vocab_size, cfg.child.vocab_size))
        batch, bptt = cfg.child.batch_size, cfg.child.bptt_steps
        ptb_data.check_stream(data.train, batch, bptt, "train")
        ptb_data.check_stream(data.valid, batch, bptt, "valid")
        ptb_data.check_stream(data.test, 1, 1, "test")
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
        self.trainer = EnasLmFixedTrainer(self.child, cfg.train)
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


SPACE = EnasLmSpace()
