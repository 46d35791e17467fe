"""`builtin:pydocs`, the offline quick-start corpus: English prose that ships with the Python interpreter itself.

Documents, in this order:
1. every topic of `pydoc_data.topics` (the Python Language Reference sections behind `help("if")`, ...), sorted
   by topic name, one document each;
2. for each top-level standard-library module `<stdlib>/*.py`, sorted by file name, one document holding the
   module docstring and the docstrings of its classes and functions, each under a `name:` heading. Source files
   are parsed with `ast`, never imported (importing `antigravity` opens a browser).

On CPython 3.11.7: 237 documents, 1.45M characters, 432K GPT-2 tokens. Nothing is downloaded; the text is
fixed for a given Python build, and the manifest records the Python version and a sha256 of the corpus text.

    python -c "from data.builtin_corpus import pydocs_documents; print(len(pydocs_documents()))"
"""

from __future__ import annotations

import ast
import hashlib
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

NAME = "builtin:pydocs"
_DOCUMENTED = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _module_document(path: Path) -> str:
    """Docstrings of one module, in source order: the module's, then every class / function (nested too)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):  # a file this Python cannot parse (e.g. a 2.x leftover): not prose anyway
        return ""
    parts = []
    module_doc = ast.get_docstring(tree)
    if module_doc:
        parts.append(f"{path.stem}:\n{module_doc}")

    def visit(node, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _DOCUMENTED):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    parts.append(f"{name}:\n{doc}")
                visit(child, name + ".")

    visit(tree, f"{path.stem}.")
    return "\n\n".join(parts)


@lru_cache(maxsize=1)  # ~2 s of parsing; the result is an immutable function of the installed Python
def pydocs_documents() -> tuple[str, ...]:
    """The corpus as a tuple of documents (deterministic for a given Python installation)."""
    from pydoc_data.topics import topics

    docs = [topics[name].strip() for name in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        text = _module_document(path)
        if text:
            docs.append(text)
    return tuple(d for d in docs if d)


def corpus_facts(docs: tuple[str, ...]) -> dict:
    """What identifies this corpus in a manifest: name, Python version, document count, sha256 of the text."""
    digest = hashlib.sha256()
    for d in docs:
        digest.update(d.encode("utf-8"))
        digest.update(b"\0")  # separator so document boundaries are part of the hash
    return {
        "kind": "builtin",
        "name": NAME,
        "python": sys.version.split()[0],
        "documents": len(docs),
        "sha256": digest.hexdigest(),
        "description": "pydoc_data.topics (sorted) + docstrings of top-level stdlib modules (sorted, parsed with ast)",
    }
