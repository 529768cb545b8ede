"""The ``nasforge`` command: search, pipeline, derive, plot, train, test, export, eval-arch,
profile, costmodel, registry, gen-config.

A thin shell over the runner: each module holds the commands of one concern and their argument
parsers (``add_commands``); :mod:`nasforge.cli.parser` assembles them and runs one.

Every user mistake ends in a one-paragraph message on stderr and exit status 2, never a
traceback; nothing already written by earlier runs is touched.
"""

from nasforge.cli.parser import main

__all__ = ["main"]
