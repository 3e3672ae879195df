"""The Penn Treebank child network (the reference's `PTBEnasChild`).

A word-level language model: embedding lookup, `num_layers` recurrent
layers whose cell is the arc's `rhn_depth`-node cell, and a softmax over the
vocabulary whose weights are the embedding's (tied, `logits`).

The cell, one time step of one layer (x the layer's input, s its previous
output):
- node 0: [x, s] @ w_prev -> (h, t); h = f_0(h), t = sigmoid(t);
  s_0 = s + t (h - s)  (a highway step from s);
- node i >= 1, reading node p = prev_i: p @ w_i -> (h, t);
  s_i = p + sigmoid(t) (f_i(h) - p);
- the output is the mean of the loose ends (the nodes no node reads); with
  `l_skip` the layer's input is added. It is the layer's next state and the
  next layer's input.
f is one of the function table `PTB_FUNC_TABLE` (tanh, relu, identity,
sigmoid: the names of `arcs.PTB_FUNCS`).

Two classes share all but the weights' layout, the arc and the batch
norms; the space's `build_child` picks one.

`FixedPtbChild` (`cfg.fixed_arc`, the reference's `_rhn_fixed`): w_prev is
[2H, 2H] and each node has its own `w` [H, 2H]; the arc is a Python value,
so the graph is built for it (plain activations, loose ends known).

`SearchPtbChild` (no fixed arc, `_rhn_enas`): shared weights for every
choice: w_prev [2 F H, 2H] holds one [2H, 2H] block per activation of node
0, and node i's `w` [F i H, 2H] one [H, 2H] block per (prev, func) pair,
rows [(prev F + func) H, +H). Every node's pre-activation (h, t) and the
cell's output go through a batch norm (`PtbBatchNorm`). The arc is an int32
tensor given at call time: the blocks are gathered by it, the activation is
a `tf.switch_case` (only the chosen one runs), the previous node one too
in training (`common_ops.pick`; a gather of the stacked nodes without a
gradient), the loose ends a mask from the arc. One
traced function serves every arc.

Variational dropout in training (masks floor(u + keep) / keep, fixed over
the window): the embedding of a word position (e_keep), where a word whose
earlier occurrence in the same row was dropped is dropped too; each layer's
input (x_keep) and previous state and node outputs as matmul inputs
(h_keep); the top layer's output (o_keep).

Variable paths are the reference's names: `ptb_enas_model/rnn/layer_0/
w_prev`, `ptb_enas_model/rnn/layer_0/layer_3/w`, `ptb_enas_model/embedding/
w`, `ptb_enas_model/starting_states/Variable` (layer 0's carried training
state [B, H]) and `Variable_1` (its test state [1, H]), `Variable_2`,
`Variable_3` for layer 1, ...; search mode also
`ptb_enas_model/layer_0/rhn_layer_4/batch_norm/offset` and
`ptb_enas_model/layer_0/batch_norm/...` (the output's).

Time: the layers run one after the other over the whole window (layer l
at step t needs only layer l - 1 at step t and itself at t - 1), each as a
tf.while_loop over the steps, so the window's length may vary between
calls; node 0's input share x @ w_prev[:H] is one matmul for all steps. In
search-mode training each batch norm's moments of every step are collected
and its moving statistics get the T sequential updates in closed form
after the loop.

Shapes are batch-major: tokens [N, T] int32, states [L, N, H] float32.

Mixed precision (`src.precision`): under the mixed_float16 policy the
recurrence computes in float16; the batch norms compute in float32 (input
cast up, variables never autocast, output cast back), the carried state
comes back as float32, and `logits` / `token_nll` are float32 (the tied
embedding read as float32).
"""

import dataclasses
import typing

import keras
import numpy as np
import tensorflow as tf

from src import distribute
from src.baked_arc import BakedArc
from src.child_base import Child
from src.common_ops import mean_softmax_nll, pick, tied_softmax_nll
from src.controller import WeightScope, seed_stream
from src.errors import UserError
from src.moving_average import ZeroDebiased, one_minus
from src.ptb.arcs import PTB_FUNCS, PtbArc, ptb_arc_length

__all__ = ["PtbChildConfig", "PtbChild", "FixedPtbChild", "SearchPtbChild",
           "PtbBatchNorm", "BakedArc", "PTB_FUNC_TABLE",
           "init_range", "variational_mask", "embedding_mask",
           "apply_activation", "count_params"]

