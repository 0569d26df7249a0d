"""The ``quotad`` command: serve the API and administer a deployment.

This module only assembles the Typer app; the commands live in ``serve`` (running a
deployment), ``proxy``, ``data`` (usage, export, import), ``dump`` (dump, restore),
``admin`` (services, plans, accounts, keys), ``tokens`` (operator tokens, the audit
log), ``webhooks`` (webhook endpoints, alert events) and ``credits``, over the shared helpers of
``console`` and ``stores``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from quotad import __version__
from quotad.cli import admin, credits, data, dump, proxy, serve, target, tokens, webhooks
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


def main() -> None:
    """Entry point of the ``quotad`` script."""
    app()
