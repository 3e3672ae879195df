"""The Penn Treebank search space's `SPACE`: its config from the PTB entry
point's flags, and the `Session` of a PTB run (the reference's lines,
training-state resets, validation perplexity, the test perplexity when
validation improves and at the end).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from src import precision, run_loop, schedules
from src.errors import UserError
from src.export import ptb_vocab_size
from src.flag_defs import port_options
from src.ptb import arcs
from src.ptb import data as ptb_data
from src.ptb.log_lines import controller_line, print_evaluation, train_line
from src.ptb.ptb_child import FixedPtbChild, PtbChildConfig, SearchPtbChild
from src.ptb.ptb_controller import PtbController, PtbControllerConfig
from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer
from src.random_policy import RandomPolicyConfig, uniform
from src.reinforce import ReinforceConfig
from src.search import ControllerPhase, PhaseHooks
from src.space import ExportAveraging, RunConfig, SearchSpace, Session

# The reference tests the model whenever the validation perplexity beats
# this (and once at the end).
BEST_VALID_PPL_START = 67.00


@dataclasses.dataclass(kw_only=True)
class PtbRunConfig(RunConfig):
    """A PTB run's config."""
    train_on_valid: bool = False
    bptt_steps: int
    reset_train_states: float = None
    lr_dec_start_epochs: int
    lr_dec_every_epochs: int
    space = "ptb"


class PtbSpace(SearchSpace):
    name = "ptb"
    entry = "ptb"
    search_for = "enas"
    model_name = "ptb_enas_model"
    arc_class = arcs.PtbArc
    fixed_child = FixedPtbChild
    search_child = SearchPtbChild

    def config_from_flags(self, f):
        return config_from_flags(f)

    def build_lstm_controller(self, controller_cfg):
        return PtbController(controller_cfg)

    def random_policy(self, controller_cfg):
        """The uniform policy of --search_policy=random: node 0's
        activation, then each node i's previous node uniform over 0 .. i - 1
        and its activation uniform over the --controller_num_funcs
        functions."""
        return random_policy_config(controller_cfg)

    def build_variables(self, child):
        pass  # the PTB child creates its weights when constructed

    def prepare_export(self, cfg, source, reference, log):
        # The vocabulary (the embedding's rows) comes from the checkpoint.
        vocab = ptb_vocab_size(source, reference)
        if vocab is None:
            raise UserError(
                "the checkpoint {} holds no PTB child "
                "(ptb_enas_model/embedding/w): use --export_what="
                "controller for a controller-only checkpoint".format(source))
        cfg.child.vocab_size = int(vocab)
        cfg.child.validate()

    def export_averaging(self, cfg, child):
        """With --child_optim_moving_average the averaged weights are what
        the reference saves: the trainer's shadows, held in the child's
        variables while exporting."""
        if cfg.train.moving_average is None:
            return ExportAveraging()
        trainer = PtbTrainer(child, cfg.train, arc_fn=lambda: None)
        return ExportAveraging(
            objects={"moving_average":
                     trainer.checkpoint_objects()["moving_average"]},
            active=lambda: True, weights=trainer.averaged_weights)

    def serving_statistics(self, cfg, log):
        return None, None

    def open_session(self, cfg, data=None):
        return PtbSession(self, cfg, data=data)

    def parse_arc(self, values, child_cfg):
        return arcs.PtbArc.parse(values, child_cfg.rhn_depth)

    def describe_sizes(self, child_cfg):
        c = child_cfg
        return "hidden {}, bptt {}, depth {}".format(
            c.hidden_size, c.bptt_steps, c.rhn_depth)

    def printout(self, arc, score):
        return ["{} rw={:<.3f}".format(np.array(arc.to_list()), score)]

    def arc_record(self, arc):
        return {"cell": arc.describe()}


