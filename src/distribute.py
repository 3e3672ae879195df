"""Training on several devices with tf.distribute (`--distribution_strategy`).

The scheme, for every strategy:
- A step's global batch enters the traced step whole; each replica takes its
  rows (`replica_rows`: replica r of R gets rows [r n / R, (r + 1) n / R)),
  so the data order, the augmentation and a resumed run's position are those
  of a single-device run.
- Searching, the arc is sampled once per step in the cross-replica context
  and handed to every replica: all replicas run the same architecture.
- Batch norm in training mode normalises with the moments of the whole
  global batch (`fused_batch_norm`: an all-reduce of per-channel sums), so a
  step computes what one device computes on the same global batch, up to
  the order of floating-point sums.
- Each replica differentiates its share of the global mean loss (its summed
  loss over the global batch size, plus 1 / R of the L2 term); the gradients
  are summed across replicas, then the global norm, clipping and the update
  run once, in the cross-replica context.
- Evaluation, the controller's reward and the controller's training run in
  the cross-replica context (on the chief), on whole batches.

`default` is TensorFlow's default strategy: no `strategy.run`, the
single-device code path exactly.
"""

import atexit
import json
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from src.errors import RunStopped, UserError

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
# Task types MultiWorkerMirroredStrategy runs (the chief is optional: without
# one, worker 0 is the chief).
TASK_TYPES = ("chief", "worker")

