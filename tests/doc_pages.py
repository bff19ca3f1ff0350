"""The commands the README and the pages of docs/ show: what the tests that run or check a page
read from it."""

from __future__ import annotations

import re


def bash_blocks(text: str) -> list[list[str]]:
    """The command lines of each ```` ```bash ```` block of the Markdown ``text``, in order: a
    line continued with ``\\`` joined to the next, whole-line comments and blank lines dropped, a
    trailing ``  # comment`` stripped."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)
    return [[line.split("  #")[0].strip() for line in block.replace("\\\n", " ").splitlines()
             if line.strip() and not line.lstrip().startswith("#")] for block in blocks]