def config_from_flags(f):
    """Validates the PTB flags and turns them into a PtbRunConfig."""
    if f.search_for is None:
        raise UserError("--search_for is required: pass --search_for=enas")
    if f.search_for != "enas":
        raise UserError("--search_for={!r} is unknown: the PTB search space "
                        "is enas (the reference's rhn and base were never "
                        "implemented)".format(f.search_for))
    if f.child_fixed_arc is not None and f.controller_training:
        raise UserError("--child_fixed_arc is given, so the controller cannot "
                        "be trained: add --nocontroller_training")
    minimums = {"batch_size": 1, "num_epochs": 1, "log_every": 1,
                "eval_every_epochs": 1, "child_bptt_steps": 1,
                "child_lstm_hidden_size": 1, "child_num_layers": 1,
                "child_rhn_depth": 1, "child_lr_dec_every": 1,
                "controller_train_every": 1, "controller_num_aggregate": 1}
    for name, least in minimums.items():
        if getattr(f, name) < least:
            raise UserError("--{} must be at least {}, got {}".format(
                name, least, getattr(f, name)))
    if f.child_lstm_hidden_size % f.child_block_size != 0:
        raise UserError("--child_block_size={} has to divide "
                        "--child_lstm_hidden_size={}".format(
                            f.child_block_size, f.child_lstm_hidden_size))
    if f.child_optim_algo != "sgd":
        print("note: --child_optim_algo={} is ignored: the reference's PTB "
              "child always trains with sgd".format(f.child_optim_algo))
    if f.child_sync_replicas:
        raise UserError("--child_sync_replicas is not supported for the PTB "
                        "child (the reference crashes on it: "
                        "FLAGS.num_aggregate is undefined); drop the flag")

    searching = f.child_fixed_arc is None
    fixed_arc = None
    if not searching:
        fixed_arc = arcs.PtbArc.parse(f.child_fixed_arc, f.child_rhn_depth)
    child = PtbChildConfig(
        vocab_size=None, hidden_size=f.child_lstm_hidden_size,
        num_layers=f.child_num_layers, rhn_depth=f.child_rhn_depth,
        fixed_arc=fixed_arc, batch_size=f.batch_size,
        bptt_steps=f.child_bptt_steps, e_keep=f.child_lstm_e_keep,
        x_keep=f.child_lstm_x_keep, h_keep=f.child_lstm_h_keep,
        o_keep=f.child_lstm_o_keep, l_skip=f.child_lstm_l_skip, seed=f.seed)
    lr = schedules.LrConfig(
        lr_init=f.child_lr, lr_dec_rate=f.child_lr_dec_rate,
        lr_dec_min=f.child_lr_dec_min, lr_warmup_val=f.child_lr_warmup_val,
        lr_warmup_steps=f.child_lr_warmup_steps)
    train = PtbTrainConfig(
        l2_reg=f.child_l2_reg or 0.0, grad_bound=f.child_grad_bound, lr=lr,
        rnn_l2_reg=f.child_rnn_l2_reg,
        rnn_slowness_reg=f.child_rnn_slowness_reg,
        moving_average=f.child_optim_moving_average)

    controller = reinforce = None
    if searching:
        controller = PtbControllerConfig(
            rhn_depth=f.child_rhn_depth, num_funcs=f.controller_num_funcs,
            lstm_size=100, lstm_num_layers=1,
            tanh_constant=f.controller_tanh_constant,
            temperature=f.controller_temperature, seed=f.seed)
        controller.validate()
        if f.search_policy == "random":
            controller = random_policy_config(controller)
        reinforce = ReinforceConfig(
            lr=f.controller_lr, l2_reg=f.controller_l2_reg,
            bl_dec=f.controller_bl_dec,
            entropy_weight=f.controller_entropy_weight,
            sync_replicas=f.controller_sync_replicas,
            num_aggregate=f.controller_num_aggregate)
    return PtbRunConfig(
        data_path=f.data_path, output_dir=f.output_dir,
        reset_output_dir=f.reset_output_dir,
        train_on_valid=f.train_on_valid,
        batch_size=f.batch_size, bptt_steps=f.child_bptt_steps,
        num_epochs=f.num_epochs, log_every=f.log_every,
        eval_every_epochs=f.eval_every_epochs, seed=f.seed,
        download=f.download, reset_train_states=f.child_reset_train_states,
        child=child, train=train, lr_dec_start_epochs=f.child_lr_dec_start,
        lr_dec_every_epochs=f.child_lr_dec_every, controller=controller,
        reinforce=reinforce,
        controller_training=bool(f.controller_training and searching),
        controller_train_every=f.controller_train_every,
        controller_train_steps=f.controller_train_steps,
        controller_num_aggregate=f.controller_num_aggregate,
        **port_options(f))


def random_policy_config(controller_cfg):
    """PtbSpace.random_policy."""
    cfg = controller_cfg
    choices = [uniform(cfg.num_funcs)]
    for node in range(1, cfg.rhn_depth):
        choices += [uniform(node), uniform(cfg.num_funcs)]
    return RandomPolicyConfig(tuple(choices), seed=cfg.seed)


