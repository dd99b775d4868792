"""The README's quick start and .ci/run agree: CI runs exactly the test
command the README gives, and the README's main-job command names files
that exist.  (Project consistency, not asyncio behaviour: no loop fixture.)
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ci_test_command():
    text = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"^TEST_CMD='(.*)'$", text, re.MULTILINE)
    assert m, ".ci/run defines no TEST_CMD"
    return m.group(1)


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", quick, re.DOTALL)


def test_quick_start_is_two_commands():
    assert len(_readme_commands()) == 2, _readme_commands()


def test_ci_runs_the_readme_test_command():
    assert _readme_commands()[1].strip() == _ci_test_command()


def test_main_job_script_exists():
    main_job = _readme_commands()[0]
    for path in re.findall(r"\b(\S+\.py)\b", main_job):
        assert (ROOT / path).is_file(), path
