"""Paths and URIs: local folders and `pyarrow.fs` URIs (s3://, gs://) behave the same."""
from __future__ import annotations

import os

import pyarrow.fs as pafs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Turn a local path or URI into (filesystem, path inside it)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def list_files(uri: str, extensions: tuple[str, ...]) -> tuple[pafs.FileSystem, list[str]]:
    """All files under `uri` (or `uri` itself) whose name ends with one of `extensions`."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri!r} does not exist")
    if info.type == pafs.FileType.File:
        return fs, [path]
    selector = pafs.FileSelector(path, recursive=True)
    files = sorted(i.path for i in fs.get_file_info(selector)
                   if i.type == pafs.FileType.File and i.path.endswith(extensions)
                   and not os.path.basename(i.path).startswith(("_", ".")))
    if not files:
        raise FileNotFoundError(f"no {'/'.join(extensions)} files under {uri!r}")
    return fs, files


def find_one(folder: str, suffix: str) -> str:
    """The single file in `folder` whose name ends with `suffix` (public dataset layouts)."""
    fs, files = list_files(folder, (suffix,))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one *{suffix} file in {folder!r}, found {files}")
    return files[0] if "://" not in folder else folder.split("://")[0] + "://" + files[0]
