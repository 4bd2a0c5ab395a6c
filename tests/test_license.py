"""The license pyproject.toml declares is the one the repository ships (hatchling puts LICENSE
into the wheel's metadata by default)."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_license_file_matches_pyproject() -> None:
    declared = re.search(r'^license = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared
    assert declared[1] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert re.search(r"Apache License\s+Version 2\.0, January 2004", text)
    # The whole text, terms and appendix, not a stub pointing elsewhere.
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
