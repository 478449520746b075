"""Files that appear whole or not at all."""

import contextlib
import os
import shutil
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path, replace_folder: bool = False):
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure delete it.

    The temporary name keeps the suffix, so writers that pick a format by suffix still can. Works for
    a file or for a folder written at the temporary path. An empty folder at `path` may be replaced; a full
    one only with `replace_folder`, and then it stays whole until the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    partial = path.with_name(f".{path.stem}.{tag}.partial{path.suffix}")
    try:
        yield partial
        old = None
        if path.is_dir() and replace_folder:
            old = path.with_name(f".{path.name}.{tag}.old")
            os.replace(path, old)
        elif path.is_dir():
            path.rmdir()  # a full folder makes rmdir fail
        try:
            os.replace(partial, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial)
        elif partial.exists():
            partial.unlink()
