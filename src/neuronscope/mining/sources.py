"""Image sources: a folder (recursive), a tar shard, or a text file of paths.

A source is listed once, up front, into :class:`Entry` s in a fixed order
(sorted by their path relative to the source). An entry's position in that
list is its *ordinal*: the scanner breaks activation ties by ordinal, which is
the order of the relative paths, i.e. of the image ids (``relpath#sha12``).
Listing is cheap (names and sizes only); reading and decoding happen in the
loader's worker processes.

Image ids never hold absolute paths (they would leak into static exports):
they are the path relative to the source plus 12 hex of the content's sha256,
``cats/001.png#3fa2c1d09e4b``; a tar member is ``SHARD.tar::member#...``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from neuronscope.errors import NeuronscopeError
from neuronscope.imagefiles import IMAGE_SUFFIXES, open_regular_file

log = logging.getLogger(__name__)
#: Hex digits of the content sha256 kept in an image id.
ID_HASH_CHARS = 12


class ShortRead(OSError):
    """A tar member whose bytes its shard does not hold in full (a download cut short): counted ``truncated``."""


@dataclass(frozen=True, slots=True)  # one per file of a listing that may hold millions
class Entry:
    """One candidate image of a source, before it is read.

    Attributes:
        name: the path relative to the source (``SHARD.tar::member`` for tar members).
        path: the file to read (absolute; never stored in the atlas).
        offset, size: for tar members, where the member's bytes are in ``path``;
            ``offset`` is None for plain files.
    """

    name: str
    path: str
    offset: int | None = None
    size: int | None = None

    def read(self) -> bytes:
        """The entry's bytes (raises OSError / FileNotFoundError for the loader to classify; a FIFO or device
        node named like an image raises :class:`~neuronscope.imagefiles.NotRegularFile` instead of blocking)."""
        with open_regular_file(self.path) as handle:
            if self.offset is None:
                return handle.read()
            handle.seek(self.offset)
            data = handle.read(self.size)
        if self.size is not None and len(data) < self.size:
            raise ShortRead(f"{self.name}: {len(data)} of its {self.size} bytes are in {self.path}")
        return data


def image_id(name: str, sha256_hex: str) -> str:
    """The atlas id of an image: ``relpath#<12 hex of its sha256>``."""
    return f"{name}#{sha256_hex[:ID_HASH_CHARS]}"


