"""Paths and URIs: local folders and `pyarrow.fs` URIs (s3://, gs://) behave the same."""
from __future__ import annotations

import hashlib
import os
import struct

import pyarrow.fs as pafs

CHUNK = 4 << 20


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Turn a local path or URI into (filesystem, path inside it)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def list_files(uri: str, extensions: tuple[str, ...],
               not_read: list | None = None) -> tuple[pafs.FileSystem, list[str]]:
    """All files under `uri` (or `uri` itself) whose name ends with one of `extensions`.
    The folder's other files go to `not_read`, as {file, why}, when a list is given."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri!r} does not exist")
    if info.type == pafs.FileType.File:
        return fs, [path]
    selector = pafs.FileSelector(path, recursive=True)
    files, skipped = [], []
    for i in sorted(fs.get_file_info(selector), key=lambda i: i.path):
        if i.type != pafs.FileType.File:
            continue
        name = os.path.basename(i.path)
        if name.startswith(("_", ".")):
            skipped.append({"file": i.path, "why": "hidden or marker file (name starts with "
                                                    "'_' or '.')"})
        elif not i.path.endswith(extensions):
            suffix = name.split(".", 1)[1] if "." in name else "none"
            skipped.append({"file": i.path, "why": f"not a format raypipe reads (suffix "
                                                    f"{suffix!r})"})
        else:
            files.append(i.path)
    if not_read is not None:
        not_read += skipped
    if not files:
        raise FileNotFoundError(f"no {'/'.join(extensions)} files under {uri!r}")
    return fs, files


def find_one(folder: str, suffix: str) -> str:
    """The single file in `folder` whose name ends with `suffix` (public dataset layouts)."""
    fs, files = list_files(folder, (suffix,))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one *{suffix} file in {folder!r}, found {files}")
    return files[0] if "://" not in folder else folder.split("://")[0] + "://" + files[0]


def content_tag(fs: pafs.FileSystem, path: str) -> str:
    """What a file holds, cheaply: an object store's ETag where it gives one; a Parquet file's
    footer (its row groups' offsets, sizes and column statistics); else a BLAKE2 hash of the
    bytes. Unlike (size, mtime), it changes when a file is rewritten in place."""
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_input_file(path) as f:
            meta = {k.lower(): v for k, v in (f.metadata() or {}).items()}
        tag = meta.get("etag") or meta.get("md5") or meta.get("crc32c")
        if tag:
            return f"etag:{tag.decode() if isinstance(tag, bytes) else tag}"
    h = hashlib.blake2b(digest_size=16)
    with fs.open_input_file(path) as f:
        size = f.size()
        if path.endswith(".parquet") and size >= 12:
            f.seek(size - 8)
            footer_len = struct.unpack("<i", f.read(4))[0]
            if f.read(4) == b"PAR1" and 0 < footer_len <= size - 12:
                f.seek(size - 8 - footer_len)
                h.update(f.read(footer_len))
                return f"footer:{h.hexdigest()}"
            f.seek(0)
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"blake2b:{h.hexdigest()}"
