"""Parsing, validation and printing of macro arcs."""

import pytest

from src.macro import arcs
from src.errors import UserError

FINAL_6 = "0 3 0 0 1 0 2 0 0 1 2 0 0 0 0 3 1 1 0 1 0"


def parse(text, num_layers=6, num_branches=4, whole=True, **kw):
    return arcs.MacroArc.parse(text, num_layers, num_branches, whole, **kw)


def test_whole_channel_arc_splits_into_ops_and_skips():
    arc = parse(FINAL_6)
    assert arc.ops == (0, 3, 0, 2, 2, 3)
    assert arc.skips == ((), (0,), (1, 0), (0, 0, 1), (0, 0, 0, 0),
                         (1, 1, 0, 1, 0))
    assert str(arc) == FINAL_6
    assert arc.layer_lines()[2] == [0, 1, 0]


def test_arc_length_counts_ops_and_skips():
    assert arcs.macro_arc_length(24, 4, True) == 300
    assert arcs.macro_arc_length(6, 4, False) == 6 * 8 + 15


def test_per_channel_arc_parses_start_count_pairs():
    text = "0 2 1 1 0 0 0 3  1 1 0 2 0 1 0 0 1"
    arc = parse(text, num_layers=2, num_branches=4, whole=False,
                out_filters=4)
    assert arc.branches[0] == ((0, 2), (1, 1), (0, 0), (0, 3))
    assert arc.skips[1] == (1,)
    assert arc.to_list() == [int(v) for v in text.split()]


@pytest.mark.parametrize("text, pattern", [
    ("0 3 0", "has 3 integers but --child_num_layers=6 needs 21"),
    (FINAL_6.replace("0 3 0 0 1", "0 7 0 0 1", 1), "layer 1, position 1: op 7"),
    (FINAL_6[:-1] + "2", "layer 5, position 20: skip value 2"),
    (FINAL_6.replace("3", "x", 1), "position 1 is 'x', not an integer"),
    (FINAL_6.replace("3", "1.5", 1), "position 1 is '1.5', not an integer"),
])
def test_malformed_arcs_are_rejected_with_the_layer_and_position(text,
                                                                 pattern):
    with pytest.raises(UserError, match=pattern) as e:
        parse(text)
    assert "\n" not in str(e.value)


def test_op_range_can_be_narrowed_to_the_branches_searched():
    with pytest.raises(UserError, match="op 4 is out of range 0..3"):
        parse("4", num_layers=1, num_ops=4)


def test_per_channel_slices_must_fit_the_filters():
    with pytest.raises(UserError, match="branch 1 takes channels start=3"):
        parse("0 1 3 2", num_layers=1, num_branches=2, whole=False,
              out_filters=4)


def test_describe_names_ops_and_skip_sources():
    lines = parse(FINAL_6).describe()
    assert lines[0] == "layer 0: conv_3x3"
    # Bit j of layer 5 is the j-th output so far: the stem, then layer j - 1.
    assert lines[5] == ("layer 5: sep_conv_5x5  skip from stem, layer 0, "
                        "layer 2")


def test_pool_layers_are_at_a_third_and_two_thirds():
    assert arcs.pool_layers(6) == [1, 3]
    assert arcs.pool_layers(24) == [7, 15]
    assert arcs.pool_layers(12) == [3, 7]


# ------------------------------------------- what `python -m src.arc` uses

def test_from_text_infers_the_layers_and_equals_parse():
    arc = arcs.MacroArc.from_text(FINAL_6)
    assert arc == parse(FINAL_6, num_branches=6)
    assert arc.num_layers == 6 and arc.whole_channels
    # Given sizes are used as they are (and checked by parse).
    assert arcs.MacroArc.from_text(
        "0 2 1 1 0 1 0 3 1", {"child_num_branches": 2,
                              "controller_search_whole_channels": False}
    ).branches == (((0, 2), (1, 1)), ((0, 1), (0, 3)))
    with pytest.raises(UserError, match="--child_num_layers=3 needs 6"):
        arcs.MacroArc.from_text("0 3 0", {"child_num_layers": 3})
    # None means "not given".
    assert arcs.MacroArc.from_text("0 3 0", {"child_num_layers": None,
                                             "child_num_branches": None}
                                   ).num_layers == 2


def test_from_text_reads_per_channel_arcs_from_their_record():
    # A per-channel search's arcs.jsonl record has "layers" but no "ops".
    arc = arcs.MacroArc.from_text("0 2 1 1 0 1 0 3 1",
                                  {"child_num_branches": 2},
                                  record={"layers": []})
    assert not arc.whole_channels and arc.num_layers == 2
    with pytest.raises(UserError, match="at most 6 branches"):
        arcs.MacroArc.from_text("0 1", {"child_num_branches": 7},
                                record={"layers": []})


@pytest.mark.parametrize("text, fragment", [
    ("", "--x is empty: give the arc's integers"),
    ("0 3 0 1", "--x has 4 integers, which fits no number of layers (n "
     "layers need n + n(n-1)/2: 3 for 2 layers, 6 for 3): check the arc, "
     "or give --child_num_layers"),
    ("0 3 q", "--x: position 2 is 'q', not an integer"),
])
def test_from_text_errors_name_the_flag_to_give(text, fragment):
    with pytest.raises(UserError) as e:
        arcs.MacroArc.from_text(text, flag="--x")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_per_channel_inference_names_the_branch_flags():
    with pytest.raises(UserError, match="n layers need 2 x 2 \\+ \\(layer "
                       "id\\) per layer.*--child_num_branches or "
                       "--controller_search_whole_channels"):
        arcs.MacroArc.from_text("0 1 0", {
            "child_num_branches": 2,
            "controller_search_whole_channels": False})


def test_listing_and_dot_lines():
    arc = parse(FINAL_6)
    lines = arc.listing()
    assert lines[:2] == ["macro arc: 6 layers, whole channels (21 integers)",
                         "  " + FINAL_6]
    assert "  layer 5: 3 1 1 0 1 0" in lines
    assert "  layer 0: conv_3x3" in lines
    assert lines[-1].startswith("Resolution halves (and a fixed network's "
                                "channels double) after layers 1 and 3")
    assert parse("0 1 0", num_layers=2).listing()[-1].startswith(
        "No pooling layers")
    dot = arc.dot_lines()
    assert dot[0] == "digraph macro {" and dot[-1] == "}"
    assert '  layer_1 [label="layer 1\\nsep_conv_5x5\\n(then halve ' \
        'resolution)"];' in dot
    assert "  layer_5 -> output;" in dot


def test_the_tool_attributes():
    assert arcs.ARC_CLASS is arcs.MacroArc
    assert arcs.MacroArc.RECORD_KEYS == ("layers", "ops")
    assert [s.name for s in arcs.MacroArc.SIZE_FLAGS] == [
        "child_num_layers", "child_num_branches",
        "controller_search_whole_channels"]
