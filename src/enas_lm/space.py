"""The corrected PTB language model's `SPACE` (enas_lm): its configs from
the flags of `python -m src.enas_lm.fixed` and `python -m src.enas_lm.search`,
the sessions of both (data, models, steps, evaluations, the controller's
training) that `src.run_loop` drives, the arc printout and `arcs.jsonl`
fields.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf

from src.enas_lm import arcs
from src.enas_lm.checkpoint import import_enas_lm_checkpoint
from src.enas_lm.child import (EnasLmChildConfig, EnasLmFixedChild,
                               EnasLmSearchChild)
from src.enas_lm.controller import (REWARD_CONSTANT, EnasLmController,
                                    EnasLmControllerConfig,
                                    SyncReplicasReinforce)
from src.enas_lm.data import RandomLengthStream
from src.enas_lm.log_lines import controller_line, search_line, train_line
from src.enas_lm.trainer import (EnasLmFixedTrainer, EnasLmSearchTrainer,
                                 EnasLmTrainConfig)
from src.errors import UserError
from src.ptb import data as ptb_data
from src.random_policy import RandomPolicyConfig, uniform
from src.reinforce import ReinforceConfig
from src.search import PhaseHooks
from src.space import ExportAveraging, RunConfig, SearchSpace, Session


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

    def random_policy(self, controller_cfg):
        return random_policy_config(controller_cfg)

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

    def describe_sizes(self, child_cfg):
        c = child_cfg
        return "hidden {}, bptt {}, {} nodes".format(
            c.hidden_size, c.bptt_steps, c.num_layers)

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


class _EnasLmSession(Session):
    """What both enas_lm runs share for `src.run_loop`: an epoch is a pass
    over the training text in enas_lm's random-length windows (so its
    steps vary), the run ends after `num_train_steps` steps (mid-pass, as
    enas_lm's), the stream's position is checkpointed (`start_idx`), the
    log line's perplexity is over the pass so far, and enas_lm prints none
    of the reference's banners."""

    def __init__(self, cfg, data, test):
        self.cfg = cfg
        self.data = _read_data(cfg, data, test=test)
        batch, bptt = cfg.child.batch_size, cfg.child.bptt_steps
        self.num_train_batches = ptb_data.num_windows(self.data.train, batch,
                                                      bptt)
        self.num_train_steps = self.num_train_batches * cfg.num_epochs
        self.child = self.trainer = self.stream = self.start_idx = None
        self._epoch_end = False
        self._accum_loss, self._accum_steps = 0.0, 0

    def _shared_hparams(self):
        """The HParams both of enas_lm's entry points print."""
        cfg, c, t = self.cfg, self.cfg.child, self.cfg.train
        return {
            "alpha": t.alpha, "batch_size": c.batch_size,
            "bptt_steps": c.bptt_steps, "data_path": cfg.data_path,
            "drop_e": c.drop_e, "drop_i": c.drop_i, "drop_l": c.drop_l,
            "drop_o": c.drop_o, "drop_w": c.drop_w, "drop_x": c.drop_x,
            "grad_bound": t.grad_bound, "hidden_size": c.hidden_size,
            "init_range": c.init_range, "learning_rate": t.learning_rate,
            "log_every": cfg.log_every,
            "num_train_batches": self.num_train_batches,
            "num_train_epochs": cfg.num_epochs,
            "num_train_steps": self.num_train_steps,
            "output_dir": cfg.output_dir, "vocab_size": c.vocab_size,
            "weight_decay": t.weight_decay}

    def _stream(self):
        """The training stream and its checkpointed position."""
        self.stream = RandomLengthStream(
            self.data.train, self.cfg.child.batch_size,
            self.cfg.child.bptt_steps, self.cfg.seed)
        self.start_idx = tf.Variable(0, dtype=tf.int32, trainable=False,
                                     name="start_idx")

    def _started_from(self, path, info):
        """After an enas_lm checkpoint's import (its `info`; the trainer's
        step is already its global_step): the stream's position."""
        if info["start_idx"] is not None:
            self.start_idx.assign(info["start_idx"])
        print("Initialised from the reference checkpoint {} ({} variables)"
              .format(path, info["loaded"]))

    def next_batch(self):
        """(x, y, should_reset) of the next training window."""
        self.stream.position = int(self.start_idx.numpy())
        x, y, should_reset = self.stream.next(
            int(self.trainer.global_step.numpy()))
        self.start_idx.assign(self.stream.position)
        return x, y, should_reset

    def epoch_batches(self, epoch, step):
        # Windows until the pass ends (should_reset) or the steps run out.
        while True:
            x, y, self._epoch_end = self.next_batch()
            yield x, y
            if self._epoch_end or self.finished(
                    epoch, int(self.trainer.global_step.numpy())):
                return

    def observe(self, out):
        self._accum_loss += float(out["loss"])
        self._accum_steps += 1

    def _ppl(self):
        return np.exp(self._accum_loss / self._accum_steps)

    def at_epoch_end(self, step):
        return self._epoch_end

    def epoch_after(self, epoch, step):
        return epoch + 1 if self._epoch_end else epoch

    def finished(self, epoch, step):
        return step >= self.num_train_steps

    def end_epoch(self, epoch):
        self.trainer.reset_batch_state()
        self._accum_loss, self._accum_steps = 0.0, 0

    def announce_build(self, model_name):
        pass

    def announce_start(self):
        pass

    def announce_eval(self, epoch):
        pass


class EnasLmFixedSession(_EnasLmSession):
    """A fixed-model run (what enas_lm's `fixed.train` holds): the data read
    and checked, the steps per epoch and in all, then (`build`) the child,
    the trainer and the training stream; after each pass the validation
    (on the averaged weights once averaging started) and the averaging
    trigger, at the end the batch-1 test evaluation.

    data: a PtbData already read, else read from cfg.data_path.
    """

    def __init__(self, cfg, data=None):
        super().__init__(cfg, data, test=True)
        cfg.train.num_warmup_steps = (cfg.num_warmup_epochs
                                      * self.num_train_batches)
        self._averaging = False

    def hparams(self):
        """enas_lm's HParams object as it prints it, by name."""
        cfg, c, t = self.cfg, self.cfg.child, self.cfg.train
        return dict(
            self._shared_hparams(),
            best_valid_ppl_threshold=cfg.best_valid_ppl_threshold,
            fixed_arc=c.fixed_arc.to_list(),
            num_warmup_epochs=cfg.num_warmup_epochs,
            num_warmup_steps=t.num_warmup_steps)

    def build(self, strategy):
        """Builds the child and trainer, printing enas_lm's lines; returns
        (child, trainer, no phase, the stream's and the trigger's
        checkpoint objects)."""
        cfg = self.cfg
        print("-" * 80)
        print("Building LM")
        self.child = EnasLmFixedChild(cfg.child)
        self.trainer = self.trainer_for(self.child, None)
        print("Model has {0} params".format(sum(
            int(np.prod(v.shape)) for v in self.trainer.variables)))
        self._stream()
        # The validation perplexities so far (the averaging trigger's).
        self.best_valid_ppl = tf.Variable(
            tf.zeros([0], tf.float64), shape=tf.TensorShape([None]),
            trainable=False, name="best_valid_ppl")
        print("-" * 80)
        print("HParams:\n{0}".format(json.dumps(self.hparams(), indent=2,
                                                sort_keys=True)))
        return self.child, self.trainer, None, dict(
            start_idx=self.start_idx, best_valid_ppl=self.best_valid_ppl)

    def trainer_for(self, child, arc_fn, strategy=None):
        return EnasLmFixedTrainer(child, self.cfg.train,
                                  jit_compile=self.cfg.jit_compile == "true")

    def start_from_reference(self, path, trainer, phase):
        self._started_from(path, import_enas_lm_checkpoint(
            path, self.child, trainer))

    def start_epoch(self, step, saved_epoch):
        return saved_epoch

    def resumed_at(self, epoch, step):
        self._averaging = bool(self.trainer.moving_avg_started.numpy())

    def train_step(self, batch):
        out = self.trainer.train_step(*batch)
        return {k: v.numpy() for k, v in out.items()}

    def observe(self, out):
        super().observe(out)
        self._averaging = bool(out["moving_avg_started"])

    def train_log(self, out, epoch, step, minutes):
        line = train_line(epoch, step, self._ppl(), float(out["lr"]),
                          float(out["grad_norm"]),
                          int(out["moving_avg_started"]), minutes)
        return line, {"child/loss": out["loss"], "child/lr": out["lr"],
                      "child/grad_norm": out["grad_norm"]}

    def after_step(self):
        if self._averaging:
            self.trainer.update_average()

    def evaluate(self, step, summaries):
        valid_ppl = self.evaluate_valid(self._averaging)
        summaries.scalars(step, {"child/valid_ppl": valid_ppl})
        self.averaging_trigger(valid_ppl)

    def finish(self, step, summaries):
        test_ppl = self.evaluate_test(self._averaging)
        summaries.scalars(step, {"child/test_ppl": test_ppl})

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
    num_train_epochs; `controller_hparams`: the controller flags as
    enas_lm's HParams prints them, whatever the policy)."""
    train_on_valid: bool = False
    controller_hparams: dict = None
    space = "enas_lm"


def controller_hparams(f):
    """The controller's entries of enas_lm's HParams, from the flags."""
    return {
        "controller_baseline_dec": f.controller_baseline_dec,
        "controller_entropy_weight": f.controller_entropy_weight or 0.0,
        "controller_hidden_size": f.controller_hidden_size,
        "controller_learning_rate": f.controller_learning_rate,
        "controller_num_aggregate": f.controller_num_aggregate,
        "controller_num_functions": len(arcs.ENAS_LM_FUNCS),
        "controller_num_layers": f.controller_num_layers,
        "controller_num_train_steps": f.controller_num_train_steps,
        "controller_tanh_constant": f.controller_tanh_constant or None,
        "controller_temperature": f.controller_temperature or None}


def random_policy_config(controller_cfg):
    """EnasLmSpace.random_policy: node k's previous node uniform over
    0 .. k - 1 and its function uniform over the four, for k = 1 .. K."""
    choices = []
    for node in range(1, controller_cfg.num_layers + 1):
        choices += [uniform(node), uniform(len(arcs.ENAS_LM_FUNCS))]
    return RandomPolicyConfig(tuple(choices), seed=controller_cfg.seed)


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
    if f.search_policy == "random":
        if f.reference_checkpoint:
            raise UserError("--search_policy=random has no controller to "
                            "start from --reference_checkpoint: drop one "
                            "of them")
        controller = random_policy_config(controller)
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
        jit_compile=f.jit_compile, search_policy=f.search_policy,
        controller_hparams=controller_hparams(f))


