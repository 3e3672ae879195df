"""Defining absl flags while keeping their names in definition order (the
entry points print and save exactly the flags they define)."""

from absl import flags


def definer(names):
    """A `define(kind, name, default, help, **kwargs)` that calls absl's
    `DEFINE_<kind>` and appends the name to the list `names`."""
    def define(kind, name, default, help_text, **kwargs):
        if kind == "enum":
            flags.DEFINE_enum(name, default, kwargs.pop("enum_values"),
                              help_text, **kwargs)
        else:
            getattr(flags, "DEFINE_" + kind)(name, default, help_text,
                                             **kwargs)
        names.append(name)
    return define
