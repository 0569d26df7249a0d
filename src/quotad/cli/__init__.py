"""The ``quotad`` command: serve the API and administer a deployment.

This module only assembles the Typer app; the commands live in ``serve`` (running a
deployment), ``proxy``, ``data`` (usage, export, import), ``dump`` (dump, restore),
``admin`` (services, plans, accounts, keys), ``tokens`` (operator tokens, the audit
log), ``webhooks`` (webhook endpoints, alert events) and ``credits``, over the shared helpers of
``console`` and ``stores``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from quotad import __version__
from quotad.cli import admin, credits, data, dump, proxy, serve, startup, target, tokens, webhooks
from quotad.cli.console import App, console

app = App(name="quotad", help="Usage metering and quotas for API providers.", add_completion=False)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit")] = False,
    url: target.UrlOption = None,
    token: target.TokenOption = None,
) -> None:
    if version:
        console.print(f"quotad {__version__}")
        raise typer.Exit
    target.remember_root_options(ctx.invoked_subcommand, url, token)


# `quotad --help` lists the commands in this order, then the groups in theirs.
app.command()(serve.serve)
app.command()(serve.migrate)
app.add_typer(serve.token_app, name="token")
app.command()(serve.openapi)
app.add_typer(admin.services_app, name="services")
app.add_typer(admin.plans_app, name="plans")
app.add_typer(admin.accounts_app, name="accounts")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(data.usage_app, name="usage")
app.add_typer(tokens.tokens_app, name="tokens")
app.command("audit")(tokens.audit_command)
app.add_typer(webhooks.webhooks_app, name="webhooks")
app.command("alerts")(webhooks.alerts_command)
app.add_typer(credits.credits_app, name="credits")
app.command("proxy")(proxy.proxy_command)
app.command("export")(data.export_command)
app.command("import")(data.import_command)
app.command("dump")(dump.dump_command)
app.command("restore")(dump.restore_command)


# The root's options that take a value (``--url URL``): the command name comes after it.
_VALUED = frozenset({"--url", "--token"})


def _command_name(argv: Sequence[str]) -> str | None:
    """The command or group ``argv`` names after the root's options, if any."""
    args = iter(argv)
    for arg in args:
        if arg in _VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
        elif arg.split("=", 1)[0] not in _VALUED:
            return None  # --help, --version or a mistake: the whole app answers
    return None


def app_for(argv: Sequence[str]) -> typer.Typer:
    """The app with only the command or group ``argv`` names, else the whole app.

    Typer turns every command of an app into a Click command, reading each function's
    signature and type hints, before parsing anything: for all of ``quotad``'s commands
    that is a sizeable share of a simple command's start-up. A name that is no command
    gets the whole app, so its error (and ``quotad --help``) lists every command.
    """
    name = _command_name(argv)
    commands = [c for c in app.registered_commands if _name_of(c) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    only = copy.copy(app)
    only.registered_commands, only.registered_groups = commands, groups
    return only


def _name_of(command: typer.models.CommandInfo) -> str | None:
    # As Typer names a command registered without a name: after its function.
    if command.name is not None:
        return command.name
    return None if command.callback is None else command.callback.__name__.lower().replace("_", "-")


def main() -> None:
    """Entry point of the ``quotad`` script."""
    with startup.collector_held():
        app_for(sys.argv[1:])()
