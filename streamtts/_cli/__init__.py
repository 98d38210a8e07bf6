"""Subcommands of the ``streamtts`` command (see ``streamtts/cli.py``)."""
