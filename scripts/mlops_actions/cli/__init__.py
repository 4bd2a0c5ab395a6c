"""`mlops-actions <verb>`: parse, resolve the config, call the core, report, map errors to exits.

Every option can also come from the action input of the same name (`INPUT_<NAME>`), so the
composite actions only map inputs to environment variables and exec this command.

The package: `options` (every verb's options), `common` (config, values, outputs, errors),
`monitoring` (the stage hook), and one module per verb family; this module holds the verb
table and `main`, the console script.
"""

from __future__ import annotations

import argparse
import os
import traceback
from collections.abc import Callable, Sequence

from .. import __version__, gha, telemetry
from ..errors import EXIT_INTERNAL, EXIT_OK, MlopsError
from .build_push import cmd_build_push
from .common import emit, load_config, mask_url_credentials, report_error
from .config_cmds import cmd_config_show, cmd_config_validate
from .dvc_pull import cmd_dvc_pull
from .evaluate import cmd_evaluate, run_gate
from .manifests_cmd import MANIFEST_OPTIONS, cmd_manifests
from .monitoring import MONITORED_VERBS, StageRun, _monitoring_config, _stage_of, monitored
from .options import (
    ALIAS_OPTIONS,
    CONFIG_OPTION,
    DATA_OPTIONS,
    GATE_OPTIONS,
    IMAGE_OPTIONS,
    MLFLOW_OPTIONS,
    PROMOTE_OPTIONS,
    PUSH_OPTIONS,
    ROLLBACK_OPTIONS,
    RUN_OPTIONS,
    TRAIN_OPTIONS,
    Option,
    Parser,
    _add_options,
)
from .pipeline import RUN_EXIT_CODES, cmd_run
from .push_metrics import cmd_push_metrics
from .registry_cmds import (
    cmd_promote,
    cmd_registry_history,
    cmd_registry_unlock,
    cmd_rollback,
    run_promote,
)
from .relay_cmds import add_relay_verbs
from .training import cmd_train, run_train
from .verify_image import VERIFY_OPTIONS, cmd_verify_image

