from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_actions import config
from mlops_actions.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlops.yaml"
    path.write_text(text)
    return path


def test_precedence_input_over_environment_over_file_over_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mlflow:\n  tracking_uri: http://file\n  experiment: from-file\n"
        "data:\n  jobs: 2\n  remote: file-remote\n",
    )
    env = {"MLFLOW_TRACKING_URI": "http://env", "MLOPS_DATA_JOBS": "3"}
    inputs = {"mlflow.tracking_uri": ("tracking-uri", "http://input")}
    cfg = config.resolve(config_path=path, environ=env, inputs=inputs)
    assert cfg.get("mlflow.tracking_uri") == "http://input"
    assert cfg.source("mlflow.tracking_uri") == "input tracking-uri"
    assert cfg.get("data.jobs") == 3
    assert cfg.source("data.jobs") == "environment MLOPS_DATA_JOBS"
    assert cfg.get("mlflow.experiment") == "from-file"
    assert cfg.source("mlflow.experiment") == "file mlops.yaml"
    assert cfg.get("data.repo") == "."
    assert cfg.source("data.repo") == "default"
    rendered = cfg.render()
    assert 'tracking_uri: "http://input"  # input tracking-uri' in rendered
    assert "jobs: 3  # environment MLOPS_DATA_JOBS" in rendered


def test_command_input_replaces_a_project_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  project:\n    uri: .\n    parameters: {C: 1}\n")
    cfg = config.resolve(
        config_path=path, environ={}, inputs={"train.command": ("command", "python train.py")}
    )
    assert cfg.get("train.command") == "python train.py"
    assert cfg.get("train.project") is None


def test_missing_default_file_is_an_empty_config(tmp_path: Path) -> None:
    cfg = config.resolve(config_path=tmp_path / "mlops.yaml", environ={})
    assert cfg.path is None
    assert cfg.get("data.targets") == []


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.resolve(config_path=tmp_path / "other.yaml", environ={}, require_file=True)


