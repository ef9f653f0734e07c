"""Export of the model's source files for `trust_remote_code=True` loading.

transformers' loader copies a checkpoint's `modeling_hydra.py` and every file it reaches through
`from .name import ...`, and refuses any other import that is not installed. So a saved folder must hold flat
copies of our files whose only cross-file imports are relative. In the installed package the config lives in its
own package (`configuration_hydra/`); its imports are rewritten here, mechanically, to sibling imports. In a flat
remote-code folder the files are already in that form and are copied unchanged.
"""

import importlib.util
import os
import re
import secrets

# Imports of our own packages, e.g. `from configuration_hydra.configuration_hydra import HydraConfig`.
_PACKAGE_IMPORT = re.compile(r"^(\s*)from\s+(configuration_hydra|modeling_hydra)\.(\w+)\s+import\s", re.MULTILINE)
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\s", re.MULTILINE)

def flatten_imports(source: str) -> str:
    """Rewrite imports of our packages into sibling imports: `from pkg.module import X` -> `from .module import X`."""
    return _PACKAGE_IMPORT.sub(lambda m: f"{m.group(1)}from .{m.group(3)} import ", source)


def _package_module_file(package: str, module: str) -> str:
    spec = importlib.util.find_spec(f"{package}.{module}")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"cannot locate the source of {package}.{module}")
    return spec.origin


def remote_code_sources(entry_file: str) -> dict:
    """Flat file name -> flattened source for `entry_file` and every file it imports from this project."""
    sources = {}
    pending = [entry_file]
    while pending:
        path = pending.pop()
        name = os.path.basename(path)
        if name in sources:
            continue
        with open(path, encoding="utf-8") as f:
            source = f.read()
        sources[name] = flatten_imports(source)
        folder = os.path.dirname(path)
        pending += [os.path.join(folder, f"{module}.py") for module in _RELATIVE_IMPORT.findall(source)]
        for match in _PACKAGE_IMPORT.finditer(source):
            pending.append(_package_module_file(match.group(2), match.group(3)))
    return sources


def write_file_atomically(path: str, text: str):
    """Write `text` to `path` through a new temporary file in the same folder, then `os.replace` it into place.

    The temporary file gets a random name and is created exclusively (O_EXCL): an existing file or symlink of that
    name is never opened, so a planted link cannot redirect the write and concurrent writers never share a file.
    Its mode is 0o666 less the umask, as for a plain `open(path, "w")`.
    """
    folder, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_remote_code(save_directory: str, modeling_file: str) -> list:
    """Write flat copies of the modeling files into `save_directory`; returns the paths written."""
    written = []
    for name, source in sorted(remote_code_sources(modeling_file).items()):
        path = os.path.join(save_directory, name)
        write_file_atomically(path, source)
        written.append(path)
    return written