def phase_hooks(cfg, trainer, valid_rows):
    """The PTB part of the controller phase (src.search.PhaseHooks): 80 /
    perplexity of the child on a random window of `valid_rows` (the
    reference's valid_rl graph)."""

    def reward(arc, x, y):
        # valid_ppl = exp(mean token NLL); the reference's 80 / valid_ppl.
        return 80.0 / tf.exp(trainer.reward_nll(x, y, arc))

    def reward_batches(epoch):
        # Random validation windows from a numpy stream seeded by
        # (seed, epoch).
        rng = np.random.default_rng([cfg.seed, epoch])
        while True:
            x, y = ptb_data.random_window(valid_rows,
                                          cfg.bptt_steps, rng)
            yield tf.constant(x, tf.int32), tf.constant(y, tf.int32)

    def line(out, step, minutes):
        return controller_line(
            step, out["loss"], out["entropy"], out["lr"],
            out["grad_norm"], out["reward"], out["baseline"], minutes)

    def scalars(out):
        return {"controller/loss": out["loss"],
                "controller/entropy": out["entropy"],
                "controller/reward": out["reward"],
                "controller/valid_ppl": 80.0 / out["valid_acc"],
                "controller/baseline": out["baseline"]}

    return PhaseHooks(reward, reward_batches, line, scalars,
                      printout_adds_bonus=True)