@pytest.mark.parametrize("require_file", [True, False])
def test_a_directory_in_place_of_the_file_is_named_as_such(
    tmp_path: Path, require_file: bool
) -> None:
    """--config /tmp, or a directory called mlops.yaml, is neither ignored nor 'missing'."""
    (tmp_path / "mlops.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"mlops\.yaml is not a file"):
        config.resolve(config_path=tmp_path / "mlops.yaml", environ={}, require_file=require_file)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "mlflow:\n  trackinguri: x\n",
            r"\$\.mlflow\.trackinguri: unknown key \(did you mean 'tracking_uri'\?\)",
        ),
        (
            "data:\n  jobs: four\n",
            r"mlops\.yaml:2: \$\.data\.jobs: expected integer, got str 'four'",
        ),
        ("data:\n  targets: data.csv\n", r"\$\.data\.targets: expected array"),
        (
            "train:\n  command: a\n  project: {uri: .}\n",
            r"\$\.train: set either 'command' or 'project'",
        ),
        (
            "train:\n  project:\n    env_manager: pip\n",
            r"'pip' is not one of 'local', 'virtualenv'",
        ),
        ("version: 2\n", r"\$\.version: 2 is not one of 1"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("data: [unclosed\n", r"not valid YAML"),
        (
            "surprise: 1\n",
            r"\$\.surprise: unknown key; allowed here: "
            r"data, deploy, gate, image, mlflow, model, monitoring, promote, train",
        ),
    ],
)
def test_bad_files_name_the_path(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        config.resolve(config_path=write(tmp_path, text), environ={})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  jobs: 0\nmlflow:\n  experimnt: x\n")
    with pytest.raises(ConfigError) as caught:
        config.resolve(config_path=path, environ={})
    assert "$.data.jobs" in caught.value.message
    assert "$.mlflow.experimnt" in caught.value.message


def test_bad_input_and_environment_values_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input 'jobs' must be a whole number"):
        config.resolve(config_path=None, environ={}, inputs={"data.jobs": ("jobs", "many")})
    with pytest.raises(ConfigError, match="environment variable MLOPS_DATA_JOBS"):
        config.resolve(config_path=None, environ={"MLOPS_DATA_JOBS": "x"})
    with pytest.raises(ConfigError, match=r"\$\.data\.jobs \(from input jobs\)"):
        config.resolve(config_path=None, environ={}, inputs={"data.jobs": ("jobs", "0")})


def test_inputs_are_coerced_by_schema_type() -> None:
    cfg = config.resolve(
        config_path=None,
        environ={},
        inputs={
            "data.targets": ("targets", "a.dvc, b.dvc\nc.dvc"),
            "train.project.parameters": ("parameters", "C=0.5\nmax_iter=10"),
            "train.tags": ("tags", '{"team": "x"}'),
        },
    )
    assert cfg.get("data.targets") == ["a.dvc", "b.dvc", "c.dvc"]
    assert cfg.get("train.project.parameters") == {"C": "0.5", "max_iter": "10"}
    assert cfg.get("train.tags") == {"team": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        config.resolve(
            config_path=None, environ={}, inputs={"train.tags": ("tags", "no-equals-sign")}
        )


def test_schema_at_the_stable_path_is_the_shipped_one() -> None:
    stable = json.loads((ROOT / "schema" / "mlops.schema.json").read_text())
    assert stable == config.load_schema()


def test_example_config_is_valid() -> None:
    path = ROOT / "examples" / "iris" / "mlops.yaml"
    assert config.read_file(path)["model"]["name"] == "iris-classifier"


def test_input_tags_and_parameters_add_to_those_in_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train:\n  tags: {team: a, stage: dev}\n  project: {uri: ., parameters: {C: 1, seed: 7}}\n",
    )
    cfg = config.resolve(
        config_path=path,
        environ={},
        inputs={
            "train.tags": ("tags", "stage=prod"),
            "train.project.parameters": ("parameters", "C=0.5"),
        },
    )
    assert cfg.get("train.tags") == {"team": "a", "stage": "prod"}
    assert cfg.get("train.project.parameters") == {"C": "0.5", "seed": 7}
    assert cfg.source("train.tags.stage") == "input tags"
    assert cfg.source("train.tags.team") == "file mlops.yaml"


def test_map_keys_with_dots_stay_whole_keys(tmp_path: Path) -> None:
    """A tag, build argument or label such as app.kubernetes.io/part-of is one key, not a
    path: it merges with the inputs' and the environment's by its whole name."""
    path = write(
        tmp_path,
        "train:\n  tags: {mlflow.note: a}\nimage:\n  build_args: {PIP.INDEX: x}\n"
        "deploy:\n  labels: {example.com/team: ml}\n",
    )
    cfg = config.resolve(
        config_path=path,
        environ={"MLOPS_DEPLOY_LABELS": "example.com/tier=gold"},
        inputs={"train.tags": ("tags", "team.name=ml")},
    )
    assert cfg.get("train.tags") == {"mlflow.note": "a", "team.name": "ml"}
    assert cfg.get("image.build_args") == {"PIP.INDEX": "x"}
    assert cfg.get("deploy.labels") == {"example.com/team": "ml", "example.com/tier": "gold"}


# ----------------------------------------------------------------------------- YAML limits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "version: 1\ndata:\n  jobs: 2\nversion: 1\n",
            r"mlops\.yaml:4: duplicate key \$\.version \(first set at line 1\)",
        ),
        (
            "gate:\n  history: 3\n  advisory: true\n  history: 5\n",
            r"mlops\.yaml:4: duplicate key \$\.gate\.history \(first set at line 2\)",
        ),
        (
            "gate:\n  rules:\n    - metric: a\n      direction: higher\n"
            "    - {metric: b, direction: lower, metric: c}\n",
            r"mlops\.yaml:5: duplicate key \$\.gate\.rules\[1\]\.metric \(first set at line 5\)",
        ),
    ],
)
def test_duplicate_keys_name_both_lines(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        config.resolve(config_path=write(tmp_path, text), environ={})
    assert caught.value.line == int(expected.split(":")[1])  # type: ignore[attr-defined]


def test_duplicate_keys_in_the_rules_input_are_an_error() -> None:
    rules = "- metric: accuracy\n  direction: higher\n  threshold: 0.8\n  threshold: 0.9\n"
    with pytest.raises(
        ConfigError, match=r"input 'rules', line 4: duplicate key \$\[0\]\.threshold"
    ):
        config.resolve(config_path=None, environ={}, inputs={"gate.rules": ("rules", rules)})
    as_json = '[{"metric": "accuracy", "direction": "higher", "direction": "lower"}]'
    with pytest.raises(ConfigError, match=r"line 1: duplicate key \$\[0\]\.direction"):
        config.resolve(config_path=None, environ={}, inputs={"gate.rules": ("rules", as_json)})


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gate:\n  rules:\n"
        "    - &accuracy {metric: accuracy, direction: higher, threshold: 0.8}\n"
        "    - <<: *accuracy\n      metric: f1\n"  # overriding a merged key is no duplicate
        "train:\n  tags: &tags {team: a}\n"
        "  project: {uri: ., parameters: *tags}\n",
    )
    cfg = config.resolve(config_path=path, environ={})
    assert cfg.get("gate.rules")[1] == {"metric": "f1", "direction": "higher", "threshold": 0.8}
    assert cfg.get("train.project.parameters") == {"team": "a"}


def billion_laughs(levels: int) -> str:
    lines = ["version: 1", "train:", "  tags:", "    a: &a [lol, lol, lol, lol, lol, lol, lol]"]
    for previous, name in zip("abcdefghij", "bcdefghijk"[: levels - 1], strict=False):
        lines.append(f"    {name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(30)  # it took 44 s and 1.1 GB before the bound
def test_an_alias_bomb_is_refused_at_its_line(tmp_path: Path) -> None:
    from tests.conftest import assert_one_line_error, clean_env, run_cli

    path = write(tmp_path, billion_laughs(7))
    with pytest.raises(ConfigError, match=r"mlops\.yaml:9: the document expands to more than"):
        config.resolve(config_path=path, environ={})
    validated = run_cli(["config", "validate"], tmp_path, clean_env(tmp_path), timeout=60)
    assert validated.returncode == 2
    assert_one_line_error(validated, "mlops.yaml:9", "100,000 nodes")
    with pytest.raises(ConfigError, match="an alias refers to a node that holds it"):
        config.resolve(config_path=write(tmp_path, "train:\n  tags: &t {a: *t}\n"), environ={})


def test_a_config_over_the_size_limit_is_refused_with_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n" + "# padding\n" * 120_000)  # 1.2 MB of comments
    with pytest.raises(ConfigError, match=r"mlops\.yaml is larger than 1 MiB \(1,048,576 bytes\)"):
        config.resolve(config_path=path, environ={})
    rules = "[" + "{metric: a, direction: higher}, " * 40_000 + "]"
    with pytest.raises(ConfigError, match="input 'rules' is larger than 1 MiB"):
        config.resolve(config_path=None, environ={}, inputs={"gate.rules": ("rules", rules)})
