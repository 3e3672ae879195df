"""The macro search space's `SPACE`: its configs from the CIFAR-10 flags,
its child and controller, and its arc printout."""

import numpy as np

from src.macro.child import FixedMacroChild, MacroConfig, SearchMacroChild
from src.macro.controller import MacroController, MacroControllerConfig
from src.cifar10.session import CifarSpace
from src.errors import UserError
from src.macro import arcs
from src.random_policy import Choice, RandomPolicyConfig, bit, uniform


class MacroSpace(CifarSpace):
    name = "macro"
    search_for = "macro"
    arc_class = arcs.MacroArc
    fixed_child = FixedMacroChild
    search_child = SearchMacroChild
    uses_skip_weight = True

    def configs(self, f, out_filters, data_format, searching):
        arc = None
        if not searching:
            arc = arcs.MacroArc.parse(
                f.child_fixed_arc, f.child_num_layers, f.child_num_branches,
                f.controller_search_whole_channels)
        elif not 4 <= f.child_num_branches <= 6:
            raise UserError("--child_num_branches={} cannot be searched: the "
                            "macro search space has 4, 5 or 6 branches"
                            .format(f.child_num_branches))
        child = MacroConfig(
            num_layers=f.child_num_layers, out_filters=out_filters,
            num_branches=f.child_num_branches,
            whole_channels=f.controller_search_whole_channels, fixed_arc=arc,
            keep_prob=f.child_keep_prob, data_format=data_format,
            fixed_separable=f.child_fixed_separable, seed=f.seed)
        child.validate()
        if max(arcs.pool_layers(f.child_num_layers)) < 0:
            print("note: --child_num_layers={} < 3, so the network has no "
                  "pool layers (as in the reference)".format(
                      f.child_num_layers))
        controller = None
        if searching:
            controller = MacroControllerConfig(
                num_layers=f.child_num_layers,
                num_branches=f.child_num_branches,
                out_filters=out_filters, lstm_size=64, lstm_num_layers=1,
                tanh_constant=f.controller_tanh_constant,
                op_tanh_reduce=f.controller_op_tanh_reduce,
                temperature=f.controller_temperature,
                search_whole_channels=f.controller_search_whole_channels,
                skip_target=f.controller_skip_target,
                skip_weight=f.controller_skip_weight, seed=f.seed)
            controller.validate()
            if f.search_policy == "random":
                controller = self.random_policy(controller)
        return child, controller

    def random_policy(self, controller_cfg):
        """The uniform policy of --search_policy=random: per layer, the op
        uniform over the branches (whole channels) or each branch's start
        uniform over the channels and its count uniform over 1 .. channels
        - start (per channel, the controller's legal choices); then each
        skip bit 1 with probability --controller_skip_target."""
        cfg = controller_cfg
        choices = []
        for layer in range(cfg.num_layers):
            if cfg.search_whole_channels:
                choices.append(uniform(cfg.num_branches))
            else:
                for _ in range(cfg.num_branches):
                    choices.append(uniform(cfg.out_filters))
                    choices.append(Choice(low=1, high=cfg.out_filters + 1,
                                          minus=len(choices) - 1))
            choices += [bit(cfg.skip_target)] * layer
        return RandomPolicyConfig(tuple(choices), seed=cfg.seed)

    def build_lstm_controller(self, controller_cfg):
        return MacroController(controller_cfg)

    def parse_arc(self, values, child_cfg):
        return arcs.MacroArc.parse(values, child_cfg.num_layers,
                                   child_cfg.num_branches,
                                   child_cfg.whole_channels)

    def describe_sizes(self, child_cfg):
        c = child_cfg
        return "{} layers, {} filters, {} branches".format(
            c.num_layers, c.out_filters, c.num_branches)

    def printout(self, arc, score):
        """One line per layer (op or slices, then skips), then the
        accuracy."""
        return ([str(np.reshape(np.array(line), [-1]))
                 for line in arc.layer_lines()]
                + ["val_acc={:<6.4f}".format(score), "-" * 80])

    def arc_record(self, arc):
        out = {"layers": arc.describe()}
        if arc.whole_channels:
            out["ops"] = [arcs.MACRO_OPS[o] for o in arc.ops]
        return out


SPACE = MacroSpace()