class PtbSession(Session):
    """A PTB run (src.space.Session): the corpus read and checked, the
    learning rate's step counts set from the windows per epoch.
    data: a PtbData already read (src.bench's synthetic corpus), else read
    from cfg.data_path."""

    def __init__(self, space, cfg, data=None):
        self.space = space
        self.cfg = cfg
        if data is None and cfg.train_on_valid:
            print("note: --train_on_valid: training on the valid text, "
                  "validating and testing on the test text")
            data = ptb_data.read_dev_data(cfg.data_path)
        elif data is None:
            data = ptb_data.read_data(cfg.data_path, download=cfg.download)
        ptb_data.print_sizes(data)
        ptb_data.check_stream(data.train, cfg.batch_size, cfg.bptt_steps,
                              "train")
        ptb_data.check_stream(data.valid, cfg.batch_size, cfg.bptt_steps,
                              "valid")
        ptb_data.check_stream(data.test, 1, 1, "test")
        self.data = data
        self.valid_rows = ptb_data.batch_rows(data.valid, cfg.batch_size)
        self.num_train_batches = ptb_data.num_windows(
            data.train, cfg.batch_size, cfg.bptt_steps)
        cfg.child.vocab_size = data.vocab_size
        cfg.child.validate()
        cfg.train.lr.lr_dec_start = (cfg.lr_dec_start_epochs
                                     * self.num_train_batches)
        cfg.train.lr.lr_dec_every = (cfg.lr_dec_every_epochs
                                     * self.num_train_batches)
        self.trainer = self.phase = None
        self.best_valid_ppl = None
        self._windows = self._reset_rng = None
        self._tr_ppl_sum, self._num_batches = 0.0, 0

    def trainer_for(self, child, arc_fn, strategy=None):
        """A PtbTrainer of `child` with the run's settings, its arcs from
        `arc_fn` (None: a fixed arc)."""
        cfg = self.cfg
        return PtbTrainer(
            child, cfg.train, arc_fn=arc_fn,
            jit_compile=precision.resolve_jit_compile(
                cfg.jit_compile, cfg.searching, "ptb"),
            mixed_precision=cfg.mixed_precision,
            # The reward pass compiles once for every arc; --jit_compile=
            # false turns XLA off there too.
            reward_jit_compile=cfg.jit_compile != "false",
            strategy=strategy)

    def arc_scorer(self):
        """The validation perplexity of an arc with the built child's
        weights (`ValidationPerplexity`: the search study's score)."""
        return ValidationPerplexity(self.trainer, self.data.valid,
                                    self.cfg.batch_size, self.cfg.bptt_steps)

    def build(self, strategy):
        cfg = self.cfg
        child = self.space.build_child(cfg.child)
        arc_fn = None
        if cfg.searching:
            # The phase needs the trainer's reward pass and the trainer the
            # controller's samples: the trainer's arc_fn is late-bound.
            def arc_fn():
                return self.phase.sample_arc()
        self.trainer = self.trainer_for(child, arc_fn, strategy)
        if cfg.searching:
            with precision.float32_policy():  # controllers stay float32
                self.phase = ControllerPhase(
                    self.space, cfg,
                    self.space.build_controller(cfg.controller),
                    phase_hooks(cfg, self.trainer, self.valid_rows))
        print("-" * 80)
        print("Model has {} parameters".format(
            run_loop.parameter_count(self.trainer.variables)))
        self.best_valid_ppl = tf.Variable(
            BEST_VALID_PPL_START, dtype=tf.float64, trainable=False,
            name="best_valid_ppl")
        return child, self.trainer, self.phase, {
            "best_valid_ppl": self.best_valid_ppl}

    def resumed_at(self, epoch, step):
        self._windows = ptb_data.WindowStream(
            self.data.train, self.cfg.batch_size, self.cfg.bptt_steps,
            position=step % self.num_train_batches)
        self._seed_resets(epoch)

    def _seed_resets(self, epoch):
        # The reference's random training-state resets (--child_reset_train_
        # states) draw from numpy; seeded by (seed, epoch) for resumption.
        self._reset_rng = np.random.default_rng([self.cfg.seed, epoch, 7])

    def epoch_batches(self, epoch, step):
        for _ in range((epoch + 1) * self.num_train_batches - step):
            yield self._windows.next()

    def train_step(self, batch):
        return {k: v.numpy() for k, v in
                self.trainer.train_step(*batch).items()}

    def observe(self, out):
        self._num_batches += 1
        self._tr_ppl_sum += out["loss"] / self.cfg.bptt_steps

    def train_log(self, out, epoch, step, minutes):
        line = train_line(epoch, step, out["loss"], out["lr"],
                          out["grad_norm"],
                          np.exp(self._tr_ppl_sum / self._num_batches),
                          minutes)
        return line, {"child/loss": out["loss"], "child/lr": out["lr"],
                      "child/grad_norm": out["grad_norm"],
                      "child/train_ppl": out["train_ppl"]}

    def after_step(self):
        if (self.cfg.reset_train_states is not None
                and self._reset_rng.uniform(0, 1)
                < self.cfg.reset_train_states):
            print("reset train states")
            self.trainer.reset_train_state()

    def before_eval(self):
        self.trainer.reset_train_state()

    def _evaluate(self, name, step, summaries, verbose):
        cfg, data = self.cfg, self.data
        if name == "valid":
            result = self.trainer.evaluate(data.valid, cfg.batch_size,
                                           cfg.bptt_steps)
        elif self.phase:
            # One arc per as many words as a validation window holds (the
            # reference samples one per word here).
            result = self.trainer.evaluate(
                data.test, 1, 1, arc_window=cfg.batch_size * cfg.bptt_steps)
        else:
            result = self.trainer.evaluate(data.test, 1, 1)
        print_evaluation(name, step, result, verbose)
        summaries.scalars(step, {"{}_ppl".format(name): result["ppl"]})
        return result["ppl"]

    def evaluate(self, step, summaries):
        valid_ppl = self._evaluate("valid", step, summaries, verbose=False)
        if valid_ppl < float(self.best_valid_ppl.numpy()):
            self.best_valid_ppl.assign(valid_ppl)
            self._evaluate("test", step, summaries, verbose=True)
        self._tr_ppl_sum, self._num_batches = 0.0, 0
        print("-" * 80)

    def end_epoch(self, epoch):
        self._seed_resets(epoch)

    def finish(self, step, summaries):
        self._evaluate("test", step, summaries, verbose=True)


SPACE = PtbSpace()


class ValidationPerplexity:
    """`scorer(arc)`: the perplexity of a search child with the arc (a
    list of ints) on the whole validation stream, the run's `valid_ppl`
    pass with one arc for every window (`PtbTrainer.evaluate`: its
    `eval_window`, one trace for every arc; the averaged weights when the
    run keeps them); `traces()` counts its traces. `what` names the
    split."""

    def __init__(self, trainer, stream, batch_size, bptt_steps):
        self.trainer = trainer
        self.stream = stream
        self.batch_size, self.bptt_steps = batch_size, bptt_steps
        self.what = "{} validation words".format(np.size(stream))

    def __call__(self, arc):
        result = self.trainer.evaluate(
            self.stream, self.batch_size, self.bptt_steps,
            arc=tf.constant(arc, tf.int32))
        return float(result["ppl"])

    def traces(self):
        return self.trainer.eval_window.experimental_get_tracing_count()