__all__ = [
    "MONITORED_VERBS",
    "Option",
    "StageRun",
    "build_parser",
    "emit",
    "load_config",
    "main",
    "monitored",
    "report_error",
    "run_gate",
    "run_promote",
    "run_train",
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mlops-actions",
        description="Carry a model from DVC data to a tracked MLflow run, locally or in CI.",
    )
    parser.add_argument("--version", action="version", version=f"mlops-actions {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        text: str,
        options: Sequence[Option],
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        _add_options(sub, (CONFIG_OPTION, *options))
        sub.set_defaults(handler=handler)
        return sub

    pull = verb("dvc-pull", cmd_dvc_pull, "pull the DVC data the commit points to", DATA_OPTIONS)
    pull.add_argument(
        "--plan",
        action="store_true",
        help="only check the remote and print the fingerprint and cache path",
    )
    training = verb(
        "train",
        cmd_train,
        "run training inside a tagged MLflow run",
        (*MLFLOW_OPTIONS, *TRAIN_OPTIONS),
    )
    training.add_argument(
        "--stop-job",
        metavar="JOB_ID",
        help="train.backend ray: stop this Ray job (a step's ray-job-id, e.g. after its runner "
        "died) and close its MLflow run KILLED; nothing is trained",
    )
    verb(
        "evaluate",
        cmd_evaluate,
        "gate: may the candidate replace the champion? exit 0 passed, 1 rejected",
        (*MLFLOW_OPTIONS, *GATE_OPTIONS),
    )
    verb(
        "build-push",
        cmd_build_push,
        "build a serving image for a model, smoke-test it, push it, report the digest",
        (*MLFLOW_OPTIONS, *IMAGE_OPTIONS, Option("registry-password", "(use REGISTRY_PASSWORD)")),
    )
    verifying = verb(
        "verify-image",
        cmd_verify_image,
        "check a pushed image's SBOM and provenance: present, parsed, naming its digest and "
        "the model version it serves; exit 0 or 1 naming the failed check",
        VERIFY_OPTIONS,
    )
    verifying.add_argument("image", help="the image by digest: <repository>@sha256:<hex>")
    verifying.add_argument("--json", action="store_true", help="print the checks as JSON")
    generating = verb(
        "manifests",
        cmd_manifests,
        "write the Kubernetes (Deployment, Service, HPA, PodMonitor) and KServe "
        "(InferenceService) manifests that deploy a pushed image by digest, validated offline",
        MANIFEST_OPTIONS,
    )
    generating.add_argument(
        "--stdout",
        action="store_true",
        help="print one target's manifests as one YAML stream (kubectl apply -f -) instead of "
        "writing files",
    )
    verb(
        "promote",
        cmd_promote,
        "register the candidate and move an alias to it, safely and with history",
        (*MLFLOW_OPTIONS, *PROMOTE_OPTIONS),
    )
    verb(
        "rollback",
        cmd_rollback,
        "move an alias back to its previous holder (or --to-version)",
        (*MLFLOW_OPTIONS, *ROLLBACK_OPTIONS),
    )
    registry_parser = verbs.add_parser("registry", help="inspect the registry's alias history")
    registry_verbs = registry_parser.add_subparsers(
        dest="registry_verb", required=True, metavar="ACTION"
    )
    history = registry_verbs.add_parser("history", help="the moves of an alias, oldest first")
    _add_options(history, (CONFIG_OPTION, *MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=cmd_registry_history)
    unlock = registry_verbs.add_parser("unlock", help="remove a lock a crashed promotion left")
    _add_options(unlock, (CONFIG_OPTION, *MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    unlock.set_defaults(handler=cmd_registry_unlock)
    add_relay_verbs(verbs, CONFIG_OPTION, _add_options)
    pushing = verb(
        "push-metrics",
        cmd_push_metrics,
        "push a stage's outcome and extra gauges to a Prometheus Pushgateway",
        PUSH_OPTIONS,
    )
    pushing.add_argument(
        "--metric",
        action="append",
        metavar="NAME=VALUE",
        help="an extra gauge; repeat for several",
    )
    pipeline = verb(
        "run",
        cmd_run,
        "run the pipeline stages locally, in order: dvc-pull, train, evaluate, promote",
        RUN_OPTIONS,
    )
    pipeline.epilog = RUN_EXIT_CODES
    pipeline.formatter_class = argparse.RawDescriptionHelpFormatter
    version = verbs.add_parser("version", help="print the version")
    version.set_defaults(handler=lambda _args: print(__version__) or EXIT_OK)

    config = verbs.add_parser("config", help="check or show mlops.yaml")
    config_verbs = config.add_subparsers(dest="config_verb", required=True, metavar="ACTION")
    validate = config_verbs.add_parser("validate", help="validate mlops.yaml against the schema")
    _add_options(validate, (CONFIG_OPTION,))
    validate.set_defaults(handler=cmd_config_validate)
    show = config_verbs.add_parser("show", help="print the effective config and its sources")
    _add_options(show, (CONFIG_OPTION, *RUN_OPTIONS))
    show.set_defaults(handler=cmd_config_show)
    return parser


def _prepare_environment(verb: str) -> None:
    """Process-wide settings for the clients, before any of them is imported."""
    from ..tracking import HTTP_RETRY_DEFAULTS, REGISTRY_RETRY_DEFAULTS

    moves_alias = verb in {"promote", "rollback"}
    for name, value in (REGISTRY_RETRY_DEFAULTS if moves_alias else HTTP_RETRY_DEFAULTS).items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # no usage reports from CI machines
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _run_verb(args: argparse.Namespace) -> int:
    """The verb's handler, monitored as a stage when it is one."""
    stage = _stage_of(args)
    if stage is None:
        code: int = args.handler(args)
        return code
    with monitored(stage, lambda: _monitoring_config(args)) as run:
        run.exit_code = args.handler(args)
    return run.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    telemetry.disable_by_default(os.environ)  # before anything imports mlflow: see telemetry.py
    gha.mask_secret_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    mask_url_credentials(args)
    _prepare_environment(str(args.verb))
    try:
        return _run_verb(args)
    except MlopsError as error:
        report_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        gha.annotate("error", "interrupted", title="mlops-actions")
        return 130
    except Exception:
        traceback.print_exc()
        gha.annotate(
            "error",
            "internal error in mlops-actions (a bug): the traceback is above; please report it",
            title="internal error",
        )
        return EXIT_INTERNAL
