"""The command line's modules import in one direction: main imports the command
modules, they import parsing (and render), and none reaches back up."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

import ferry.cli

CLI_DIR = pathlib.Path(ferry.cli.__file__).parent
MODULES = sorted(p.stem for p in CLI_DIR.glob("*.py") if p.stem != "__init__")


def _cli_imports(name: str) -> set[str]:
    """The ferry.cli modules that `name` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse((CLI_DIR / f"{name}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "ferry.cli":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ferry.cli."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("ferry.cli.")}
    return found & set(MODULES)


def test_there_are_command_modules_to_check():
    assert {"main", "parsing", "containers", "checkpoints", "images", "networks"} <= set(MODULES)


def test_no_cli_module_imports_one_that_imports_it():
    graph = {name: _cli_imports(name) for name in MODULES}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(step == goal or (step not in seen and reaches(step, goal, seen | {step}))
                   for step in graph[start])
    circles = [name for name in MODULES if reaches(name, name, set())]
    assert circles == [], {name: sorted(graph[name]) for name in circles}
    assert all("main" not in imported for imported in graph.values())


@pytest.mark.parametrize("name", MODULES)
def test_each_module_imports_alone_first_in_a_fresh_interpreter(name):
    """Imported first, each works, and a command module's commands build without main."""
    code = f"""
        import json, sys
        import ferry.cli.{name} as module
        if hasattr(module, "register") and {name!r} != "main":
            from ferry.cli.parsing import Parser, subcommands
            commands = subcommands(Parser(prog="ferry"), "commands")
            module.register(commands) if {name!r} == "checkpoints" else module.register(commands, None)
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("ferry.cli."))))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    if name != "main":
        assert "ferry.cli.main" not in loaded
