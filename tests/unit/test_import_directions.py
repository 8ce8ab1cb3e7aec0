"""Which package may import which, read from the source (every import, function-level ones included): the server
never reaches into the client, the serving core into no transport, the trainer into neither side, common into none
(tests/system/test_packaging.py proves the installed wheel, and that the serving core imports without TensorFlow)."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT


def imported_names(source: str, path: str = "<source>") -> list[tuple[int, str]]:
    """(line, dotted name) of everything ``source`` imports: ``import a.b`` gives ``a.b``; ``from a.b import c``
    gives ``a.b`` and ``a.b.c`` (``c`` may be a module); a relative import gives ``.`` names, which no package
    here uses."""
    names = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names.append((node.lineno, module))
            names += [(node.lineno, f"{module}.{alias.name}".replace("..", ".")) for alias in node.names]
    return names


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """``path:line name`` of every import under ``folder`` of a relative name, or of a module in or under one of
    ``forbidden`` (a name ending in ``_grpc`` counts as ``grpc``: the generated stubs import it)."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, name in imported_names(path.read_text(), str(path)):
            if name.startswith(".") or any(name == p or name.startswith(p + ".") for p in forbidden) \
                    or ("grpc" in forbidden and (name.endswith("_grpc") or name.startswith("grpc_"))):
                found.append(f"{path.relative_to(ROOT)}:{line} {name}")
    return found


def test_the_checker_sees_every_form_of_import():
    source = ("import grpc\nfrom tfclassify import client\nfrom tfclassify.server import apis\n"
              "from tfclassify.v1 import classifier_pb2_grpc\nfrom . import sibling\n")
    names = [name for _, name in imported_names(source)]
    assert {"grpc", "tfclassify.client", "tfclassify.server.apis", "tfclassify.v1.classifier_pb2_grpc",
            ".sibling"} <= set(names)


def test_the_server_imports_nothing_from_the_client_package():
    """What the server shares with the client lives in ``tfclassify.common``: the client stays a library of its
    own that the server does not reach into (``--workers`` starts its workers through the CLI's entry point,
    a command, not an import)."""
    assert offending("server", ("tfclassify.client",)) == []


def test_the_serving_core_imports_no_transport():
    """``server/core`` (data plane, batching, registry, manager ...) is free of gRPC and of the APIs and the process
    around it: the protocols in ``server/apis`` and the process at ``server/``'s top import the core, never the
    other way."""
    outer = ("tfclassify.server.apis", *(f"tfclassify.server.{p.stem}" for p in (ROOT / "server").glob("*.py")
                                         if p.stem != "__init__"))
    assert offending("server/core", ("grpc", *outer)) == []


@pytest.mark.parametrize("folder, forbidden", [
    ("trainer", ("tfclassify.server", "tfclassify.client")),
    ("common", ("tfclassify.server", "tfclassify.client", "tfclassify.trainer")),
])
def test_the_trainer_leans_on_neither_side_and_common_on_nothing(folder, forbidden):
    """The trainer shares the dataset readers, the image inputs and the repository's layout with the scorer and the
    server through ``tfclassify.common``: it imports neither the server nor the client, and ``common`` imports
    none of the three (the ``tfclassify`` dispatcher registers ``trainer/cli.py``, not the other way)."""
    assert offending(folder, forbidden) == []