def cluster_task(environ=None):
    """(task type, index, number of workers) of this process read from the
    `TF_CONFIG` environment variable; None without one. A malformed value is
    a UserError naming what is wrong."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as e:
        raise UserError("TF_CONFIG is not valid JSON ({}): set it to e.g. "
                        "{{\"cluster\": {{\"worker\": [\"host1:port\", "
                        "\"host2:port\"]}}, \"task\": {{\"type\": "
                        "\"worker\", \"index\": 0}}}}".format(e)) from None
    if not isinstance(config, dict):
        raise UserError("TF_CONFIG must be a JSON object with \"cluster\" "
                        "and \"task\", got {}".format(text.strip()[:80]))
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise UserError("TF_CONFIG has no \"cluster\" (task type -> list "
                        "of host:port): give every worker's address")
    if not isinstance(task, dict) or "type" not in task:
        raise UserError("TF_CONFIG has no \"task\" with a \"type\" and "
                        "an \"index\": say which of the cluster's tasks "
                        "this process is")
    for kind, hosts in cluster.items():
        if kind not in TASK_TYPES:
            raise UserError(
                "TF_CONFIG's cluster has a task type {!r} that "
                "--distribution_strategy=multi_worker_mirrored does not "
                "run: use {}".format(kind, " and ".join(TASK_TYPES)))
        if (not isinstance(hosts, list) or not hosts
                or not all(isinstance(h, str) for h in hosts)):
            raise UserError("TF_CONFIG's cluster {!r} must be a list of "
                            "\"host:port\" strings".format(kind))
    if len(cluster.get("chief", [])) > 1:
        raise UserError("TF_CONFIG's cluster has {} chiefs: give at most "
                        "one".format(len(cluster["chief"])))
    kind = task["type"]
    if kind not in cluster:
        raise UserError(
            "TF_CONFIG's task type {!r} is not in its cluster ({}): use "
            "one of them".format(kind, ", ".join(sorted(cluster))))
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise UserError("TF_CONFIG's task index must be an integer, got "
                        "{!r}".format(index))
    if not 0 <= index < len(cluster[kind]):
        raise UserError(
            "TF_CONFIG's task index {} is out of range: the cluster has {} "
            "{} task(s), numbered from 0".format(index, len(cluster[kind]),
                                                 kind))
    return kind, index, sum(len(h) for h in cluster.values())


# What a collective op raises in a multi-worker run when another worker is
# gone: the coordination service saw its heartbeats stop (Unavailable), a
# collective waited too long (DeadlineExceeded), or the op was aborted for
# it (Cancelled, Aborted).
LOST_WORKER_ERRORS = (tf.errors.UnavailableError,
                      tf.errors.DeadlineExceededError,
                      tf.errors.CancelledError, tf.errors.AbortedError)


def lost_worker(error, output_dir, environ=None):
    """The RunStopped that `error` (one of LOST_WORKER_ERRORS, raised in a
    multi-worker run) means: which worker was lost, with its address, and
    how to go on (start every worker again with the same command; the run
    resumes from the newest checkpoint of `output_dir`, named)."""
    environ = os.environ if environ is None else environ
    text = str(error)
    # The coordination service lists the tasks it stopped hearing from
    # after "unhealthy"; other errors name the peer a collective waited on.
    listed = text.split("unhealthy", 1)[-1]
    tasks = re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", listed)
    me = cluster_task(environ)
    lost = [(kind, int(i)) for kind, i in tasks
            if me is None or (kind, int(i)) != me[:2]]
    if lost:
        kind, index = lost[0]
        try:
            cluster = json.loads(environ["TF_CONFIG"])["cluster"]
            where = " at {}".format(cluster[kind][index])
        except (KeyError, IndexError, ValueError, TypeError):
            where = ""
        who = "{} {} of the cluster{}".format(kind, index, where)
    else:
        who = "a worker of the cluster"
    newest = tf.train.latest_checkpoint(shared_output_dir(output_dir))
    resume = ("it resumes from {}".format(newest) if newest else
              "no checkpoint was written yet, so it starts afresh")
    return RunStopped(
        "{} stopped answering (it crashed, was stopped, or its machine is "
        "unreachable), so this worker cannot go on: start every worker "
        "again with the same command; {}".format(who, resume))


def is_chief_task(task):
    """Whether `cluster_task()`'s result is the cluster's chief (the task
    "chief", or worker 0 of a cluster without one)."""
    if task is None:
        return True
    kind, index, _ = task
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and not _has_chief()


def _has_chief():
    try:
        return bool(json.loads(os.environ["TF_CONFIG"])["cluster"]
                    .get("chief"))
    except (KeyError, ValueError, TypeError, AttributeError):
        return False


# A non-chief worker's writing folder -> the run's --output_dir (shared).
_SHARED_DIRS = {}


def worker_output_dir(output_dir, task):
    """The folder a worker writes to: `output_dir` on the chief; on another
    worker a temporary folder of its own (removed when the process ends),
    as TensorFlow's multi-worker tutorials do, so that only the chief writes
    the run's folder. Checkpoints are still read from `output_dir`
    (`shared_output_dir`)."""
    if is_chief_task(task):
        return output_dir
    path = tempfile.mkdtemp(prefix="enas_worker{}_".format(task[1]))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    _SHARED_DIRS[path] = output_dir
    return path


def forget_shared_dir(output_dir):
    """A worker's folder no longer reads the run's checkpoints (the chief
    is removing them: --reset_output_dir)."""
    _SHARED_DIRS.pop(output_dir, None)


def shared_output_dir(output_dir):
    """The run's folder that `output_dir` (a worker's writing folder) reads
    its checkpoints from: itself except on a non-chief worker."""
    return _SHARED_DIRS.get(output_dir, output_dir)


def split_cpu(num_devices):
    """Splits the host CPU into `num_devices` logical devices (0: leave it
    alone), so `mirrored` can run several replicas without GPUs (for tests;
    it does not add compute). Must run before TensorFlow initialises its
    devices."""
    if not num_devices:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    config = [tf.config.LogicalDeviceConfiguration()] * int(num_devices)
    try:
        tf.config.set_logical_device_configuration(cpu, config)
    except RuntimeError:
        current = tf.config.get_logical_device_configuration(cpu) or [None]
        if len(current) != int(num_devices):
            raise UserError(
                "--num_cpu_devices={}: TensorFlow's devices are already set "
                "up with {}; set it before anything runs".format(
                    num_devices, len(current)))


def make_strategy(name):
    """The tf.distribute strategy named by `--distribution_strategy`.

    mirrored: every local GPU, or every logical CPU device when there is no
    GPU (one unless `split_cpu` made more). multi_worker_mirrored: the
    workers of the TF_CONFIG environment variable (one worker without it).
    """
    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        # No collective timeout: TensorFlow starts a thread per collective
        # op that waits out its timeout, so with one a step's hundreds of
        # all-reduces exhausted the process's threads within a minute (and
        # aborted it). A lost worker is found without one: its peers' ops
        # fail when its connection drops, and the coordination service
        # stops a cluster whose task misses its heartbeats.
        return _process_multi_worker_strategy()
    raise UserError("--distribution_strategy={!r} is unknown: use one of "
                    "{}".format(name, ", ".join(STRATEGIES)))


# (TF_CONFIG, the MultiWorkerMirroredStrategy made for it) once this process
# has joined a cluster.
_JOINED = None


def _process_multi_worker_strategy():
    """The one MultiWorkerMirroredStrategy of this process, made on the first
    call. Runs one after the other in one process (a Python caller's
    `run_loop.train` calls, the tests') share it: a second strategy enables collective ops again, which
    resets this worker's collective executor while a peer may still be
    talking to it (a peer's pending receive then fails with "Delete called
    on non-empty BufRendezvous"), and restarts the collective instance keys,
    so a worker already in its next run meets its peer's ops of the last
    one ("expected ... data_type 9 but got ... data_type 1")."""
    global _JOINED
    config = os.environ.get("TF_CONFIG", "")
    if _JOINED is None:
        _JOINED = (config, tf.distribute.MultiWorkerMirroredStrategy())
    elif _JOINED[0] != config:
        raise UserError(
            "this process already joined the cluster of another TF_CONFIG; "
            "TensorFlow joins one cluster per process: run each cluster's "
            "work in a process of its own")
    return _JOINED[1]


def several_replicas():
    """Whether a strategy with more than one replica is in scope (variables
    created now are distributed)."""
    return (tf.distribute.has_strategy()
            and tf.distribute.get_strategy().num_replicas_in_sync > 1)


def inside_control_flow():
    """Whether ops are being added inside a tf.cond / tf.switch_case branch
    or a while loop (of the graph being built or one it is nested in).

    TensorFlow has no public API for this: the branch and loop-body graphs'
    classes are internal (tensorflow.python.ops.control_flow_util_v2)."""
    from tensorflow.python.ops import control_flow_util_v2 as cf
    kinds = (cf.CondBranchFuncGraph, cf.WhileBodyFuncGraph,
             cf.WhileCondFuncGraph)
    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        if isinstance(graph, kinds):
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


def moving_weight(layer, name, shape, initializer):
    """A non-trainable float32 weight of `layer` that training updates in
    place (moving statistics and their debiasing state).

    Under a strategy with several replicas it is a sync-on-read variable:
    each replica updates its own copy with no synchronisation point (which
    tf.distribute does not allow inside the switch_case of a search child,
    and which would fail when the replicas' values differ), and a read
    outside a step sees the replicas' mean. Otherwise exactly
    `layer.add_weight`."""
    if not several_replicas():
        return layer.add_weight(name=name, shape=shape,
                                initializer=initializer, trainable=False,
                                autocast=False)
    with keras.name_scope(layer.name, caller=layer):
        variable = keras.Variable(
            initializer=initializer, shape=shape, dtype="float32",
            trainable=False, autocast=False, name=name,
            synchronization="on_read", aggregation="mean")
    # Keras' add_weight takes no `synchronization`; track the variable as
    # it does (a private method: no public one registers a variable).
    layer._track_variable(variable)
    return variable


def moments(x, axes):
    """`tf.nn.moments(x, axes)` (mean, biased variance); inside a
    multi-replica step, of the whole global batch (`axes` must include the
    batch axis 0)."""
    if _synced_context() is None:
        return tf.nn.moments(x, axes)
    mean, variance, _ = _global_moments(x, axes)
    return tf.squeeze(mean, axes), tf.squeeze(variance, axes)


def _global_moments(x, axes):
    """(mean, biased variance, count) of x over `axes` across the replicas
    of a step, the first two with `axes` kept. Two passes (the mean, then
    the squared deviations from it), as precise as the fused kernel's."""
    count = global_sum(tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)),
                               x.dtype))
    mean = global_sum(tf.reduce_sum(x, axis=axes, keepdims=True)) / count
    variance = global_sum(tf.reduce_sum(tf.square(x - mean), axis=axes,
                                        keepdims=True)) / count
    return mean, variance, count


