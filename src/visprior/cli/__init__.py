"""The command line, and the only place it is declared: ``app.py`` builds the ``visprior``
parser and runs a command; one module per command group (``demo``, ``seg``, ``cxr``,
``simplify``, ``export``) declares its commands (``add_commands``) and runs them (``run``) by
calling into the library packages; ``options.py`` declares the options several commands take.
"""

from visprior.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
