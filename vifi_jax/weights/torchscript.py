"""TorchScript archives (OpenAI's released CLIP `.pt`) without torch: module objects and their state dict.

In an archive's pickle every `__torch__.*` object is a class name plus a dict of attributes; which
attributes are parameters and buffers (what `ScriptModule.state_dict()` returns) is declared only in the
archive's serialized code, `code/__torch__/<module>.py`, as `__parameters__ = [...]` and
`__buffers__ = [...]` in each class. Those files are parsed as syntax trees, never compiled or run.
"""
import ast
import types

MAX_TYPES = 10_000  # distinct TorchScript classes one archive may name (OpenAI's ViT-B/16 names ~20)


class ScriptObject:
    """A TorchScript object (a module, a class or an enum) reduced to its attributes."""
    declared = None  # (parameters, buffers, is_module) from the archive's code, where it has them
    attributes = types.MappingProxyType({})  # until the pickle sets the state

    def __init__(self, *args):
        self.attributes = {"value": args[0]} if len(args) == 1 else {}

    def __setstate__(self, state):
        self.attributes = dict(state) if isinstance(state, dict) else {"state": state}


class ScriptError(ValueError):
    """A TorchScript archive whose object graph or code cannot be read."""


class ScriptTypes:
    """One ScriptObject subclass per class name the pickle uses, carrying that class's declarations."""

    def __init__(self, declarations, path):
        self.declarations, self.path, self.types = declarations, path, {}

    def __call__(self, module, name):
        qualname = f"{module}.{name}"
        if qualname not in self.types:
            if len(self.types) >= MAX_TYPES:
                raise ScriptError(f"{self.path}: names more than {MAX_TYPES} TorchScript classes; not a model archive")
            self.types[qualname] = type(name, (ScriptObject,), {
                "declared": self.declarations.get(qualname), "__slots__": ()})
        return self.types[qualname]


def declarations(sources):
    """{class qualname: (parameters, buffers, is_module)} from {module name: source text} of `code/`."""
    found = {}
    for module, source in sources.items():
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue  # unreadable code only costs the declarations of its classes
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                lists = {"__parameters__": (), "__buffers__": ()}
                for statement in node.body:
                    if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                            and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id in lists):
                        try:
                            lists[statement.targets[0].id] = tuple(ast.literal_eval(statement.value))
                        except (ValueError, TypeError, SyntaxError):
                            pass
                is_module = any(isinstance(base, ast.Name) and base.id == "Module" for base in node.bases)
                found[f"{module}.{node.name}"] = (lists["__parameters__"], lists["__buffers__"], is_module)
    return found


def state_dict(root, is_array):
    """{dotted name: array} of the parameters and buffers of a module graph, as `state_dict()` gives them.

    Each object is visited once (a submodule shared by two parents is reported under its first name) and
    a module that contains itself is refused. Without declarations every array attribute counts.
    """
    flat, finished = {}, set()
    stack = [(root, "", False)]
    on_path = []
    while stack:
        obj, prefix, leaving = stack.pop()
        if leaving:
            on_path.pop()
            finished.add(id(obj))
            continue
        if id(obj) in on_path:
            raise ScriptError(f"the TorchScript module graph contains a cycle at {prefix.rstrip('.') or 'the root'}")
        if id(obj) in finished:
            continue
        on_path.append(id(obj))
        stack.append((obj, prefix, True))
        declared = type(obj).declared
        named = set(declared[0]) | set(declared[1]) if declared else None
        children = []
        for name, value in obj.attributes.items():
            if is_array(value) and (named is None or name in named):
                flat[prefix + name] = value
            elif isinstance(value, ScriptObject) and (value.declared is None or value.declared[2]):
                children.append((value, f"{prefix}{name}.", False))
        stack.extend(reversed(children))
    return flat
