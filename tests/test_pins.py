"""The third-party actions we pin run on Node 24 (GitHub retires the Node 20 runtime).

A test cannot reach GitHub, so the facts were checked by hand against each repository's git
history and recorded here:

    git rev-parse vX.Y.Z^{commit}                        # the pin's SHA is the tag's commit
    git show vX.Y.Z:action.yml | grep 'using:'           # runs.using: node24
    for t in $(git tag); do git show $t:action.yml ...   # the first release on node24

(checked 2026-12-01; actions/attest on 2026-12-05). A Dependabot bump to a newer release
passes; a pin older than the first Node 24 release, a pin whose SHA is not the verified tag's,
or a new third-party action without a row here fails.
"""

from __future__ import annotations

import re

from tests.test_workflows import ACTIONS, PINNED, TEMPLATES, WORKFLOWS, load, steps_of

# action -> (first release whose action.yml says `using: node24`, {verified tag: its commit})
NODE24 = {
    # v1 and v2 (as actions/attest-build-provenance's successor) ran on node20.
    "actions/attest": ("v3.0.0", {"v4.2.2": "1e69f48acb82d1966a394da916b4c1698aa569d6"}),
    "actions/cache": ("v5.0.0", {"v5.0.5": "27d5ce7f107fe9357f9df03efb73ab90386fccae"}),
    "actions/checkout": ("v5.0.0", {"v7.0.1": "3d3c42e5aac5ba805825da76410c181273ba90b1"}),
    "actions/setup-python": ("v6.0.0", {"v7.0.0": "5fda3b95a4ea91299a34e894583c3862153e4b97"}),
    # v5.x still ran on node20; 6.0.0's one breaking change was the move to node24.
    "aws-actions/configure-aws-credentials": (
        "v6.0.0",
        {"v6.2.3": "e6de054238d6b7531b4efff3b6587d9aade6a06c"},
    ),
}

# The Node 20 pins this repository had before; they must not come back.
RETIRED = {
    "0057852bfaa89a56745cba8c7296529d2fc39830",  # actions/cache v4.3.0
    "7474bc4690e29a8392af63c5b98e7449536d5c3a",  # aws-actions/configure-aws-credentials v4.3.1
}


def version(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tag.lstrip("v").split("."))


def pins() -> list[tuple[str, str, str, str]]:
    """(file, action, sha, version comment) for every third-party `uses:` in the repository."""
    found = []
    for path in [*TEMPLATES, *WORKFLOWS, *ACTIONS]:
        lines = path.read_text().splitlines()
        for step in steps_of(load(path)):
            match = PINNED.match(step.get("uses", ""))
            if not match or match["action"] == "your-org/mlops-actions":
                continue
            line = next(line for line in lines if f"uses: {step['uses']}" in line)
            comment = re.search(r"# (v\d+\.\d+\.\d+)$", line)
            assert comment, line
            found.append((path.name, match["action"], match["sha"], comment[1]))
    return found


def test_every_pinned_action_runs_on_node24() -> None:
    found = pins()
    assert {action for _, action, _, _ in found} >= {"actions/cache", "actions/checkout"}
    for where, action, sha, tag in found:
        assert action in NODE24, f"{where}: {action} has no verified row in NODE24"
        first, verified = NODE24[action]
        assert version(tag) >= version(first), f"{where}: {action} {tag} predates node24 ({first})"
        if tag in verified:
            assert sha == verified[tag], f"{where}: {action} {tag} is {verified[tag]}, not {sha}"
        assert sha not in RETIRED, f"{where}: {action}@{sha} is a retired Node 20 pin"