def image_folder(image: str) -> str | None:
    """The folder an image id's file sits in within its source (``cats/001.png#...`` -> ``cats``; a tar
    member's own folder), or None at the top: the category a conditional plot counts."""
    path = image.rsplit("#", 1)[0].split("::")[-1]
    return posixpath.dirname(path) or None


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageSource:
    """A listed source: its kind, a display name (no absolute path) and its entries in ordinal order.

    ``categories``: ``{entry name: category}`` from the source's ``index.json`` (:func:`index_categories`),
    which a scan stores with its images for the conditional-probability plots; empty without one.
    """

    kind: str  # folder | tar | list
    name: str
    root: str
    entries: tuple[Entry, ...]
    categories: Mapping[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A hash of the listing (names and sizes): a resumed scan checks the source did not change."""
        digest = hashlib.sha256(self.kind.encode())
        for entry in self.entries:
            digest.update(f"\0{entry.name}\0{entry.size}".encode())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.entries)


def size_twins(entries: Sequence[Entry]) -> np.ndarray:
    """Ordinals [n] int64 of the entries whose listed size another entry shares: only these can be duplicates.

    Two files with the same content have the same size, so a scan hashes and remembers only these
    (a small part of a small collection of JPEGs, most of a million, every file of a fixed-size format);
    entries of unknown size (missing at listing) have no content to compare.
    """
    sizes = np.array([-1 if entry.size is None else entry.size for entry in entries], np.int64)
    known = np.flatnonzero(sizes >= 0)
    _, inverse, counts = np.unique(sizes[known], return_inverse=True, return_counts=True)
    return known[counts[inverse] > 1]


#: The member of a tar shard, or the file at a folder's top, that lists its images with their categories.
INDEX_FILE = "index.json"
#: The fields of an ``index.json`` entry that name its category, the first one present winning.
CATEGORY_FIELDS = ("category", "concept", "class", "label")
#: The category of an image its ``index.json`` lists without one (the split's ``reading`` images).
NO_CATEGORY = "(none)"


def index_categories(index: bytes, prefix: str = "") -> dict[str, str]:
    """``{prefix + file: category}`` from an ``index.json``: ``{"images": [{"file", "concept", ...}]}`` (the
    bundled test split's shape) or a plain list of such entries; the category is the entry's first field of
    :data:`CATEGORY_FIELDS` (:data:`NO_CATEGORY` when it has none). A flat shard (the mini CLIP's split) has no folders to stand in for its images'
    labels, so this is where its conditional plots get theirs. An index that is not this JSON gives none
    (it is the source's own file, and the scan needs no categories)."""
    try:
        listing = json.loads(index)
    except (UnicodeDecodeError, ValueError):
        return {}
    images = listing.get("images") if isinstance(listing, dict) else listing
    categories = {}
    for entry in images if isinstance(images, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            category = next((entry[name] for name in CATEGORY_FIELDS if entry.get(name) is not None), NO_CATEGORY)
            categories[prefix + entry["file"]] = str(category)
    return categories


#: Text files of image paths, one a line, that :func:`open_source` reads as a source.
LISTING_SUFFIXES = (".txt", ".lst", ".list")


def _has_image_suffix(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _size(path: str) -> int | None:
    """The file's size, or None where it cannot be read (a broken link: counted as ``missing`` when read)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def list_folder(root: Path) -> ImageSource:
    """Every file with an image suffix under ``root`` (recursive), sorted by relative path.

    Broken links are kept (they are counted as ``missing`` when read). Plain strings and one ``stat`` a
    file: a listing runs at every start and resume, and pathlib's parsing was most of it (36-48 us a file).
    """
    entries = []
    top = str(root)
    for dirpath, _dirnames, filenames in os.walk(top):
        folder = os.path.relpath(dirpath, top).replace(os.sep, "/")
        prefix = "" if folder == "." else folder + "/"
        for filename in filenames:
            if _has_image_suffix(filename):
                path = os.path.join(dirpath, filename)
                entries.append(Entry(prefix + filename, path, None, _size(path)))
    entries.sort(key=lambda entry: entry.name)
    index = root / INDEX_FILE
    categories = index_categories(index.read_bytes()) if index.is_file() else {}
    return ImageSource("folder", root.name, top, tuple(entries), categories)


def list_tar(shard: Path) -> ImageSource:
    """The image members of an uncompressed tar shard, sorted by member name (normalised: ``./a.png`` is
    ``a.png``, the name its ``index.json`` gives).

    Members are read by offset, so workers never reopen the tar index. A shard cut short (an interrupted
    download) lists the members before the cut: the one it cuts is counted ``truncated`` when read
    (:class:`ShortRead`), with a warning to re-fetch the shard for the members after it.
    """
    try:
        with tarfile.open(shard, "r:") as tar:
            listed = _members_before_any_cut(tar, shard)
            for member in listed:  # ``tar -C dir -cf x.tar .`` names them ``./a.png``: the index lists ``a.png``
                member.name = posixpath.normpath(member.name)
            members = [m for m in listed if m.isfile() and _has_image_suffix(m.name)]
            index = next((m for m in listed if m.isfile() and m.name == INDEX_FILE), None)
            whole = index is not None and index.offset_data + index.size <= shard.stat().st_size
            categories = index_categories(tar.extractfile(index).read(), f"{shard.name}::") if whole else {}
    except tarfile.ReadError as error:
        cut = "end of data" in str(error) or "truncated" in str(error)
        raise NeuronscopeError(f"{shard} is cut short ({error}): re-fetch it" if cut else
                               f"{shard} is not an uncompressed tar shard ({error}); unpack it or give a folder"
                               ) from None
    entries = [Entry(f"{shard.name}::{m.name}", str(shard), m.offset_data, m.size) for m in members]
    entries.sort(key=lambda entry: entry.name)
    return ImageSource("tar", shard.name, str(shard), tuple(entries), categories)


def _members_before_any_cut(tar: tarfile.TarFile, shard: Path) -> list[tarfile.TarInfo]:
    """Every member ``tar`` lists, or those before the point where the shard's bytes stop (tarfile reads the
    headers one by one: ``getmembers`` would raise for the whole shard). Raises ``tarfile.ReadError`` for a
    shard that yields no member at all."""
    members: list[tarfile.TarInfo] = []
    try:
        for member in iter(tar.next, None):
            members.append(member)
    except tarfile.ReadError as error:
        if not members:
            raise
        last = members[-1]
        if last.offset_data + last.size > shard.stat().st_size:
            where = f"ends inside member {last.name} (counted truncated)"
        else:
            where = f"stops after member {last.name} ({error})"
        log.warning("%s %s: the members before are scanned, any after it are not (an interrupted download?): "
                    "re-fetch the shard to scan them all", shard.name, where)
    return members


def list_paths_file(listing: Path) -> ImageSource:
    """A text file with one image path a line, UTF-8 (``#`` comments, blanks ignored).

    Relative paths are read relative to the list's folder. Names in ids are relative to the folder the
    listed files that exist share (:func:`_names_root`): never ``../`` and never an absolute path (ids end up
    in static exports). A listed path that is missing (counted ``missing`` when read) decides nothing; one
    outside that folder is named by its line, ``LIST:N``.
    """
    base = str(listing.parent.resolve())
    paths = {}  # path -> its first line number
    for number, line in enumerate(_list_lines(listing), 1):
        text = line.strip()
        if text and not text.startswith("#"):
            # join keeps an absolute path as it is; a path listed twice is one entry
            paths.setdefault(os.path.normpath(os.path.join(base, text)), number)
    root = _names_root(listing, [path for path in paths if os.path.lexists(path)], base)
    inside = root.rstrip(os.sep) + os.sep  # a name is what follows "root/"
    entries = [Entry(path[len(inside):].replace(os.sep, "/") if path.startswith(inside)
                     else f"{listing.name}:{number}", path, None, _size(path)) for path, number in paths.items()]
    return ImageSource("list", listing.name, root, tuple(sorted(entries, key=lambda e: e.name)))


def _list_lines(listing: Path) -> list[str]:
    """The lines of a path list, refused in one line when they are not UTF-8 text."""
    try:
        return listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise NeuronscopeError(f"--images {listing}: not UTF-8 text (byte {error.start}); a path list holds one "
                               f"path a line, UTF-8") from None


def _names_root(listing: Path, existing: list[str], base: str) -> str:
    """The folder a list's image names are relative to (normalised absolute paths of the listed files that
    exist): ``base`` (the list's folder) when it holds them all, else their files' common folder, which must
    be more than a file system's root (names under ``/`` would spell the absolute paths)."""
    if all(path.startswith(base.rstrip(os.sep) + os.sep) for path in existing):
        return base
    root = os.path.commonpath([os.path.dirname(path) for path in existing])
    if os.path.dirname(root) == root:
        raise NeuronscopeError(f"--images {listing}: its images share no folder but {root} ({existing[0]}, "
                               f"{existing[-1]}), so their ids would spell their absolute paths: list images "
                               f"under one folder, or scan each folder on its own")
    return root


def open_source(source: str | os.PathLike) -> ImageSource:
    """List a folder, a ``.tar`` shard or a text file of paths (``.txt``/``.lst``)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return list_folder(path.resolve())
    if not path.is_file():
        raise NeuronscopeError(f"--images {source}: no such folder or file (give a folder, a .tar shard "
                               f"or a text file of paths)")
    if path.suffix.lower() == ".tar":
        return list_tar(path.resolve())
    if path.suffix.lower() in LISTING_SUFFIXES:
        return list_paths_file(path.resolve())
    raise NeuronscopeError(f"--images {source}: not a folder, a .tar shard or a .txt list of paths")


def check_inputs(inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse, in one line naming it, a command-line input that is neither an image file nor a source
    :func:`open_source` lists (a folder, a ``.tar`` shard, a text file of paths)."""
    for source in inputs:
        path = Path(source).expanduser()
        if path.is_dir() or (path.is_file() and (_has_image_suffix(path.name)
                                                 or path.suffix.lower() in (".tar", *LISTING_SUFFIXES))):
            continue
        problem = ("no such file or folder" if not path.exists()
                   else "not an image file, a folder, a .tar shard or a .txt list of paths")
        raise NeuronscopeError(f"{source}: {problem}")


def list_inputs(inputs: Sequence[str | os.PathLike]) -> Iterator[Entry]:
    """The entries of image files, folders, tar shards or path lists given on a command line, in order.

    For small jobs that need no ordinals (``zeroshot``): a file is its own
    entry; a folder's images are named ``FOLDER/relative/path``, tar members
    ``SHARD.tar::member``. Reading and decoding are the loader's
    (:func:`neuronscope.mining.loader.iter_decoded`).
    """
    check_inputs(inputs)  # all of them, before the first is read: a typo at the end loses no work
    for source in inputs:
        path = Path(source)
        if path.is_file() and _has_image_suffix(path.name):
            yield Entry(str(source), str(path))
            continue
        listed = open_source(path)
        for entry in listed.entries:
            yield replace(entry, name=os.path.join(source, entry.name)) if listed.kind == "folder" else entry
