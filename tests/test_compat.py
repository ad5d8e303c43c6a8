"""compat: the per-group verdicts doctor shows, on the installed FastDeploy's source (never imported)."""
import sys

import pytest

from fastdeploy_cudagraph_ext import compat, fd_facts


@pytest.mark.standin
def test_installed_facts_read_the_installed_source_without_importing_it():
    for name in [n for n in sys.modules if n == "fastdeploy" or n.startswith("fastdeploy.")]:
        del sys.modules[name]
    facts = compat.installed_facts()
    assert set(facts) == set(compat.TARGET_MODULES)
    assert "fastdeploy" not in sys.modules
    assert {v.group: v.verdict for v in compat.group_verdicts(facts)} == {
        "capture_stream": "applies", "mtp_sizing": "applies", "deepep_mixed": "applies"}


def test_without_fastdeploy_there_are_no_facts_and_every_group_is_refused(monkeypatch):
    monkeypatch.setattr(fd_facts, "installed_root", lambda: None)
    assert compat.installed_facts() == {}
    assert {v.verdict for v in compat.group_verdicts({})} == {"refused"}