class EnasLmSearchSession(_EnasLmSession):
    """A search run (what enas_lm's `search.train` holds): the data, then
    (`build`) the controller, the shared-weight child, their trainers and
    the training stream; after each pass the controller's training
    (`EnasLmControllerPhase`) and the validation on sampled cells. The
    validation windows form one stream that the controller's rewards and
    the evaluations share, as enas_lm's valid queue (`valid_position`)."""

    def __init__(self, space, cfg, data=None):
        super().__init__(cfg, data, test=False)
        self.space = space
        batch, bptt = cfg.child.batch_size, cfg.child.bptt_steps
        self.valid_windows = [
            (tf.constant(x), tf.constant(y)) for x, y in
            ptb_data.iter_windows(self.data.valid, batch, bptt)]
        self.controller = self.reinforce = None

    def hparams(self):
        """enas_lm's HParams object as it prints it, by name."""
        return dict(self._shared_hparams(), best_valid_ppl_threshold=5,
                    beta=self.cfg.train.beta, **self.cfg.controller_hparams)

    def build(self, strategy):
        """Builds the controller, the child and their trainers, printing
        enas_lm's lines; returns (child, trainer, the controller phase, the
        streams' checkpoint objects)."""
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
        self.trainer = self.trainer_for(self.child, None)
        variables = self.trainer.variables
        print("All children have {0} params".format(sum(
            int(np.prod(v.shape)) for v in variables)))
        print("Each child has {0} params".format(sum(
            int(np.prod(v.shape[-2:])) if i > 0 else int(np.prod(v.shape))
            for i, v in enumerate(variables))))
        trainer = self.trainer

        def reward(arc, x, y):
            return REWARD_CONSTANT / tf.exp(trainer.reward_nll(x, y, arc))

        # The random policy learns nothing: no REINFORCE, no baseline.
        self.reinforce = (None if cfg.search_policy == "random" else
                          SyncReplicasReinforce(self.controller, reward,
                                                cfg.reinforce))
        self._stream()
        self.valid_position = tf.Variable(0, dtype=tf.int64, trainable=False,
                                          name="valid_position")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name="search_epoch")
        print("-" * 80)
        print("HParams:\n{0}".format(json.dumps(self.hparams(), indent=2,
                                                sort_keys=True)))
        return (self.child, trainer, EnasLmControllerPhase(self, reward),
                dict(start_idx=self.start_idx,
                     valid_position=self.valid_position,
                     search_epoch=self.epoch))

    def trainer_for(self, child, arc_fn, strategy=None):
        """The search trainer (the arc is given to each step; `arc_fn` is
        not used)."""
        return EnasLmSearchTrainer(child, self.cfg.train,
                                   jit_compile=self.cfg.jit_compile == "true")

    def start_from_reference(self, path, trainer, phase):
        self._started_from(path, import_enas_lm_checkpoint(
            path, self.child, trainer, controller=self.controller,
            reinforce=self.reinforce))

    def start_epoch(self, step, saved_epoch):
        return int(self.epoch.numpy())

    def arc_scorer(self):
        """The validation perplexity of an arc with the built child's
        weights (`WindowPerplexity`: the search study's score)."""
        return WindowPerplexity(self.trainer, self.valid_windows)

    def train_step(self, batch):
        """One child step on an arc the controller samples."""
        arc = self.controller.sample()["arc"]
        out = self.trainer.train_step(*batch, arc)
        out = {k: v.numpy() for k, v in out.items()}
        out["arc"] = arc.numpy()
        return out

    def train_log(self, out, epoch, step, minutes):
        line = search_line(int(self.epoch.numpy()), step, self._ppl(),
                           float(out["lr"]), float(out["l2_reg_loss"]),
                           float(out["grad_norm"]), minutes)
        return line, {"child/loss": out["loss"], "child/lr": out["lr"],
                      "child/grad_norm": out["grad_norm"]}

    def epoch_after(self, epoch, step):
        following = super().epoch_after(epoch, step)
        self.epoch.assign(following)
        return following

    def evaluate(self, step, summaries):
        summaries.scalars(step, {"child/valid_ppl": self.evaluate_valid()})

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


