"""Offline, strict validation of the Kubernetes manifests in the docs and in YAML files.

The validation itself is the package's (`mlops_actions.kube_schema`: unknown fields,
int-or-string, quantities, ObjectMeta, names, labels, duplicate keys), with the schemas it
ships (Deployment, Service, HorizontalPodAutoscaler, KServe's InferenceService, the Prometheus
Operator's PodMonitor) and, for the docs, KubeRay's RayCluster and RayJob from `schema/kuberay/`
(README there).

    python -m tests.k8s_validate docs/workflows.md          # the ```yaml blocks of a page
    python -m tests.k8s_validate out/kubernetes/*.yaml      # every document of YAML files

In Markdown, a manifest is checked when its API group has schemas here (others, such as a
GitHub workflow, are not manifests); in a YAML file, every document is.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops_actions import kube_schema
from mlops_actions.kube_schema import dotted, load_all, strict

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schema"
SCHEMAS: dict[tuple[str, str], Path] = {
    ("ray.io/v1", "RayCluster"): SCHEMA_DIR / "kuberay" / "ray.io_v1_raycluster.json",
    ("ray.io/v1", "RayJob"): SCHEMA_DIR / "kuberay" / "ray.io_v1_rayjob.json",
}
ALL = kube_schema.PACKAGED | kube_schema.SchemaSet(
    {key: path.read_text for key, path in SCHEMAS.items()}
)
# The API groups whose every manifest must have a schema here (others are not checked).
CHECKED_GROUPS = tuple(sorted(ALL.groups))

__all__ = ["dotted", "load_all", "main", "manifests", "problems", "strict", "yaml_blocks"]


def problems(manifest: Any) -> list[str]:
    """What is wrong with one manifest, each as '<field path>: <what>'; empty when valid."""
    return ALL.problems(manifest)


def yaml_blocks(markdown: str) -> Iterator[tuple[int, str]]:
    """Each ```yaml block of a Markdown text: the line its body starts on, and the body."""
    for match in re.finditer(r"^( *)```ya?ml\n(.*?)^\1```", markdown, re.M | re.S):
        body = "\n".join(
            line[len(match[1]) :] for line in match[2].splitlines()
        )  # a block in a list item is indented
        yield markdown.count("\n", 0, match.start()) + 2, body


def _is_manifest(document: Any) -> bool:
    if not isinstance(document, Mapping) or not {"apiVersion", "kind"} <= set(document):
        return False
    return str(document["apiVersion"]).rpartition("/")[0] in CHECKED_GROUPS


def manifests(markdown: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The Kubernetes manifests of a Markdown text's YAML blocks in the checked API groups."""
    for line, body in yaml_blocks(markdown):
        for document in load_all(body):
            if _is_manifest(document):
                yield line, dict(document)


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    text = path.read_text()
    if path.suffix == ".md":
        yield from manifests(text)
        return
    for document in load_all(text):
        if document is not None:
            yield 1, document


def main(argv: Sequence[str]) -> int:
    failed = checked = 0
    for name in argv:
        for line, manifest in _documents(Path(name)):
            checked += 1
            metadata = manifest.get("metadata") if isinstance(manifest, dict) else None
            title = f"{manifest.get('kind') if isinstance(manifest, dict) else '?'} " + str(
                metadata.get("name") if isinstance(metadata, dict) else None
            )
            for problem in problems(manifest):
                failed += 1
                print(f"{name}:{line}: {title}: {problem}")
    print(f"k8s_validate: {checked} manifest(s), {failed} problem(s)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
