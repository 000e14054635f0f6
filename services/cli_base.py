"""What every ``rag`` command shares: how a refused command ends (one clean line on stderr, exit
status 2, no traceback), and how the commands that talk to a running service reach it."""

from __future__ import annotations

import os
from typing import IO, Any

import click
import httpx


class CliError(click.ClickException):
    """Ends the command with ``rag: error: <message>`` and exit status 2."""

    exit_code = 2

    def show(self, file: IO[str] | None = None) -> None:
        click.echo(f"rag: error: {self.format_message()}", err=True, file=file)


DEFAULT_URL = "http://127.0.0.1:8000"
url_option = click.option(
    "--url", default=DEFAULT_URL, show_default=True, help="The running service."
)


def headers(*, admin: bool = False, either: bool = False) -> dict[str, str]:
    """``Authorization`` with the admin key (``admin``), the client key, or (``either``: for what
    both open, such as /stats) the client key if set, else the admin key."""
    client = os.environ.get("RAG_CLIENT_API_KEY", "")
    admin_key = os.environ.get("RAG_ADMIN_API_KEY", "")
    key = admin_key if admin else client or (admin_key if either else "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def request(
    method: str, url: str, *, admin: bool = False, either: bool = False, **kwargs: Any
) -> httpx.Response:
    sent = headers(admin=admin, either=either)
    try:
        response = httpx.request(method, url, headers=sent, timeout=120, **kwargs)
    except httpx.TransportError as exc:
        raise CliError(
            f"cannot reach the service at {url} ({exc}); is `rag serve` running?"
        ) from exc
    if response.status_code >= 400:
        raise CliError(f"{response.status_code}: {response.text}")
    return response
