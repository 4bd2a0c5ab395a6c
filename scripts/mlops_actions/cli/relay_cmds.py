"""`mlops-actions relay serve | register`: MLflow registry webhooks to GitHub repository_dispatch.

Secrets come from the environment only (a flag would sit in the process list and in shell
history): MLOPS_RELAY_SECRET (the webhook's HMAC secret) and GITHUB_TOKEN (or GH_TOKEN).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Any

from .. import gha, relay
from ..errors import EXIT_OK, ConfigError, ServiceError
from .common import _registry_client, _value, emit, load_config
from .options import MLFLOW_OPTIONS, Option
from .relay_image_cmd import add_relay_image_verb

SECRET_VARIABLE = "MLOPS_RELAY_SECRET"  # noqa: S105 - a variable name
MIN_SECRET_LENGTH = 16
DEFAULT_WEBHOOK_NAME = "mlops-actions-relay"
REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")

SERVE_OPTIONS = (
    *MLFLOW_OPTIONS,
    Option(
        "repository",
        "the GitHub repository (owner/name) that gets the repository_dispatch "
        "(default: GITHUB_REPOSITORY)",
    ),
    Option(
        "model",
        "relay moves of these registered models: shell patterns separated by commas, or * for "
        "every model (required: MLflow's webhooks fire for every model of the server)",
    ),
    Option("alias", "relay moves of these aliases: shell patterns, commas (default: champion)"),
    Option("event-type", f"the repository_dispatch event type (default: {relay.EVENT_TYPE})"),
    Option("host", "address to listen on (default: 127.0.0.1)"),
    Option("port", "port to listen on (default: 8787)"),
    Option(
        "state-dir",
        "where the outbox of deliveries lives, kept across restarts (default: ./.mlops-relay)",
    ),
    Option("github-api-url", "GitHub's API (default: GITHUB_API_URL, else api.github.com)"),
    Option(
        "dispatch-interval",
        "seconds between two dispatches (default: 1, GitHub's advice for requests that "
        "create content; its secondary rate limit allows about 80 a minute)",
    ),
    Option(
        "retries",
        "attempts per dispatch while GitHub fails, with backoff from 1 s doubling to 60 s "
        "(default: 8)",
    ),
)
REGISTER_OPTIONS = (
    *MLFLOW_OPTIONS,
    Option("url", "the relay's webhook URL as MLflow reaches it, ending in /webhook"),
    Option("name", f"the webhook's name in MLflow (default: {DEFAULT_WEBHOOK_NAME})"),
)


def add_relay_verbs(verbs: Any, config_option: Option, add_options: Any) -> None:
    parser = verbs.add_parser(
        "relay",
        help="relay MLflow registry webhooks (an alias moved) to a GitHub repository_dispatch",
    )
    actions = parser.add_subparsers(dest="relay_verb", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="receive MLflow webhooks, check them, and start the deploy workflow on GitHub",
        description=f"Needs {SECRET_VARIABLE} and GITHUB_TOKEN in the environment.",
    )
    add_options(serve, (config_option, *SERVE_OPTIONS))
    serve.add_argument(
        "--include-suite-moves",
        action="store_true",
        help="relay moves made by mlops-actions' own promote too (off: its workflow already "
        "builds, or sends promote.dispatch_event; on, one move would build twice)",
    )
    serve.set_defaults(handler=cmd_relay_serve)
    register = actions.add_parser(
        "register",
        help="create or update the MLflow webhook that calls the relay (idempotent)",
        description=f"The webhook's secret comes from {SECRET_VARIABLE}.",
    )
    add_options(register, (config_option, *REGISTER_OPTIONS))
    register.add_argument(
        "--test", action="store_true", help="then have MLflow send a test delivery to the relay"
    )
    register.set_defaults(handler=cmd_relay_register)
    add_relay_image_verb(actions, add_options)


def webhook_secret() -> str:
    secret = os.environ.get(SECRET_VARIABLE, "")
    gha.mask(secret)
    if not secret.strip():
        raise ConfigError(
            f"{SECRET_VARIABLE} is not set: the relay cannot check who sent a delivery",
            f"set {SECRET_VARIABLE} to a random string (e.g. `openssl rand -hex 32`), the same "
            "for `relay register` and `relay serve`",
        )
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{SECRET_VARIABLE} is shorter than {MIN_SECRET_LENGTH} characters",
            "use a random string of 32 characters or more (`openssl rand -hex 32`)",
        )
    return secret


def _patterns(args: argparse.Namespace, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    text = _value(args, name)
    if not text:
        return default
    patterns = tuple(part.strip() for part in text.split(",") if part.strip())
    return () if patterns == ("*",) else patterns


def _int(args: argparse.Namespace, name: str, default: int, low: int, high: int) -> int:
    text = _value(args, name)
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{name} is {text!r}", f"give a whole number from {low} to {high}")
    return int(text)


def _seconds(args: argparse.Namespace, name: str, default: float) -> float:
    text = _value(args, name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:
        raise ConfigError(f"{name} is {text!r}", "give a number of seconds from 0 to 60")
    return value


def cmd_relay_serve(args: argparse.Namespace) -> int:
    from .. import github_report, relay_app

    secret = webhook_secret()
    token = (os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or "").strip()
    gha.mask(token)
    if not token:
        raise ConfigError(
            "GITHUB_TOKEN is not set: the relay cannot send repository_dispatch events",
            "set GITHUB_TOKEN (or GH_TOKEN) to a token with `contents: write` on the repository "
            "(a fine-grained token: Contents read and write)",
        )
    repository = _value(args, "repository") or os.environ.get("GITHUB_REPOSITORY", "")
    if not REPOSITORY.fullmatch(repository):
        raise ConfigError(
            f"repository is {repository!r}" if repository else "no repository to dispatch to",
            "pass --repository owner/name (or set GITHUB_REPOSITORY)",
        )
    if not _value(args, "model"):
        raise ConfigError(
            "model is not set: MLflow sends every model's events to a webhook",
            "pass --model with the registered model names to relay (shell patterns, commas), "
            "or --model '*' for all",
        )
    rules = relay.Rules(
        models=_patterns(args, "model", ()), aliases=_patterns(args, "alias", ("champion",))
    )
    event_type = _value(args, "event-type") or relay.EVENT_TYPE
    port = _int(args, "port", 8787, 1, 65535)
    retry = relay_app.Retry(attempts=_int(args, "retries", 8, 1, 100))
    api_url = (
        _value(args, "github-api-url")
        or os.environ.get("GITHUB_API_URL")
        or "https://api.github.com"
    )
    suite_check = None
    if not args.include_suite_moves:
        config = load_config(args, SERVE_OPTIONS)
        client, uri = _registry_client(config)
        _check_registry(client, uri)
        suite_check = relay_app.registry_suite_check(client)
    reporter = github_report.GitHubReporter(
        github_report.Target(api_url, token, repository, None, ""),
        retries=0,
        write_interval=_seconds(args, "dispatch-interval", 1.0),
    )

    def dispatch(payload: dict[str, str]) -> None:
        reporter.dispatch(event_type, payload)

    state = Path(_value(args, "state-dir") or ".mlops-relay")
    service = relay_app.Relay(
        secret=secret,
        rules=rules,
        outbox=relay_app.Outbox(relay_app.state_path(state)),
        dispatch=dispatch,
        suite_check=suite_check,
        retry=retry,
    )
    host = _value(args, "host") or "127.0.0.1"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(
        gha.log_safe(
            f"relaying {', '.join(rules.models) or 'every model'} "
            f"@{', '.join(rules.aliases) or 'any alias'} to {repository} "
            f"as '{event_type}' on http://{host}:{port}/webhook"
        ),
        flush=True,
    )
    import uvicorn

    uvicorn.run(relay_app.asgi_app(service), host=host, port=port, log_level="warning")
    return EXIT_OK


def _check_registry(client: Any, uri: str) -> None:
    """Fail at start, not at the first delivery, when the registry cannot be read."""
    from ..tracking import redact

    try:
        client.search_registered_models(max_results=1)
    except Exception as error:
        raise ServiceError(
            f"the MLflow registry at {redact(uri)} cannot be read: {type(error).__name__}",
            "the relay reads promote's history to skip the suite's own moves: check "
            "MLFLOW_TRACKING_URI and its credentials, or pass --include-suite-moves",
        ) from None


def cmd_relay_register(args: argparse.Namespace) -> int:
    secret = webhook_secret()
    url = _value(args, "url")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(
            f"url is {url!r}" if url else "url is not set",
            "pass --url http(s)://<relay host>:<port>/webhook, as the MLflow server reaches it",
        )
    name = _value(args, "name") or DEFAULT_WEBHOOK_NAME
    config = load_config(args, REGISTER_OPTIONS)
    client, uri = _registry_client(config)
    events = [".".join(relay.ALIAS_CREATED)]
    webhook, action = _create_or_update(client, uri, name, url, events, secret)
    emit({"webhook-id": webhook.webhook_id, "webhook-action": action})
    if args.test:
        result = client.test_webhook(webhook.webhook_id)
        if not result.success:
            raise ServiceError(
                f"MLflow's test delivery to {url} failed: "
                f"{result.response_status or result.error_message}",
                "check that `relay serve` runs, that the MLflow server can reach the URL "
                "(MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS for a private address) and that both use "
                f"the same {SECRET_VARIABLE}",
            )
        print(f"test delivery: HTTP {result.response_status}")
    return EXIT_OK


def _create_or_update(
    client: Any, uri: str, name: str, url: str, events: list[str], secret: str
) -> tuple[Any, str]:
    from ..tracking import redact

    try:
        existing = [hook for hook in _all_webhooks(client) if hook.name == name]
        if existing:
            # The secret cannot be read back, so it is always written: the update is the same
            # call whether anything changed or not.
            hook = client.update_webhook(
                existing[0].webhook_id,
                url=url,
                events=events,
                secret=secret,
                status="ACTIVE",
                description="mlops-actions relay: alias moves to GitHub repository_dispatch",
            )
            return hook, "updated"
        hook = client.create_webhook(
            name=name,
            url=url,
            events=events,
            secret=secret,
            description="mlops-actions relay: alias moves to GitHub repository_dispatch",
        )
        return hook, "created"
    except Exception as error:
        text = str(error)
        hint = "check the tracking URI and credentials"
        if "not supported" in text.lower() or "NotImplemented" in type(error).__name__:
            hint = "MLflow keeps webhooks only in a SQL store: run the server on a database"
        elif "scheme" in text:
            hint = (
                "MLflow calls https URLs only: put the relay behind TLS, or start the MLflow "
                "server with MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https on a trusted network"
            )
        elif "private" in text.lower() or "resolve" in text.lower():
            hint = (
                "MLflow refuses private addresses unless the server sets "
                "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true"
            )
        raise ServiceError(
            f"MLflow at {redact(uri)} refused the webhook {name!r}: "
            f"{gha.log_safe(text.splitlines()[0] if text else type(error).__name__)}",
            hint,
        ) from None


def _all_webhooks(client: Any) -> list[Any]:
    hooks, token = [], None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        hooks.extend(page)
        token = page.token
        if not token:
            return hooks
