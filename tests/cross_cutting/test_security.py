"""Nothing is evaluated from strings, and every checkpoint is loaded with ``weights_only=True``."""
import ast

import pytest

from helpers.paths import PACKAGE

SOURCES = sorted(PACKAGE.rglob("*.py"))


def problems(source: str) -> list[str]:
    """Calls that evaluate strings or unpickle arbitrary objects, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile", "__import__"):  # not model.eval()
            found.append(f"{f.id}() at line {node.lineno}")
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            owner, name = f.value.id, f.attr
            if owner in ("pickle", "marshal", "dill") and name in ("load", "loads"):
                found.append(f"{owner}.{name} at line {node.lineno}")
            if owner == "yaml" and name == "load":
                found.append(f"yaml.load at line {node.lineno} (use yaml.safe_load)")
            if owner == "torch" and name == "load":
                flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    found.append(f"torch.load without weights_only=True at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_package_never_evaluates_strings_or_unpickles_objects(path):
    assert problems(path.read_text()) == []


def test_the_scanner_finds_what_it_looks_for():
    bad = "eval(s)\nexec(s)\npickle.loads(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\nyaml.load(t)\n"
    assert len(problems(bad)) == 6
    assert problems("model.eval()\ntorch.load(p, weights_only=True)\nyaml.safe_load(t)\n") == []
    assert len(SOURCES) > 20 and any(p.name == "cache.py" for p in SOURCES)
