"""The package's layout rules (docs/architecture.md, "Layout"): import contracts, plug-in tables, doc pointers."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_import_contracts_hold():
    """import-linter's contracts of pyproject.toml: stages import downward only, independent stages stay apart."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_input_kind_has_one_instrument_family():
    from mcmargin import instruments
    from mcmargin.inputs.book import INSTRUMENT_KINDS

    assert set(INSTRUMENT_KINDS) == {"spot", "perpetual", "future", "option"}
    assert set(instruments.FAMILIES) == set(INSTRUMENT_KINDS)
    for kind, family in instruments.FAMILIES.items():
        assert kind in family.KINDS and callable(family.row_problems)


def test_doc_pointers_resolve():
    """Every 'docs/NAME.md, section N' or '"Heading"' a docstring cites exists in that document."""
    docs = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}
    cited = 0
    for path in list((ROOT / "mcmargin").rglob("*.py")) + list((ROOT / "jobs").rglob("*.py")):
        text = path.read_text()
        for doc in re.findall(r"docs/([a-z_\-]+\.md)", text):
            assert doc in docs, f"{path.relative_to(ROOT)} cites docs/{doc}, which does not exist"
        for doc, number in re.findall(r"docs/([a-z_\-]+\.md),?\s+section\s+(\d+)", text):
            cited += 1
            assert re.search(rf"^#+\s+{number}[.\s]", docs[doc], re.M), \
                f"{path.relative_to(ROOT)} cites docs/{doc} section {number}, which it does not have"
        for doc, heading in re.findall(r"docs/([a-z_\-]+\.md),?\s+\"([^\"]+)\"", text):
            cited += 1
            assert re.search(rf"^#+\s+.*{re.escape(heading)}", docs[doc], re.M), \
                f"{path.relative_to(ROOT)} cites docs/{doc} \"{heading}\", which it does not have"
        for doc, number in re.findall(r"docs/([a-z_\-]+\.md),?\s+(?:section\s+)?H\.(\d+)", text):
            cited += 1
            assert re.search(rf"^#+\s+H\.{number}\s", docs[doc], re.M), \
                f"{path.relative_to(ROOT)} cites docs/{doc} H.{number}, which it does not have"
    assert cited > 15


def test_module_pointers_in_docstrings_resolve():
    """Every :mod:`mcmargin.x.y` a docstring names is a module of the package (renamed modules leave none behind)."""
    import importlib.util

    named = set()
    for path in list((ROOT / "mcmargin").rglob("*.py")) + list((ROOT / "jobs").rglob("*.py")):
        named |= set(re.findall(r":mod:`(mcmargin(?:\.[a-z_]+)*)`", path.read_text()))
    assert len(named) > 10
    missing = sorted(name for name in named if importlib.util.find_spec(name) is None)
    assert not missing, missing
