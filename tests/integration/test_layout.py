"""The code's shape: the core packages (everything but jobs/, the CLI, the pipeline driver
and the Serve deployments) import without Ray; modules and functions stay small; every test
file says what it covers."""
import ast
import glob
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CORE = ("events", "vectors", "segments", "recommend", "run", "readouts", "config")


def _modules(package: str) -> list[str]:
    files = glob.glob(os.path.join(ROOT, *package.split("."), "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(f, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                  for f in files)


def test_core_packages_import_without_ray():
    modules = [m for p in CORE for m in _modules(f"raypipe.{p}")]
    modules += ["raypipe.arrays", "raypipe.schema", "serve.service", "serve.settings"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _sources():
    for package in ("raypipe", "serve"):
        yield from glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)


def test_no_module_over_300_lines_and_no_function_over_60():
    long_modules, long_functions = [], []
    for path in _sources():
        with open(path) as f:
            text = f.read()
        name = os.path.relpath(path, ROOT)
        if text.count("\n") > 300:
            long_modules.append((name, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long_functions.append((name, node.name, length))
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_every_test_file_says_what_it_covers():
    for path in glob.glob(os.path.join(ROOT, "tests", "**", "test_*.py"), recursive=True):
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        assert doc and len(doc) > 20, f"{os.path.basename(path)} has no docstring"
