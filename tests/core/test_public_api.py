"""The public API is one table in ``parallel_tasks/__init__.py``: ``__all__``, the lazy-import table and the
imports type checkers read must name the same things, from the same modules."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import parallel_tasks


def type_checking_imports() -> dict[str, str]:
    """Name -> module of every ``from M import X as X`` under ``if TYPE_CHECKING:`` in the package's __init__."""
    tree = ast.parse(Path(parallel_tasks.__file__).read_text(encoding="utf-8"))
    (block,) = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    found: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None, ast.unparse(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name} is not re-exported as itself"
            assert alias.name not in found, f"{alias.name} is imported twice"
            found[alias.name] = node.module
    return found


def test_all_the_lazy_table_and_the_type_checking_imports_agree() -> None:
    lazy = parallel_tasks._EXPORTS
    assert type_checking_imports() == lazy
    assert sorted(parallel_tasks.__all__) == sorted([*lazy, "__version__"])
    assert len(parallel_tasks.__all__) == len(set(parallel_tasks.__all__))


def test_every_export_comes_from_its_module() -> None:
    for name, module in parallel_tasks._EXPORTS.items():
        assert getattr(parallel_tasks, name) is getattr(importlib.import_module(module), name), name


def test_no_bare_error_is_exported() -> None:
    assert "Error" not in parallel_tasks.__all__
    assert parallel_tasks.ErrorDetail.__name__ == "ErrorDetail" and not issubclass(
        parallel_tasks.ErrorDetail, Exception
    )


def test_the_client_path_does_not_import_prefect() -> None:
    code = (
        "import sys; from parallel_tasks import ParallelClient, AsyncParallelClient, check_task_run_input, "
        "ParallelSettings; from parallel_tasks import lineage; print(sorted(m for m in sys.modules if m == 'prefect'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