def _synced_context():
    """The replica context when several replicas compute one step and can
    synchronise here, else None (the default strategy, one replica, the
    cross-replica context, or inside control flow: tf.distribute cannot
    all-reduce inside a tf.switch_case branch, so a candidate op of a
    search child works on its replica's rows alone)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    if inside_control_flow():
        return None
    return ctx


def replica_rows(x):
    """This replica's rows of a global batch `x` ([n, ...]); all of `x`
    outside a multi-replica step."""
    ctx = _synced_context()
    if ctx is None:
        return x
    r = ctx.replica_id_in_sync_group
    count = ctx.num_replicas_in_sync
    n = tf.shape(x)[0]
    return x[r * n // count:(r + 1) * n // count]


def global_sum(value):
    """`value` summed over the replicas of a step (itself outside one)."""
    ctx = _synced_context()
    if ctx is None:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def num_replicas():
    """Replicas computing the current step (1 outside one)."""
    ctx = _synced_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def fused_batch_norm(x, scale, offset, epsilon, data_format):
    """Training-mode batch norm: (y, mean, variance) as
    `tf.compat.v1.nn.fused_batch_norm(..., is_training=True)` returns them
    (variance Bessel-corrected), over the whole global batch.

    Inside a multi-replica step the per-channel moments are the global
    batch's (`_global_moments`) and the input is normalised with them;
    elsewhere this is TF's fused kernel, unchanged. x: float32
    [N, H, W, C] (NHWC) or [N, C, H, W] (NCHW).
    """
    if _synced_context() is None:
        return tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=epsilon, data_format=data_format,
            is_training=True)
    axes = [0, 1, 2] if data_format == "NHWC" else [0, 2, 3]
    mean, variance, count = _global_moments(x, axes)

    def per_channel(v):
        return v if data_format == "NHWC" else tf.reshape(v, [1, -1, 1, 1])

    y = ((x - mean) * (tf.math.rsqrt(variance + epsilon) * per_channel(scale))
         + per_channel(offset))
    mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
    return y, mean, variance * count / tf.maximum(count - 1.0, 1.0)


def _global_rows_shape(shape):
    """`shape` (a 1-D int32 tensor) with its first entry, this replica's
    rows, replaced by the global batch's."""
    return tf.concat([tf.reshape(global_sum(shape[0]), [1]), shape[1:]], 0)


