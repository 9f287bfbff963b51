"""The conda environments (not solvable here: no conda channels) checked against the code.

Every module that a rule's script imports, directly or through the dejitter modules it uses,
must be provided by that rule's conda environment.
"""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))

#: import name -> conda-forge (or pip) package name
PACKAGES = {
    "numpy": "numpy", "scipy": "scipy", "h5py": "h5py", "tifffile": "tifffile", "pandas": "pandas",
    "skimage": "scikit-image", "matplotlib": "matplotlib-base", "torch": "pytorch", "tqdm": "tqdm",
    "tomopy": "tomopy", "nxtomo": "nxtomo", "txrm2tiff": "txrm2tiff", "olefile": "olefile", "yaml": "pyyaml",
    "finufft": "finufft",
}


#: Imported only when the config asks for it (``backend: tomopy``/``auto`` finds it with importlib):
#: required in the environments of the rules that reconstruct, optional elsewhere.  finufft likewise:
#: imported only when an FBP runs on the CPU (the pixel-driven torch FBP where it is absent).
OPTIONAL = {"tomopy": {"mlem", "reproject", "register", "reconstruct", "reconstruct_uncorrected"},
            "finufft": {"reconstruct", "reconstruct_uncorrected"}}


def _rules():
    """(rule, conda env file, script file) for every rule that runs a script."""
    found = []
    for path in RULES:
        for block in re.split(r"\n(?=rule )", path.read_text()):
            name = re.match(r"rule (\w+):", block)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            if name and script:
                conda = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
                env = (path.parent / conda.group(1)).resolve() if conda else None
                found.append((name.group(1), env, (path.parent / script.group(1)).resolve()))
    return found


def _imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the dejitter package
                base = node.module or ""
                names.add("dejitter." + base if base else "dejitter")
                names.update(f"dejitter.{alias.name}" for alias in node.names if not base)
            elif node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(script):
    """Top-level third-party packages imported by a script and, transitively, by dejitter."""
    seen, todo, packages = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "dejitter":
                module = ROOT / "src" / Path(*name.split("."))
                for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                    if candidate.exists():
                        todo.append(candidate)
            elif top not in sys.stdlib_module_names:
                packages.add(top)
    return packages


def _env_packages(env):
    spec = yaml.safe_load(env.read_text())
    names = set()
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            names.update(re.split(r"[=<>!~ ]", p)[0] for p in dep.get("pip", []))
        else:
            names.add(re.split(r"[=<>!~ ]", dep)[0])
    return spec, names


@pytest.mark.parametrize("rule, env, script", _rules(), ids=lambda v: v if isinstance(v, str) else "")
def test_rule_env_provides_every_import(rule, env, script):
    assert env is not None, f"rule {rule} has no conda: environment"
    assert env.exists(), f"rule {rule}: {env} does not exist"
    _, provided = _env_packages(env)
    needed = {module: PACKAGES.get(module) for module in third_party_imports(script)
              if module not in OPTIONAL or rule in OPTIONAL[module]}
    unknown = sorted(m for m, p in needed.items() if p is None)
    assert not unknown, f"add the conda package of {unknown} to PACKAGES in this test"
    missing = sorted(p for p in needed.values() if p not in provided)
    assert not missing, f"rule {rule} ({script.name}) imports {missing}, not in {env.name}"


@pytest.mark.parametrize("env", sorted((ROOT / "workflow" / "envs").glob("*.yaml")) + [ROOT / "environment.yml"],
                         ids=lambda p: p.name)
def test_env_files_use_conda_forge_and_minor_pins(env):
    spec, _ = _env_packages(env)
    assert spec["channels"][0] == "conda-forge"
    for dep in spec["dependencies"]:
        if isinstance(dep, str) and dep != "pip":
            assert re.fullmatch(r"[\w.-]+=\d+\.\d+", dep), f"{env.name}: pin {dep!r} to a minor release (name=X.Y)"


def test_whole_workflow_env_covers_every_rule_env():
    _, whole = _env_packages(ROOT / "environment.yml")
    for env in (ROOT / "workflow" / "envs").glob("*.yaml"):
        _, names = _env_packages(env)
        assert names - {"python", "pip"} <= whole, f"{env.name} has packages missing from environment.yml"
