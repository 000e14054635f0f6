"""What every ``rag`` command shares: how a refused command ends (one clean line on stderr, exit
status 2, no traceback)."""

from __future__ import annotations

from typing import IO

import click


class CliError(click.ClickException):
    """Ends the command with ``rag: error: <message>`` and exit status 2."""

    exit_code = 2

    def show(self, file: IO[str] | None = None) -> None:
        click.echo(f"rag: error: {self.format_message()}", err=True, file=file)