# Windows of at most this many steps run as a Python-unrolled loop when
# their length is static; longer or dynamic ones as a tf.while_loop. Off by
# default: at hidden 64, bptt 35, batch 20, depth 12 the unrolled training
# step was slower (fixed 0.101 against 0.060 s, search 0.164 against 0.125
# s on 2 cores) and took 53 s instead of 4 s to trace in search mode.
DEFAULT_UNROLL_MAX_STEPS = 0


def init_range(hidden_size):
    """The reference's uniform initialiser range for a hidden size."""
    if hidden_size <= 300:
        return 0.1
    if hidden_size <= 400:
        return 0.05
    return 0.04


@dataclasses.dataclass
class PtbChildConfig:
    """Sizes and options of a PTB child (the reference's constructor
    arguments that shape the network). `fixed_arc=None` builds the search
    child (shared weights; the arc is given at call time)."""
    vocab_size: int = 10000
    hidden_size: int = 200
    num_layers: int = 1
    rhn_depth: int = 4
    num_funcs: int = len(PTB_FUNCS)
    fixed_arc: PtbArc = None
    batch_size: int = 25
    bptt_steps: int = 20
    e_keep: float = 1.0
    x_keep: float = 1.0
    h_keep: float = 1.0
    o_keep: float = 1.0
    l_skip: bool = False
    seed: int = None
    # Port option: windows up to this many (static) steps are unrolled in
    # Python; 0 always runs a tf.while_loop.
    unroll_max_steps: int = DEFAULT_UNROLL_MAX_STEPS

    def validate(self):
        for name, value in (("vocabulary size", self.vocab_size),
                            ("--child_lstm_hidden_size", self.hidden_size),
                            ("--child_num_layers", self.num_layers),
                            ("--child_rhn_depth", self.rhn_depth),
                            ("--batch_size", self.batch_size),
                            ("--child_bptt_steps", self.bptt_steps)):
            if value < 1:
                raise UserError("{} must be at least 1, got {}".format(
                    name, value))
        if not 1 <= self.num_funcs <= len(PTB_FUNCS):
            raise UserError("the child has 1 to {} activations ({}), got {}"
                            .format(len(PTB_FUNCS), ", ".join(PTB_FUNCS),
                                    self.num_funcs))
        for name in ("e_keep", "x_keep", "h_keep", "o_keep"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise UserError("--child_lstm_{}={} is not in (0, 1]".format(
                    name, value))
        arc = self.fixed_arc
        if arc is not None:
            if not isinstance(arc, PtbArc):
                raise UserError("the fixed arc must be a PtbArc (parse it "
                                "with PtbArc.parse)")
            if arc.rhn_depth != self.rhn_depth:
                raise UserError(
                    "the fixed arc has {} nodes but --child_rhn_depth={}: "
                    "check the arc or --child_rhn_depth".format(
                        arc.rhn_depth, self.rhn_depth))
            if max(arc.funcs) >= self.num_funcs:
                raise UserError("the fixed arc uses activation {} but the "
                                "child has {}".format(max(arc.funcs),
                                                      self.num_funcs))

    @property
    def arc_length(self):
        return ptb_arc_length(self.rhn_depth)


# ------------------------------------------------------------- pieces

@dataclasses.dataclass(frozen=True)
class PtbFunc:
    """One activation of the PTB search space: its name and the function
    that computes it (a tensor -> a tensor of the same shape)."""
    name: str
    fn: typing.Callable


# The PTB function table: an activation's index here is the integer the
# controller samples (and a fixed arc names), the branch of the search
# cell's tf.switch_case and the index of `arcs.PTB_FUNCS` (its name,
# printed for a user); `apply_activation` computes each from its entry.
PTB_FUNC_TABLE = (
    PtbFunc("tanh", tf.tanh),
    PtbFunc("relu", tf.nn.relu),
    PtbFunc("identity", tf.identity),
    PtbFunc("sigmoid", tf.sigmoid),
)
assert tuple(func.name for func in PTB_FUNC_TABLE) == PTB_FUNCS


def apply_activation(func, h):
    """Activation `func` of PTB_FUNC_TABLE on h; func a Python int or an
    int32 scalar tensor (then a `tf.switch_case`: only the chosen
    activation runs; an id out of range runs the last one)."""
    if isinstance(func, (int, np.integer)):
        return PTB_FUNC_TABLE[int(func)].fn(h)
    out = tf.switch_case(func, [(lambda f=entry.fn: f(h))
                                for entry in PTB_FUNC_TABLE])
    out.set_shape(h.shape)
    return out


def _block(w, index, rows):
    """Rows [index rows, (index + 1) rows) of w [k rows, C]; index a Python
    int or an int32 scalar tensor (then a gather from the [k, rows, C]
    view, which XLA compiles once for every index)."""
    if isinstance(index, (int, np.integer)):
        return w[int(index) * rows:(int(index) + 1) * rows]
    return tf.gather(tf.reshape(w, [-1, rows, w.shape[-1]]), index)


def variational_mask(shape, keep_prob, seed):
    """floor(u + keep) / keep, u uniform in [0, 1) (the reference's
    `_gen_mask`); seed: a keras SeedGenerator."""
    # Under tf.distribute: this replica's rows of the global batch's draw.
    u = distribute.uniform_rows(shape, seed)
    return tf.floor(u + keep_prob) / keep_prob


def embedding_mask(tokens, mask):
    """The reference's embedding-dropout rule: position t of a row is also
    dropped when the same word occurs earlier in that row at a position the
    ORIGINAL mask drops. tokens [N, T] int32, mask [N, T] -> [N, T]."""
    same = tf.equal(tokens[:, :, None], tokens[:, None, :])   # [N, j, t]
    dropped = tf.equal(mask, 0.0)[:, :, None]                  # by j
    steps = tf.range(tf.shape(tokens)[1])
    earlier = (steps[:, None] < steps[None, :])[None]          # j < t
    zero = tf.reduce_any(same & dropped & earlier, axis=1)     # [N, t]
    return tf.where(zero, tf.zeros_like(mask), mask)


class PtbBatchNorm(keras.layers.Layer):
    """The reference's PTB `batch_norm` (ptb_ops.py) over [N, C].

    Training: normalise with the batch mean and the UNcorrected batch
    variance (`tf.nn.moments` over the batch): scale (x - mean) /
    sqrt(epsilon + var) + offset, epsilon 1.0. The moving statistics are
    TF1's zero-debiased `assign_moving_average` (decay 0.999,
    `src.moving_average`) of that mean and variance: biased <- biased -
    (biased - value)(1 - decay),
    local_step += 1, moving = biased / (1 - decay ** local_step).
    Inference: the same formula with the moving statistics.

    In the reference every time step updates the statistics once; the
    child collects the steps' moments and calls `apply_updates`, which
    applies those T sequential updates in closed form.

    Weights: offset (zeros), scale (ones) trainable [C]; moving_mean
    (zeros), moving_variance (ones) [C]; `moving_mean_biased`,
    `moving_mean_local_step`, `moving_variance_biased`,
    `moving_variance_local_step` (TF1 names them `<scope>/<scope>/
    moving_mean/biased`, ...).
    """

    def __init__(self, num_channels, decay=0.999, epsilon=1.0,
                 name="batch_norm", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_channels = num_channels
        self.decay = decay
        self.epsilon = epsilon

    def build(self, input_shape=None):
        c = self.num_channels
        zeros, ones = keras.initializers.Zeros(), keras.initializers.Ones()
        # Never autocast: batch norm computes in float32.
        self.offset = self.add_weight(name="offset", shape=(c,),
                                      initializer=zeros, autocast=False)
        self.scale = self.add_weight(name="scale", shape=(c,),
                                     initializer=ones, autocast=False)
        self.moving_mean = distribute.moving_weight(self, "moving_mean",
                                                    (c,), zeros)
        self.moving_variance = distribute.moving_weight(
            self, "moving_variance", (c,), ones)
        self._debias = {
            stat: ZeroDebiased(self, getattr(self, stat), stat, (c,))
            for stat in ("moving_mean", "moving_variance")}
        self.built = True

    def normalize(self, x, training):
        """Training: (y, batch mean, batch variance); inference: y. Computed
        in float32; y has x's dtype, the moments are float32."""
        dtype = x.dtype
        x = tf.cast(x, tf.float32)
        if training:
            # The global batch's moments under tf.distribute (where it can
            # synchronise: not inside the search cell's control flow).
            mean, variance = distribute.moments(x, [0])
            y = (self.scale * (x - mean) / tf.sqrt(self.epsilon + variance)
                 + self.offset)
            return tf.cast(y, dtype), mean, variance
        return tf.cast(self.scale * (x - self.moving_mean)
                       / tf.sqrt(self.epsilon + self.moving_variance)
                       + self.offset, dtype)

    def update_once(self, mean, variance):
        """One `assign_moving_average` of each statistic (the reference's
        per-step update)."""
        c = one_minus(self.decay)
        self._debias["moving_mean"].update(mean, c)
        self._debias["moving_variance"].update(variance, c)

    def apply_updates(self, means, variances):
        """The T sequential updates of `update_once` for means, variances
        [T, C], in closed form (`ZeroDebiased.update_many`)."""
        c = one_minus(self.decay)
        self._debias["moving_mean"].update_many(means, c)
        self._debias["moving_variance"].update_many(variances, c)


class StartingStates(keras.layers.Layer):
    """The reference's carried states (`starting_states/Variable`,
    `Variable_1`, ...): per layer a training state [batch_size, H] and a
    test state [1, H], zeros, not trainable."""

    def __init__(self, num_layers, batch_size, hidden_size,
                 name="starting_states", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.hidden_size = hidden_size

    def build(self, input_shape=None):
        self.train_states, self.test_states = [], []
        for layer_id in range(self.num_layers):
            for rows, states in ((self.batch_size, self.train_states),
                                 (1, self.test_states)):
                k = 2 * layer_id + (0 if states is self.train_states else 1)
                states.append(self.add_weight(
                    name="Variable" if k == 0 else "Variable_{}".format(k),
                    shape=(rows, self.hidden_size),
                    initializer=keras.initializers.Zeros(), trainable=False))
        self.built = True


# ------------------------------------------------------------- the child

class PtbChild(Child):
    """What the two PTB children share: `child(tokens, state, arc=None,
    training=False)` -> (outputs [N, T, H], next_state [L, N, H]).

    tokens [N, T] int32; state [L, N, H] (each layer's previous output);
    arc: `SearchPtbChild`'s, an int32 tensor of `cfg.arc_length` values (or
    a BakedArc); `FixedPtbChild` ignores it. outputs: the top layer's output
    at every step (times the output dropout mask in training). In training
    the search child's batch norms update their moving statistics, once per
    step per node as the reference.
    T may differ between calls; windows of at most `cfg.unroll_max_steps`
    static steps are unrolled, others run in a tf.while_loop.

    Shared: the embedding, the carried states, the dropout masks, the
    recurrence over the window and the cell's highway steps. A subclass
    gives the weights' rows (`weight_rows`), the arc's plan (`_plan_arc`),
    the blocks of the weights a node uses (`_w_prev_block`,
    `_node_block`), and, for the search child, the batch norms
    (`batch_norm_scopes`, `_normalized`, `num_batch_norms`,
    `update_statistics`; the fixed child has none). `searching` says
    whether `call` reads the arc.
    """

    # What the export's signatures feed it (src.export).
    serving_inputs = "tokens"

    def __init__(self, cfg, name="ptb_enas_model", **kwargs):
        super().__init__(cfg, name=name, **kwargs)
        h, d = cfg.hidden_size, cfg.rhn_depth
        r = init_range(h)
        # rnn weights per layer (w_prev, layer_1..layer_{D-1}), embedding.
        seeds = seed_stream(cfg.seed, cfg.num_layers * d + 2)

        def init():
            return keras.initializers.RandomUniform(
                -r, r, seed=None if seeds is None else next(seeds))

        w_prev_rows, node_rows = self.weight_rows()
        layers = []
        for layer_id in range(cfg.num_layers):
            layers.append(WeightScope(
                "layer_{}".format(layer_id),
                weights=[("w_prev", (w_prev_rows, 2 * h), init())],
                children=[WeightScope("layer_{}".format(i),
                                      weights=[("w", (node_rows[i], 2 * h),
                                                init())])
                          for i in range(1, d)]))
        self.rnn = WeightScope("rnn", children=layers)
        self.embedding = WeightScope(
            "embedding", weights=[("w", (cfg.vocab_size, h), init())])
        self.starting_states = StartingStates(cfg.num_layers, cfg.batch_size,
                                              h)
        self.bn_layers = self.batch_norm_scopes()
        self.build()

    def weight_rows(self):
        """(rows of `w_prev`, rows of node i's `w` per node i; node 0's is
        unused)."""
        raise NotImplementedError

    def batch_norm_scopes(self):
        """The scopes of the batch norms (none: the fixed child)."""
        return []

    def build(self, input_shape=None):
        self.rnn.build()
        self.embedding.build()
        self.starting_states.build()
        for scope in self.bn_layers:
            scope.build()
        # Created in the layer's scope: `ptb_enas_model/dropout/...`.
        self.dropout_seed = keras.random.SeedGenerator(self.cfg.seed,
                                                       name="dropout")
        self.built = True

    # -- weights by role

    @property
    def w_emb(self):
        return self.embedding.w

    def w_prev(self, layer_id):
        return self.rnn.children[layer_id].w_prev

    def w_node(self, layer_id, node):
        """Node `node`'s (>= 1) weight `rnn/layer_{l}/layer_{node}/w`."""
        return self.rnn.children[layer_id].children[node - 1].w

    @property
    def train_states(self):
        """The carried training states, one [batch_size, H] per layer."""
        return self.starting_states.train_states

    @property
    def test_states(self):
        return self.starting_states.test_states

    def zero_state(self, batch_size):
        return tf.zeros([self.cfg.num_layers, batch_size,
                         self.cfg.hidden_size])

    def state_spec(self):
        """The carried state's TensorSpec (any batch)."""
        return tf.TensorSpec([self.cfg.num_layers, None,
                              self.cfg.hidden_size], tf.float32, name="state")

    # -- arcs

    def _plan_arc(self, arc):
        """(funcs, prevs, loose, baked): per node its activation and the node
        it reads, the loose-end mask; Python values when baked."""
        raise NotImplementedError

    def _layer_weights(self, layer_id, plan):
        """(w_x [H, 2H], w_s [H, 2H], node weights): node 0's input and
        state blocks and, per node i >= 1, its [H, 2H] block as the arc
        selects it. With a Python arc the node weights are grouped by the
        node they read: {p: (readers of p, their blocks side by side
        [H, 2H k])}, so each step runs one matmul per node read."""
        _, prevs, _, baked = plan
        h = self.cfg.hidden_size
        w_prev = self._w_prev_block(layer_id, plan)
        blocks = [self._node_block(layer_id, i, plan)
                  for i in range(1, self.cfg.rhn_depth)]
        if not baked:
            return w_prev[:h], w_prev[h:], blocks
        groups = {}
        for i in range(1, self.cfg.rhn_depth):
            groups.setdefault(prevs[i], []).append(i)
        grouped = {p: (readers, blocks[readers[0] - 1] if len(readers) == 1
                       else tf.concat([blocks[i - 1] for i in readers],
                                      axis=1))
                   for p, readers in groups.items()}
        return w_prev[:h], w_prev[h:], grouped

    def _w_prev_block(self, layer_id, plan):
        """The [2H, 2H] block of `w_prev` node 0 uses."""
        raise NotImplementedError

    def _node_block(self, layer_id, node, plan):
        """The [H, 2H] block of node `node`'s (>= 1) `w` it uses."""
        raise NotImplementedError

    # -- the batch norms (the search child's; none here)

    def _normalized(self, layer_id, j, x, training, moments):
        """x through batch norm j of the layer (node j, or the output for j
        = rhn_depth), its training moments appended to `moments`."""
        return x

    def num_batch_norms(self, training):
        """How many batch norms per layer collect moments in this pass."""
        return 0

    def update_statistics(self, layer_id, per_bn):
        """Applies the collected (means [T, C], variances [T, C]) of each
        batch norm of the layer."""

    # -- one step of one layer

    def _cell(self, layer_id, xw, s, weights, plan, s_mask, training):
        """One step: xw [N, 2H] (the input's share of node 0, precomputed),
        s [N, H] the layer's previous output. Returns (output before
        l_skip, batch-norm moments per node and of the output or None)."""
        funcs, prevs, loose, baked = plan
        _, w_s, w_nodes = weights
        moments = []

        def node(i, inp, pre):
            pre = self._normalized(layer_id, i, pre, training, moments)
            hh, t = tf.split(pre, 2, axis=1)
            hh = apply_activation(funcs[i], hh)
            return inp + tf.sigmoid(t) * (hh - inp)

        def masked(x):
            return x if s_mask is None else x * s_mask

        nodes = [node(0, s, xw + tf.matmul(masked(s), w_s))]
        depth = self.cfg.rhn_depth
        if baked:
            pres = {}
            for i in range(1, depth):
                # The first reader of a node runs the matmul of all of them.
                p = prevs[i]
                readers, w = w_nodes[p]
                if readers[0] == i:
                    out = tf.matmul(masked(nodes[p]), w)
                    parts = (tf.split(out, len(readers), axis=1)
                             if len(readers) > 1 else [out])
                    pres.update(zip(readers, parts))
                nodes.append(node(i, nodes[p], pres.pop(i)))
            out = tf.add_n([nodes[i] for i in loose]) / float(len(loose))
        else:
            for i in range(1, depth):
                if i == 1:
                    # Node 1 can only read node 0.
                    p = nodes[0]
                elif training:
                    p = pick(nodes, prevs[i])
                else:
                    # No gradient (evaluation, the XLA-compiled reward
                    # pass): XLA compiles the gather into one slice, while
                    # switch_cases cost the reward pass 14 s to compile.
                    p = tf.gather(tf.stack(nodes), prevs[i])
                nodes.append(node(i, p, tf.matmul(masked(p), w_nodes[i - 1])))
            stacked = tf.stack(nodes)
            loose = tf.cast(loose, stacked.dtype)
            out = (tf.reduce_sum(stacked * loose[:, None, None], axis=0)
                   / tf.reduce_sum(loose))
        out = self._normalized(layer_id, depth, out, training, moments)
        return out, moments

    # -- one layer over the window

    def _run_layer(self, layer_id, inputs, s0, plan, masks, training):
        """inputs [N, T, H] (already dropped out), s0 [N, H] -> (outputs
        [N, T, H], last output [N, H]). Updates the batch norms' moving
        statistics in training (search mode)."""
        cfg = self.cfg
        h = cfg.hidden_size
        x_mask, s_mask = masks
        weights = self._layer_weights(layer_id, plan)
        w_x = weights[0]
        shape = tf.shape(inputs)
        n, steps = shape[0], shape[1]
        x = inputs if x_mask is None else inputs * x_mask[:, None, :]
        # Node 0's input share for every step in one matmul.
        xw = tf.reshape(tf.matmul(tf.reshape(x, [-1, h]), w_x),
                        [n, steps, 2 * h])
        static_steps = inputs.shape[1]
        num_bn = self.num_batch_norms(training)
        if static_steps is not None and static_steps <= cfg.unroll_max_steps:
            s = s0
            outs, moments = [], []
            xws = tf.unstack(xw, num=static_steps, axis=1)
            skips = (tf.unstack(inputs, num=static_steps, axis=1)
                     if cfg.l_skip else None)
            for t in range(static_steps):
                out, m = self._cell(layer_id, xws[t], s, weights, plan,
                                    s_mask, training)
                if cfg.l_skip:
                    out = out + skips[t]
                outs.append(out)
                moments.append(m)
                s = out
            outputs = tf.stack(outs, axis=1)
            per_bn = [(tf.stack([m[j][0] for m in moments]),
                       tf.stack([m[j][1] for m in moments]))
                      for j in range(num_bn)]
        else:
            xw_tm = tf.transpose(xw, [1, 0, 2])
            in_tm = tf.transpose(inputs, [1, 0, 2]) if cfg.l_skip else None
            out_ta = tf.TensorArray(s0.dtype, size=steps,
                                    element_shape=s0.shape)
            stat_tas = [tf.TensorArray(tf.float32, size=steps)
                        for _ in range(2 * num_bn)]

            def body(t, s, out_ta, *stat_tas):
                out, m = self._cell(layer_id, xw_tm[t], s, weights, plan,
                                    s_mask, training)
                if cfg.l_skip:
                    out = out + in_tm[t]
                out_ta = out_ta.write(t, out)
                stat_tas = list(stat_tas)
                for j in range(num_bn):
                    stat_tas[2 * j] = stat_tas[2 * j].write(t, m[j][0])
                    stat_tas[2 * j + 1] = stat_tas[2 * j + 1].write(t, m[j][1])
                return (t + 1, out, out_ta, *stat_tas)

            result = tf.while_loop(
                lambda t, *_: t < steps, body,
                (tf.constant(0), s0, out_ta, *stat_tas),
                maximum_iterations=steps)
            s = result[1]
            outputs = tf.transpose(result[2].stack(), [1, 0, 2])
            per_bn = [(result[3 + 2 * j].stack(), result[4 + 2 * j].stack())
                      for j in range(num_bn)]
        self.update_statistics(layer_id, per_bn)
        return outputs, s

    def _masks(self, tokens, training):
        """(e_mask [N, T] or None, per layer (x_mask, h_mask) [N, H] or
        None, o_mask [N, H] or None). A keep probability of 1 gives no
        mask (the reference's mask is then all ones)."""
        cfg = self.cfg
        none = (None, [(None, None)] * cfg.num_layers, None)
        if not training:
            return none
        shape = tf.shape(tokens)
        n = shape[0]
        hs = [n, cfg.hidden_size]
        seed = self.dropout_seed

        dtype = self.compute_dtype

        def mask(shape, keep):
            # Drawn in float32 (the same draws under mixed precision),
            # applied in the compute dtype.
            if keep >= 1.0:
                return None
            return tf.cast(variational_mask(shape, keep, seed), dtype)

        e_mask = None
        if cfg.e_keep < 1.0:
            e_mask = tf.cast(embedding_mask(
                tokens, variational_mask(shape, cfg.e_keep, seed)), dtype)
        layer_masks = [(mask(hs, cfg.x_keep), mask(hs, cfg.h_keep))
                       for _ in range(cfg.num_layers)]
        return e_mask, layer_masks, mask(hs, cfg.o_keep)

    def call(self, tokens, state, arc=None, training=False):
        cfg = self.cfg
        tokens = tf.convert_to_tensor(tokens)
        if tokens.dtype != tf.int32:
            tokens = tf.cast(tokens, tf.int32)
        # Keras has already cast a float state to the compute dtype.
        state = tf.cast(state, self.compute_dtype)
        plan = self._plan_arc(arc)
        e_mask, layer_masks, o_mask = self._masks(tokens, training)
        x = tf.gather(self.w_emb, tokens)
        if e_mask is not None:
            x = x * e_mask[:, :, None]
        next_state = []
        for layer_id in range(cfg.num_layers):
            x, last = self._run_layer(layer_id, x, state[layer_id], plan,
                                      layer_masks[layer_id], training)
            next_state.append(last)
        if o_mask is not None:
            x = x * o_mask[:, None, :]
        # The carried state stays float32 between windows.
        return x, tf.cast(tf.stack(next_state), tf.float32)

    def logits(self, outputs):
        """outputs [N, T, H] @ w_emb^T -> [N, T, V] (tied weights), in
        float32 (call it outside the child's call, where the embedding
        reads as float32)."""
        return tf.einsum("nth,vh->ntv", tf.cast(outputs, tf.float32),
                         tf.cast(self.w_emb, tf.float32))

    def mean_nll(self, outputs, labels):
        """The mean NLL of the labels under `logits(outputs)`, by
        `mean_softmax_nll` (the reward pass: no gradient)."""
        return mean_softmax_nll(tf.cast(outputs, tf.float32),
                                tf.cast(self.w_emb, tf.float32),
                                tf.cast(labels, tf.int32))

    def token_nll(self, tokens, labels, state, arc=None, training=False):
        """(nll [N, T] of each label, outputs, next_state)."""
        outputs, next_state = self(tokens, state, arc=arc, training=training)
        labels = tf.cast(labels, tf.int32)
        nll = tied_softmax_nll(tf.cast(outputs, tf.float32),
                               tf.cast(self.w_emb, tf.float32), labels)
        return nll, outputs, next_state

    def optimizer_variables(self):
        """Every trainable variable, in the reference's order (rnn weights,
        embedding, then the search mode's batch-norm offsets and scales)."""
        return list(self.trainable_weights)



class FixedPtbChild(PtbChild):
    """The PTB network of one architecture (`cfg.fixed_arc`, the
    reference's `_rhn_fixed`): w_prev [2H, 2H] and each node's own `w` [H,
    2H]; the arc is a Python value, so the graph is built for it (plain
    activations, loose ends known); no batch norms. `call` ignores `arc`."""

    searching = False

    def weight_rows(self):
        h = self.cfg.hidden_size
        return 2 * h, [h] * self.cfg.rhn_depth

    def _plan_arc(self, arc):
        a = self.cfg.fixed_arc
        return list(a.funcs), list(a.prevs), a.loose_ends(), True

    def _w_prev_block(self, layer_id, plan):
        return tf.convert_to_tensor(self.w_prev(layer_id))

    def _node_block(self, layer_id, node, plan):
        return tf.convert_to_tensor(self.w_node(layer_id, node))


class SearchPtbChild(PtbChild):
    """The PTB search network (the reference's `_rhn_enas`): shared weights
    for every choice, w_prev [2 F H, 2H] (a block per activation of node 0)
    and node i's `w` [F i H, 2H] (a block per (prev, func) pair); a batch
    norm on every node's pre-activation and on the cell's output. The arc
    (`call(..., arc=arc)`) is an int32 tensor (one traced function serves
    every arc) or a BakedArc."""

    searching = True

    def weight_rows(self):
        h, f = self.cfg.hidden_size, self.cfg.num_funcs
        return 2 * f * h, [f * i * h for i in range(self.cfg.rhn_depth)]

    def batch_norm_scopes(self):
        """Per layer, a batch norm per node (`rhn_layer_{i}/batch_norm`)
        and one on the output (`batch_norm`)."""
        h, d = self.cfg.hidden_size, self.cfg.rhn_depth
        scopes = []
        for layer_id in range(self.cfg.num_layers):
            nodes = [WeightScope("rhn_layer_{}".format(i),
                                 children=[PtbBatchNorm(2 * h)])
                     for i in range(d)]
            scopes.append(WeightScope("layer_{}".format(layer_id),
                                      children=nodes + [PtbBatchNorm(h)]))
        return scopes

    def node_bn(self, layer_id, node):
        return self.bn_layers[layer_id].children[node].children[0]

    def output_bn(self, layer_id):
        return self.bn_layers[layer_id].children[-1]

    def _batch_norm(self, layer_id, j):
        """Node j's batch norm, or the output's for j = rhn_depth."""
        if j < self.cfg.rhn_depth:
            return self.node_bn(layer_id, j)
        return self.output_bn(layer_id)

    def _plan_arc(self, arc):
        cfg = self.cfg
        d = cfg.rhn_depth
        if arc is None:
            raise ValueError("the PTB search child needs an arc: call "
                             "child(tokens, state, arc=arc_tensor)")
        if isinstance(arc, BakedArc):
            a = PtbArc.parse(list(arc.values), d, cfg.num_funcs)
            return list(a.funcs), list(a.prevs), a.loose_ends(), True
        arc = tf.convert_to_tensor(arc)
        if arc.dtype != tf.int32:
            arc = tf.cast(arc, tf.int32)
        arc = tf.reshape(arc, [-1])
        if arc.shape[0] is not None and arc.shape[0] != cfg.arc_length:
            raise ValueError("the arc has {} values, rhn_depth={} needs {}"
                             .format(arc.shape[0], d, cfg.arc_length))
        funcs = [arc[0]] + [arc[2 * i] for i in range(1, d)]
        prevs = [None] + [arc[2 * i - 1] for i in range(1, d)]
        used = tf.reduce_sum(tf.one_hot(arc[1::2], d, dtype=tf.float32),
                             axis=0)
        loose = tf.cast(tf.equal(used, 0.0), tf.float32)
        return funcs, prevs, loose, False

    # The blocks are gathered from a [blocks, rows, 2H] view rather than
    # sliced at a computed row: the same values, but XLA compiles a gather
    # with a traced index once, while a slice's traced start becomes a
    # compile-time constant (one compilation per arc).

    def _w_prev_block(self, layer_id, plan):
        # Block f0: rows [f0 2H, (f0 + 1) 2H).
        funcs = plan[0]
        return _block(tf.convert_to_tensor(self.w_prev(layer_id)), funcs[0],
                      2 * self.cfg.hidden_size)

    def _node_block(self, layer_id, node, plan):
        # Block (prev f + func): rows [(prev f + func) H, +H).
        funcs, prevs = plan[0], plan[1]
        w = tf.convert_to_tensor(self.w_node(layer_id, node))
        return _block(w, prevs[node] * self.cfg.num_funcs + funcs[node],
                      self.cfg.hidden_size)

    def _normalized(self, layer_id, j, x, training, moments):
        layer_bn = self._batch_norm(layer_id, j)
        if not training:
            return layer_bn.normalize(x, False)
        x, mean, var = layer_bn.normalize(x, True)
        moments.append((mean, var))
        return x

    def num_batch_norms(self, training):
        return self.cfg.rhn_depth + 1 if training else 0

    def update_statistics(self, layer_id, per_bn):
        for j, (means, variances) in enumerate(per_bn):
            self._batch_norm(layer_id, j).apply_updates(means, variances)


def count_params(variables):
    return int(sum(np.prod(v.shape) for v in variables))
