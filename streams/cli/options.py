"""Options every command spells alike, and reading the files commands are given.

``--bootstrap-servers``, ``--topic-prefix`` and ``--json`` mean the same on every command that has them; the
environment (``ICS2_BOOTSTRAP_SERVERS``, ``ICS2_TOPIC_PREFIX``) gives their defaults.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streams.errors import InputError
from streams.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

bootstrap_servers_option = click.option(
    "--bootstrap-servers",
    envvar="ICS2_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers, host:port,... [env ICS2_BOOTSTRAP_SERVERS; default 127.0.0.1:19092]",
)
topic_prefix_option = click.option(
    "--topic-prefix", envvar="ICS2_TOPIC_PREFIX", help="Prefix of every topic name [env ICS2_TOPIC_PREFIX]"
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table")


def connection_options(command: F) -> F:
    """``--bootstrap-servers`` and ``--topic-prefix``."""
    return bootstrap_servers_option(topic_prefix_option(command))


def principal_options(command: F) -> F:
    """Broker and prefix, and ``--username``/``--password`` that override the SASL settings (a party's principal)."""
    command = click.option("--password", help="SASL password; overrides ICS2_SASL_PASSWORD")(command)
    command = click.option("--username", help="SASL user name (the party's principal); overrides ICS2_SASL_USERNAME")(
        command
    )
    return connection_options(command)


def settings_from(
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
    username: str | None = None,
    password: str | None = None,
    **more: Any,
) -> Settings:
    """The environment's settings with the command line's options on top."""
    return Settings.from_env(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        sasl_username=username,
        sasl_password=password,
        **more,
    )


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or ``InputError`` saying why it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{path} does not exist", hint="check the path") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path} is a folder, not a file", hint="give a file") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_json(path: Path) -> Any:
    """The file's JSON document, or ``InputError`` saying why not (missing, unreadable, not JSON)."""
    data = read_bytes(path)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {path}: it is not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
