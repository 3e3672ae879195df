"""The protocol of a search space, and the run configuration every space
shares.

A search space is one package (`src/macro`, `src/micro`, `src/ptb`) whose
`space` module holds `SPACE`, an object with the attributes and methods of
`SearchSpace` below; `src.registry` maps names to them. The run loop
(`src.run_loop`), the controller phase (`src.search`), and the tools
(`src.arc`, `src.logs`, `src.export`, `src.bench`) take everything they
need from it. BUILD.md, Architecture, has the checklist for a new space.
"""

import contextlib
import dataclasses

from src.random_policy import RandomPolicyConfig, UniformSampler
from src.reference_checkpoint import (import_reference_checkpoint,
                                      start_run_from)


@dataclasses.dataclass(kw_only=True)
class RunConfig:
    """What every run needs, read from the flags once (a space's config
    subclasses it with its own fields)."""
    data_path: str
    output_dir: str
    reset_output_dir: bool = False
    batch_size: int
    num_epochs: int
    log_every: int
    eval_every_epochs: int
    seed: int
    download: bool = True
    child: object                  # the space's child config
    train: object                  # the child's TrainConfig
    # Search only (None / unused with a fixed arc).
    controller: object = None      # the space's controller config
    reinforce: object = None       # src.reinforce.ReinforceConfig
    controller_training: bool = False
    controller_train_every: int = 2
    controller_train_steps: int = 50
    controller_num_aggregate: int = 1
    # Port options every entry point takes (src.flag_defs).
    reference_checkpoint: str = None
    jit_compile: str = "auto"
    mixed_precision: bool = False
    deterministic: bool = False
    nan_policy: str = "stop"
    distribution_strategy: str = "default"
    num_cpu_devices: int = 0
    # "enas" (the controller, trained by REINFORCE) or "random" (uniform
    # arcs, src.random_policy; cfg.controller is a RandomPolicyConfig).
    search_policy: str = "enas"

    @property
    def searching(self):
        return self.child.fixed_arc is None


@dataclasses.dataclass
class ExportAveraging:
    """How averaged weights reach a child's export (`src.export`).

    objects: {checkpoint name: trackable} restored from a run checkpoint
      beside the child (the averages);
    active(): whether the export holds the averages (asked after the
      restore: a run may not have started averaging);
    weights(): the context in which the child holds them.
    The default: no averaging."""
    objects: dict = dataclasses.field(default_factory=dict)
    active: object = lambda: False
    weights: object = contextlib.nullcontext


class SearchSpace:
    """The protocol of a search space (subclass it, set the attributes,
    implement the methods).

    name: the registry key ("macro"); entry: the entry point that runs it
    ("cifar10"); search_for: its `--search_for` value; model_name: the
    reference's model scope, printed as "Build model <model_name>";
    arc_class: its arc class (`parse`, `to_list`, `__str__`, `describe`);
    fixed_child, search_child: its two child classes (Keras layers built
    from a child config; they share the op layers), the network of one
    architecture and the network of every architecture, whose `call` takes
    the arc. Both have `searching` (False, True), the class attribute the
    trainers read.
    """
    name = None
    entry = None
    search_for = None
    model_name = None
    arc_class = None
    fixed_child = None
    search_child = None

    def config_from_flags(self, flag_values):
        """The run's config (a RunConfig) from the parsed flags; UserError
        naming the flag for bad values."""
        raise NotImplementedError

    def parse_arc(self, values, child_cfg):
        """An arc (of `arc_class`) from integers, checked against the
        child's configuration."""
        raise NotImplementedError

    def build_child(self, child_cfg):
        """The child network of a child config: `fixed_child` when it
        holds a fixed arc, else `search_child`."""
        if child_cfg.fixed_arc is None:
            return self.search_child(child_cfg)
        return self.fixed_child(child_cfg)

    def build_controller(self, controller_cfg):
        """The controller of a controller config: the uniform sampler for a
        `--search_policy=random` config (src.random_policy), else the
        space's LSTM controller."""
        if isinstance(controller_cfg, RandomPolicyConfig):
            return UniformSampler(controller_cfg)
        return self.build_lstm_controller(controller_cfg)

    def build_lstm_controller(self, controller_cfg):
        """The space's LSTM controller of a controller config."""
        raise NotImplementedError

    def build_variables(self, child):
        """Creates the child's variables (a forward pass if needed)."""
        raise NotImplementedError

    def prepare_export(self, cfg, source, reference, log):
        """Adjusts `cfg` before the child is built for export from the
        checkpoint `source` (`reference`: a TF1 checkpoint of the
        reference's)."""
        raise NotImplementedError

    def export_averaging(self, cfg, child):
        """The `ExportAveraging` of a child restored from one of our run
        checkpoints (default: none)."""
        return ExportAveraging()

    def import_reference(self, cfg, source, child, controller):
        """Assigns `child` and/or `controller` (None: not exported) their
        values in the reference's TF1 checkpoint `source`; returns
        ({"global_step", "controller_step"}: ints or None, the
        `ExportAveraging`). Default: `import_reference_checkpoint`."""
        result = import_reference_checkpoint(source, child=child,
                                             controller=controller)
        return ({"global_step": result["global_step"],
                 "controller_step": result["train_step"]}, ExportAveraging())

    def serving_statistics(self, cfg, log):
        """(mean, std) the fixed child's serving signature bakes in, or
        (None, None)."""
        raise NotImplementedError

    def open_session(self, cfg, data=None):
        """Reads the data and returns the run's `Session` (below). data:
        the space's data already read (its data reader's type: src.bench's
        synthetic data), else read from `cfg.data_path`."""
        raise NotImplementedError

    def printout(self, arc, score):
        """The lines the reference prints for one of "Here are 10
        architectures" (the arc and its score)."""
        raise NotImplementedError

    def describe_sizes(self, child_cfg):
        """The child's sizes in words (`src.bench`'s descriptions)."""
        raise NotImplementedError

    def arc_record(self, arc):
        """The space's fields of the arc's `arcs.jsonl` record."""
        raise NotImplementedError


