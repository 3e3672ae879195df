"""The micro search space's `SPACE`: its configs from the CIFAR-10 flags,
its child and controller, and its arc printout."""

import numpy as np

from src.cifar10.micro_child import MicroChild, MicroConfig
from src.cifar10.micro_controller import MicroController, MicroControllerConfig
from src.cifar10.session import CifarSpace
from src.micro import arcs


class MicroSpace(CifarSpace):
    name = "micro"
    search_for = "micro"
    arc_class = arcs.MicroArc

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
        return child, controller

    def build_child(self, child_cfg):
        return MicroChild(child_cfg)

    def build_controller(self, controller_cfg):
        return MicroController(controller_cfg)

    def parse_arc(self, values, child_cfg):
        return arcs.MicroArc.parse(values, child_cfg.num_cells)

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
