"""`key=value` pairs as users type them into an action input: parameters, tags, build args.

The rule, also in the README:

- Several lines: each line is one pair. Everything after the first '=' is the value, commas
  and '=' included: `drop=rooms,area_m2` on its own line is one pair.
- One line: pairs may also be separated by commas, `alpha=0.5,l1_ratio=0.1`. A comma starts a
  new pair only when what follows it is `key=`, so `drop=rooms,area_m2` is one pair there too.
  For a value holding `,key=`, write one pair per line (or a JSON object).
"""

from __future__ import annotations

import re

from .errors import ConfigError

# A comma that starts a new pair on a one-line input: followed by a key and '='. Keys are
# what MLflow accepts in parameter and tag names (letters, digits, _ - . / and spaces inside).
_PAIR_COMMA = re.compile(r",\s*(?=[A-Za-z_][\w./-]*(?: [\w./-]+)*\s*=)")
HINT = "write one key=value pair per line (values may hold commas), or a JSON object"


def parse_pairs(text: str, where: str) -> dict[str, str]:
    """The pairs in `text`, in order; a ConfigError naming `where` for a piece without '='."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pieces = lines if len(lines) > 1 else [p for line in lines for p in _PAIR_COMMA.split(line)]
    pairs: dict[str, str] = {}
    for piece in (p.strip() for p in pieces):
        key, sep, value = piece.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"{where} must be key=value pairs or a JSON object, got {piece!r}", HINT
            )
        pairs[key.strip()] = value.strip()
    return pairs