class Session:
    """One run of a space, made by `SearchSpace.open_session(cfg, data)`
    once the data is read; `src.run_loop.train` drives it. Subclass it: the
    methods below without a body here are the space's to write; the others
    have the defaults of a space whose epochs are `num_train_batches` steps
    (CIFAR-10, PTB).

    cfg: the run's config. num_train_batches: child steps per epoch.
    build(strategy) -> (child, trainer, phase, extra checkpoint objects):
      the models, built under the strategy's scope by the caller; phase is
      the controller phase when searching (`src.search.ControllerPhase`:
      `controller`, `checkpoint_objects()`, `train_controller(...)`,
      `print_architectures(epoch)`), else None.
    trainer_for(child, arc_fn, strategy=None) -> a trainer of `child` with
      the run's settings, its arcs from `arc_fn` (None: a fixed arc); what
      `build` uses, and `src.bench` for its gating floor.
    start_from_reference(path, trainer, phase): a new run's start from the
      reference's TF1 checkpoint (`--reference_checkpoint`).
    start_epoch(step, saved_epoch) -> the epoch a run at global step `step`
      is in (`saved_epoch`: its checkpoint's epoch counter, 0 when new).
    resumed_at(epoch, step): the run starts at this epoch and global step
      (after the checkpoint's restore; 0, 0 for a new run).
    epoch_batches(epoch, step): the batches of `epoch` still to train after
      global step `step` (a resumed run starts mid-epoch).
    train_step(batch) -> dict of numpy values (loss, lr, grad_norm, ...).
    observe(out): bookkeeping of every step before its log line.
    train_log(out, epoch, step, minutes) -> (log line, summary scalars).
    after_step(): what follows a step's log line.
    at_epoch_end(step): whether the step just taken ended its epoch (a stop
      request then waits for the epoch's evaluation and checkpoint).
    epoch_after(epoch, step) -> the epoch that follows `epoch`'s batches,
      which ended at global step `step`; `epoch` itself when they ended
      before the epoch did (the run's step budget ran out).
    finished(epoch, step): whether the run has trained all it should.
    before_eval(): what precedes an evaluation (and the controller phase).
    evaluate(step, summaries): the evaluation printout of an epoch.
    end_epoch(epoch): what follows an epoch, before its checkpoint.
    finish(step, summaries): what follows the last epoch.
    announce_build(model_name), announce_start(), announce_eval(epoch): the
      reference's banner lines before the build, before the first step and
      before an evaluation.
    """
    cfg = None
    num_train_batches = None

    def build(self, strategy):
        raise NotImplementedError

    def trainer_for(self, child, arc_fn, strategy=None):
        raise NotImplementedError

    def start_from_reference(self, path, trainer, phase):
        start_run_from(path, trainer, phase)

    def start_epoch(self, step, saved_epoch):
        return step // self.num_train_batches

    def resumed_at(self, epoch, step):
        pass

    def epoch_batches(self, epoch, step):
        raise NotImplementedError

    def train_step(self, batch):
        raise NotImplementedError

    def observe(self, out):
        pass

    def train_log(self, out, epoch, step, minutes):
        raise NotImplementedError

    def after_step(self):
        pass

    def at_epoch_end(self, step):
        return step % self.num_train_batches == 0

    def epoch_after(self, epoch, step):
        return step // self.num_train_batches

    def finished(self, epoch, step):
        return epoch >= self.cfg.num_epochs

    def before_eval(self):
        pass

    def evaluate(self, step, summaries):
        raise NotImplementedError

    def end_epoch(self, epoch):
        pass

    def finish(self, step, summaries):
        pass

    def announce_build(self, model_name):
        print("-" * 80)
        print("Build model {}".format(model_name))

    def announce_start(self):
        print("-" * 80)
        print("Starting session")

    def announce_eval(self, epoch):
        print("Epoch {}: Eval".format(epoch))
