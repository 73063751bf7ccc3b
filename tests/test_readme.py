"""The README is the user's first contact: its commands and its example must run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_main_job_and_the_test_command() -> None:
    bash = _blocks("bash")
    assert len(bash) >= 2, "the README must open with two bash commands"
    main_job, tests = bash[0].strip(), bash[1].strip()
    assert main_job.startswith("pip install -e .")
    assert "edge-colbert index" in main_job and "edge-colbert search" in main_job
    assert tests == 'pip install -e ".[test]" && python -m pytest'
    # Nothing but the two commands comes before them.
    assert README.index(bash[0]) < README.index("## ")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = _blocks("bash")[1].strip().split("&&")[-1].strip()
    assert test_command in ci
    assert 'pip install -q -e ".[dev]"' in ci  # dev includes the README's [test] extra


def test_main_job_indexes_and_searches_the_project_docs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first command, run for real with the bundled model (without the pip install):
    its question about power loss is answered from the reliability page."""
    from edge_colbert.cli import main

    main_job = _blocks("bash")[0].strip()
    steps = [shlex.split(step.strip()) for step in main_job.split("&&")[1:]]
    db = tmp_path / "demo.db"
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        for argv in steps:
            assert argv[0] == "edge-colbert"
            args = [str(db) if a == "demo.db" else a for a in argv[1:]]
            assert main(args) == 0, f"`{' '.join(argv)}` failed"
    finally:
        os.chdir(cwd)
    first = [line for line in capsys.readouterr().out.splitlines() if re.match(r" *1\. ", line)]
    assert len(first) == 1 and "docs/reliability.md" in first[0], first


def test_python_example_runs_as_written(tmp_path: Path) -> None:
    example = _blocks("python")[0]
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("colbert "), lines  # the ColBERT sentence answers the query first
    assert lines[-1] == "1 True"
    assert (tmp_path / "notes.db").is_file()


@pytest.mark.parametrize("name", ["CHANGELOG.md", "docs/cli.md", "docs/model-folder.md"])
def test_linked_docs_exist(name: str) -> None:
    assert (ROOT / name).is_file()
