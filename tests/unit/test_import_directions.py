"""Which package may import which, read from the source (every import, function-level ones included): the server
never reaches into the client, the serving core into no transport, the trainer into neither side, common into none
(tests/system/test_packaging.py proves the installed wheel, and that the serving core imports without TensorFlow)."""

from __future__ import annotations

import ast

from conftest import ROOT


def test_the_server_imports_nothing_from_the_client_package():
    """What the server shares with the client lives in ``tfclassify.common``: the client stays a library of its
    own that the server does not reach into (``--workers`` starts its workers through the CLI's entry point,
    a command, not an import)."""
    found = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.startswith("tfclassify.client")]
    assert found == []


def test_the_serving_core_imports_no_transport():
    """``server/core`` (data plane, batching, registry, manager ...) is free of gRPC and of the APIs and the process
    around it: the protocols in ``server/apis`` and the process at ``server/``'s top import the core, never the
    other way."""
    found = []
    outer = ("tfclassify.server.apis", *(f"tfclassify.server.{p.stem}" for p in (ROOT / "server").glob("*.py")
                                         if p.stem != "__init__"))
    for path in sorted((ROOT / "server" / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                      if n == "grpc" or n.startswith(("grpc.", *outer))]
    assert found == []


def _imports_of(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """``path:line module`` of every import (function-level ones included) under ``folder`` of a module in or under
    one of the ``forbidden`` packages."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                      if any(n == p or n.startswith(p + ".") for p in forbidden)]
    return found


def test_the_trainer_leans_on_neither_side_and_common_on_nothing():
    """The trainer shares the dataset readers, the image inputs and the repository's layout with the scorer and the
    server through ``tfclassify.common``: it imports neither the server nor the client, and ``common`` imports
    none of the three (the ``tfclassify`` dispatcher registers ``trainer/cli.py``, not the other way)."""
    assert _imports_of("trainer", ("tfclassify.server", "tfclassify.client")) == []
    assert _imports_of("common", ("tfclassify.server", "tfclassify.client", "tfclassify.trainer")) == []
