"""The ``edgehal`` command line: one thin command per verb, calling the library.

A command's docstring is its help; every option's help names its default.
An ``EdgehalError`` is printed as one line and exits 1; anything else is a bug
and keeps its traceback. Heavy libraries are imported inside the commands so
``edgehal --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from edgehal.errors import EdgehalError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgehalError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(package_name="edgehal")
def main() -> None:
    """edgehal: hierarchical-auxiliary-learning models from PyTorch training to the edge."""


def _comma_ints(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


# ---- foundation: train, eval, quickstart ----------------------------------

# ---- export, quantize, parity ---------------------------------------------

# ---- serve -----------------------------------------------------------------

# ---- bench, doctor ---------------------------------------------------------

# ---- tensorrt: build-engine, inspect, export-triton ------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
