"""README's test command and .ci/run stay identical, and README links only inside the repository."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = ("python3 -m venv .venv-test && .venv-test/bin/pip install '.[test]' && "
                ".venv-test/bin/python -m pytest -n auto -q -rs")


def test_ci_runs_exactly_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"\n    {TEST_COMMAND}\n" in readme
    assert ci.rstrip().splitlines()[-1] == TEST_COMMAND


def test_readme_and_docs_link_only_inside_the_repository():
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = doc.read_text()
        assert "../" not in text, f"{doc.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#]+)", text):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
