"""Running a benchmark against another git ref in the same session, side by side.

``checkout(ref)`` makes (once) a detached worktree of ``ref`` under ``var/bench-refs/<sha>``:
its own data (the embedded servers keep theirs in its ``var/``) and its own virtualenv (made with
``make``'s recipe: pip install of that ref's ``requirements-dev.txt``), except when the ref pins
exactly the requirements of this checkout, whose virtualenv then serves both.
``alternate(...)`` runs the two scripts in turn, the ref first, so that both meet the same
machine: a load that comes and goes during the run weighs on both.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def checkout(ref: str) -> tuple[Path, str]:
    """(worktree of ``ref``, the python that runs it)."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    tree = ROOT / "var" / "bench-refs" / sha[:12]
    if not (tree / ".git").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", "--force", str(tree), sha)
    same = all((tree / name).read_bytes() == (ROOT / name).read_bytes() for name in REQUIREMENTS)
    if same:
        return tree, sys.executable
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", "requirements-dev.txt"],
            cwd=tree,
            check=True,
        )
    return tree, str(python)


def run(python: str, cwd: Path, script: str, args: list[str], env: dict) -> str:
    """One run of ``script`` (relative to ``cwd``); its output, echoed as it comes."""
    process = subprocess.Popen(
        [python, script, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        print("    " + line, end="", flush=True)
        lines.append(line)
    if process.wait() != 0:
        raise SystemExit(f"{script} failed in {cwd} (exit {process.returncode})")
    return "".join(lines)


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else float("nan")
