"""Moved to :mod:`visprior.commands`; kept so that earlier imports keep working."""

from visprior.commands import add_force_flag, dispatch, train_config_from_args

__all__ = ["add_force_flag", "dispatch", "train_config_from_args"]