def dropout(x, rate, seed):
    """`keras.random.dropout(x, rate, seed=seed)`; inside a multi-replica
    step, this replica's rows of the mask a single device would draw for
    the whole global batch (replicas do not share a mask, and a mirrored
    run drops what a single-device run drops)."""
    if _synced_context() is None:
        return keras.random.dropout(x, rate, seed=seed)
    ones = tf.ones(_global_rows_shape(tf.shape(x)), x.dtype)
    return x * replica_rows(keras.random.dropout(ones, rate, seed=seed))


def uniform_rows(shape, seed):
    """`keras.random.uniform(shape, dtype="float32", seed=seed)` whose first
    dimension is the batch's rows; inside a multi-replica step, this
    replica's rows of the draw for the whole global batch."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    if _synced_context() is None:
        return keras.random.uniform(shape, dtype="float32", seed=seed)
    return replica_rows(keras.random.uniform(_global_rows_shape(shape),
                                             dtype="float32", seed=seed))


def summed_gradients(strategy, replica_fn, args):
    """Runs `replica_fn(*args)` on every replica of `strategy` (inside a
    tf.function, cross-replica context). replica_fn returns (gradients, a
    list with None for variables without one, *extras). Returns (the
    gradients summed over the replicas, None where replica_fn had None;
    the extras as per-replica values, for the caller to reduce or
    gather)."""
    missing = []  # indices of None gradients: static, the same per replica

    def run(*inner):
        grads, *extras = replica_fn(*inner)
        missing[:] = [i for i, g in enumerate(grads) if g is None]
        return ([g for g in grads if g is not None], *extras)

    # (`missing` reaches the replicas by closure: strategy.run would copy
    # a list passed as an argument.)
    grads, *extras = strategy.run(run, args=args)
    summed = iter(totals(strategy, grads))
    return ([None if i in missing else next(summed)
             for i in range(len(grads) + len(missing))], extras)


def totals(strategy, values):
    """Per-replica values (a list), each summed over the replicas, as
    `total` of each; under a multi-worker strategy the list travels as one
    collective (TensorFlow concatenates a batch into one all-reduce in a
    traced step), not one per value: a step of a few hundred gradients
    otherwise launches a few hundred all-reduces, each a round trip between
    the workers, and traces each."""
    if not values:
        return []
    # Where `strategy.reduce` puts a result (no public accessor): the
    # worker's own device under a multi-worker strategy, else the CPU.
    destination = (getattr(strategy.extended, "_default_device", None)
                   or "/device:CPU:0")
    reduced = strategy.extended.batch_reduce_to(
        tf.distribute.ReduceOp.SUM, [(v, destination) for v in values])
    return [strategy.experimental_local_results(r)[0] for r in reduced]


def total(strategy, value):
    """A per-replica value summed over the replicas."""
    return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
