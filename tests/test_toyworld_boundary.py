"""toyworld is one data source among others: nothing outside `toyworld/` imports it
except `core/sources.py`, the interface a config reaches it through (prompt, SFT,
preference-annotation, instruction and gold-judge sources), and only when a config names
it. `tests/test_byod_smoke.py` runs the whole recipe with toyworld unimportable."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "sft", "reward", "rejection_sampling", "ppo", "gatt", "pipelines", "benchmarks"]
INTERFACE = REPO / "core" / "sources.py"


def toyworld_imports(path: Path) -> list[int]:
    """Line numbers of `import toyworld...` / `from toyworld... import` in a file."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "toyworld" for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "toyworld":
            lines.append(node.lineno)
    return lines


def test_only_the_source_interface_imports_toyworld():
    offenders = [f"{path.relative_to(REPO)}:{line}" for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
                 if path != INTERFACE for line in toyworld_imports(path)]
    assert offenders == [], f"toyworld imported outside core/sources.py: {offenders}"


def test_the_interface_imports_it_lazily():
    """core.sources imports toyworld only inside functions, so importing it loads nothing."""
    tree = ast.parse(INTERFACE.read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any(toyworld_imports_in(node) for node in top_level)
    assert toyworld_imports(INTERFACE), "the interface should be where toyworld is reached"


def toyworld_imports_in(node) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "toyworld" for alias in node.names)
    return (node.module or "").split(".")[0] == "toyworld"
