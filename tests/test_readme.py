"""The README's results block is what `make readme` writes from the run it names."""

import pytest

from detnas.io import load_json
from detnas.report.readme import BEGIN, END, readme_block, write_readme


def test_readme_block_is_written_from_the_kept_tables(repo_root):
    tables = load_json(repo_root / "docs/results/tables.json")
    text = (repo_root / "README.md").read_text()
    block = text[text.index(BEGIN): text.index(END) + len(END)]
    assert block == readme_block(tables)
    assert tables["provenance"]["report_git_commit"] in block
    for table in tables["tables"].values():
        for row in table["rows"]:
            assert f"| {row['name']} |" in block


def test_write_readme_replaces_only_the_block(repo_root, tmp_path):
    tables = repo_root / "docs/results/tables.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    write_readme(tables, readme)
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\nafter\n")
    assert "old figures" not in text and readme_block(load_json(tables)) in text
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="README.md: no results block"):
        write_readme(tables, readme)
