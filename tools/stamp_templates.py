"""Fill in the workflow templates' placeholders for one release of mlops-actions.

In the repository, the templates name the suite with a placeholder pin,

    uses: your-org/mlops-actions/actions/train@0000000000000000000000000000000000000000 # v1.x.y

because a commit cannot contain its own hash. The release workflow stamps a copy of them with
the repository and the released commit, and attaches it to the GitHub Release:

    python3 tools/stamp_templates.py --repository acme/mlops-actions \
        --sha <40 hex> --version v1.2.3 workflows-templates dist/workflows-templates

`--default-branch main` also fills in `$default-branch`, for templates copied by hand
(GitHub fills it in itself when a template comes from an organization's
.github/workflow-templates). With `--default-branch` alone, the pins stay placeholders: that is
the copy to run with act, whose --local-repository maps them to a working copy of the suite.
Standard library only: it runs on any runner's python3.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

OWNER = "your-org"
PLACEHOLDER_SHA = "0" * 40
PLACEHOLDER_VERSION = "v1.x.y"
PIN = re.compile(
    rf"(?P<lead>uses:\s+){re.escape(OWNER)}/mlops-actions(?P<path>(?:/actions/[a-z0-9-]+)?)"
    rf"@{PLACEHOLDER_SHA} # {re.escape(PLACEHOLDER_VERSION)}$",
    re.M,
)


class StampError(ValueError):
    pass


def stamp(
    text: str, repository: str = "", sha: str = "", version: str = "", default_branch: str = ""
) -> str:
    """The template with every placeholder pin (if `sha` is given) and $default-branch (if
    `default_branch` is given) filled in."""
    stamped = text
    if repository or sha or version:
        if not re.fullmatch(r"[A-Za-z0-9-]+/[A-Za-z0-9_.-]+", repository):
            raise StampError(f"--repository must be owner/name, got {repository!r}")
        if not re.fullmatch(r"[0-9a-f]{40}", sha) or sha == PLACEHOLDER_SHA:
            raise StampError(f"--sha must be a full 40-character commit hash, got {sha!r}")
        if not re.fullmatch(r"v\d+\.\d+\.\d+", version):
            raise StampError(f"--version must look like v1.2.3, got {version!r}")
        stamped = PIN.sub(
            lambda m: f"{m['lead']}{repository}{m['path']}@{sha} # {version}", stamped
        )
        # The header's notes about the placeholders give way to one about the pin.
        note = f"#   - Pinned to {repository} {version},\n#     commit {sha}.\n"
        stamped = _drop_bullets(stamped, OWNER, note)
        left = [line.strip() for line in stamped.splitlines() if PLACEHOLDER_SHA in line]
        if left:
            raise StampError(f"placeholder pins that do not have the expected form: {left}")
    if default_branch:
        if not re.fullmatch(r"[\w./-]+", default_branch):
            raise StampError(f"--default-branch must be a branch name, got {default_branch!r}")
        stamped = _drop_bullets(stamped, "$default-branch", "")
        stamped = stamped.replace("$default-branch", default_branch)
    return stamped


def _drop_bullets(text: str, needle: str, replacement: str) -> str:
    """Replace the header bullets (`#   - ` and its `#     ` lines) that mention `needle`."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    index = 0
    while index < len(lines):
        end = index + 1
        if lines[index].startswith("#   - "):
            while end < len(lines) and lines[end].startswith("#     "):
                end += 1
            if needle in "".join(lines[index:end]):
                out.append(replacement)
                replacement = ""
                index = end
                continue
        out.extend(lines[index:end])
        index = end
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", default="", help="owner/name of mlops-actions")
    parser.add_argument("--sha", default="", help="the released commit")
    parser.add_argument("--version", default="", help="the release tag, vX.Y.Z")
    parser.add_argument("--default-branch", default="", help="fill in $default-branch too")
    parser.add_argument("source", type=Path, help="the templates' directory")
    parser.add_argument("output", type=Path, help="where the stamped copies go")
    args = parser.parse_args(argv)
    if not (args.sha or args.default_branch):
        parser.error("give --repository, --sha and --version, or --default-branch, or all four")
    templates = sorted(args.source.glob("*.yml"))
    if not templates:
        print(f"error: no templates (*.yml) in {args.source}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        for template in templates:
            text = stamp(
                template.read_text(), args.repository, args.sha, args.version, args.default_branch
            )
            (args.output / template.name).write_text(text)
    except StampError as error:
        print(f"error: {template}: {error}", file=sys.stderr)
        return 2
    for properties in sorted(args.source.glob("*.properties.json")):
        shutil.copyfile(properties, args.output / properties.name)
    pinned = f"{args.repository}@{args.sha}" if args.sha else "pins left as placeholders"
    print(f"stamped {len(templates)} templates into {args.output}: {pinned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