class WindowPerplexity:
    """`scorer(arc)`: the perplexity of a search child with the arc (a list
    of ints) over every validation window, each from a zero state, as the
    run's `valid_ppl` but with one arc for every window (the trainer's
    `reward_nll`, one trace for every arc); `traces()` counts its traces.
    `what` names the split."""

    def __init__(self, trainer, windows):
        self.trainer = trainer
        self.windows = windows
        self.what = "{} validation windows".format(len(windows))

    def __call__(self, arc):
        arc = tf.constant(arc, tf.int32)
        total = sum(float(self.trainer.reward_nll(x, y, arc))
                    for x, y in self.windows)
        return float(np.exp(total / len(self.windows)))

    def traces(self):
        return self.trainer.reward_nll.experimental_get_tracing_count()


class EnasLmControllerPhase:
    """The controller phase of an enas_lm search for `src.run_loop`:
    enas_lm's `controller.train` after each pass (the session's
    `train_controller`), with the NaN policy on its last call; enas_lm
    prints no architectures. `controller`, `reinforce` and `hooks` (the
    reward and its stream, the shared validation windows) as
    `src.search.ControllerPhase` has them, for `src.bench`; with
    --search_policy=random the controller is the uniform sampler and
    `reinforce` is None."""

    def __init__(self, session, reward):
        self.session = session
        self.controller = session.controller
        self.reinforce = session.reinforce

        def reward_batches(epoch):
            while True:
                yield session.next_valid_window()

        self.hooks = PhaseHooks(
            reward=reward, reward_batches=reward_batches,
            line=lambda out, step, minutes: controller_line(step, out),
            scalars=lambda out: {"controller/reward": out["reward"]})

    def checkpoint_objects(self):
        # With the random policy the sampler's generator is checkpointed
        # as the run's controller model (src.checkpoints).
        return {} if self.reinforce is None else \
            self.reinforce.checkpoint_objects()

    def train_controller(self, epoch, start_time, summaries, stop_on_nan):
        """False if the controller's last call hit a NaN (the random
        policy has no controller to train)."""
        if self.reinforce is None:
            return True
        last = self.session.train_controller()
        return not stop_on_nan({"reward": last["reward"],
                                "loss": last["loss"]},
                               "controller", last["arc"])

    def print_architectures(self, epoch):
        pass


SPACE = EnasLmSpace()
