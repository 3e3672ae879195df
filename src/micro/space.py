"""The micro search space's `SPACE`: its configs from the CIFAR-10 flags,
its child and controller, and its arc printout."""

import numpy as np

from src.micro.child import FixedMicroChild, MicroConfig, SearchMicroChild
from src.micro.controller import MicroController, MicroControllerConfig
from src.cifar10.session import CifarSpace
from src.micro import arcs
from src.random_policy import RandomPolicyConfig, uniform


class MicroSpace(CifarSpace):
    name = "micro"
    search_for = "micro"
    arc_class = arcs.MicroArc
    fixed_child = FixedMicroChild
    search_child = SearchMicroChild

    def configs(self, f, out_filters, data_format, searching):
        arc = None
        if not searching:
            arc = arcs.MicroArc.parse(f.child_fixed_arc, f.child_num_cells)
        child = MicroConfig(
            num_layers=f.child_num_layers, num_cells=f.child_num_cells,
            out_filters=out_filters, keep_prob=f.child_keep_prob,
            drop_path_keep_prob=f.child_drop_path_keep_prob,
            use_aux_heads=f.child_use_aux_heads, fixed_arc=arc,
            # In epochs until the session knows the batches per epoch.
            num_train_steps=f.num_epochs,
            data_format=data_format, seed=f.seed)
        child.validate()
        controller = None
        if searching:
            controller = MicroControllerConfig(
                num_cells=f.child_num_cells,
                num_branches=f.child_num_branches,
                lstm_size=64, lstm_num_layers=1,
                tanh_constant=f.controller_tanh_constant,
                op_tanh_reduce=f.controller_op_tanh_reduce,
                temperature=f.controller_temperature, seed=f.seed)
            controller.validate()
            if f.search_policy == "random":
                controller = self.random_policy(controller)
        return child, controller

    def random_policy(self, controller_cfg):
        """The uniform policy of --search_policy=random: in both cells,
        node k's (index_1, op_1, index_2, op_2), each index uniform over
        0 .. k + 1 and each op uniform over the ops."""
        cfg = controller_cfg
        choices = []
        for _ in range(2):
            for node in range(cfg.num_cells):
                choices += [uniform(node + 2), uniform(cfg.num_branches)] * 2
        return RandomPolicyConfig(tuple(choices), seed=cfg.seed)

    def build_lstm_controller(self, controller_cfg):
        return MicroController(controller_cfg)

    def parse_arc(self, values, child_cfg):
        return arcs.MicroArc.parse(values, child_cfg.num_cells)

    def describe_sizes(self, child_cfg):
        c = child_cfg
        return "child_num_layers={}, {} cells, {} filters{}{}".format(
            c.num_layers, c.num_cells, c.out_filters,
            ", aux head" if c.use_aux_heads else "",
            ", drop-path" if c.fixed_arc is not None
            and c.drop_path_keep_prob < 1.0 else "")

    def printout(self, arc, score):
        """The normal cell on one line, the reduction cell on the next,
        then the accuracy."""
        return ([str(np.reshape(np.array(line), [-1]))
                 for line in arc.cell_lines()]
                + ["val_acc={:<6.4f}".format(score), "-" * 80])

    def arc_record(self, arc):
        normal, reduce_ = arc.cell_lines()
        return {"normal": " ".join(map(str, normal)),
                "reduce": " ".join(map(str, reduce_)),
                "cells": arc.describe()}


SPACE = MicroSpace()
