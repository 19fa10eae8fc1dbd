"""The package's import structure: no circle, and no module that imports
from a layer above its own (the public APIs sit on everything; visualization
on the models and the evaluation; the models on the data code; the
evaluation on nothing of the package)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'mmseg_uncert'

#: each top-level part of the package and the parts it may import from
ALLOWED = {
    'version': set(),
    'utils': set(),
    'compat': {'utils'},
    'datasets': {'utils', 'compat'},
    'evaluation': {'utils', 'compat'},
    'models': {'utils', 'compat', 'datasets'},
    'visualization': {'utils', 'compat', 'evaluation', 'models'},
    'engine': {'utils', 'compat', 'models', 'datasets'},
    'apis': {'utils', 'compat', 'version', 'datasets', 'evaluation', 'visualization',
             'models', 'engine'},
    'workflows': {'utils', 'compat', 'version', 'datasets', 'evaluation',
                  'visualization', 'models', 'engine', 'apis'},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports() -> dict[str, set[str]]:
    """Every package module and the package modules it imports, at module
    level or inside a function (a lazy import closes a circle all the same)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == '__init__.py' else name.rpartition('.')[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split('.')
                    base = base[:len(base) - node.level + 1]
                    target = '.'.join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ''
                # `from package import module` imports the module; the name of
                # a function or class imports the module that defines it
                submodules = [f'{target}.{a.name}' for a in node.names
                              if f'{target}.{a.name}' in modules]
                candidates = submodules or [target]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            # a module's own packages are imported before it, never through it
            edges.update(c for c in candidates
                         if c in modules and c != name and not name.startswith(c + '.'))
        graph[name] = edges
    return graph


def _part(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def test_no_import_circle():
    graph = _imports()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                pytest.fail('import circle: ' + ' -> '.join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_module_imports_from_a_layer_above():
    wrong = sorted(f'{m} imports {t}' for m, ts in _imports().items() for t in ts
                   if _part(m) and _part(t) and _part(m) != _part(t)
                   and _part(t) not in ALLOWED.get(_part(m), set()))
    assert not wrong, '\n'.join(wrong)


def test_no_two_modules_share_a_name():
    """A module's name says where it is: no module or package shares its name
    with another anywhere in the package (apis/evaluation.py beside the
    evaluation package once sent readers to the wrong one)."""
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob('*.py'):
        name = path.parent.name if path.name == '__init__.py' else path.stem
        names.setdefault(name, []).append(str(path.relative_to(PACKAGE)))
    shared = {n: sorted(set(p)) for n, p in names.items() if len(set(p)) > 1
              and not all(q.endswith('__init__.py') for q in p)}
    assert not shared, shared


def test_every_part_is_listed():
    parts = {_part(m) for m in _imports() if _part(m)}
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))


def test_no_class_over_300_lines():
    """A maintainer reads any component in one sitting (mmseg's largest class
    is about 290 lines)."""
    long = sorted(f'{path.relative_to(PACKAGE)}: {node.name}, '
                  f'{node.end_lineno - node.lineno + 1} lines'
                  for path in PACKAGE.rglob('*.py')
                  for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.ClassDef)
                  and node.end_lineno - node.lineno + 1 > 300)
    assert not long, long
