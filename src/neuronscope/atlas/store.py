"""The atlas: a directory with ``atlas.sqlite`` (the catalogue) and files beside it.

    atlas/
      atlas.sqlite          runs, images, layers, units, examples, labels, ... (WAL)
      arrays/               histograms (.npz) per model and layer
      thumbs/               top-example thumbnails with the firing cell marked
      featurevis/           feature visualizations per model and layer (PNG)
      artifacts/            per-layer results that are not per unit (facet probes, emotion plots)
      checkpoints/          state of scans in progress (deleted when a scan finishes)
      runs/                 a lock per run config, held by the process working on it (atlas.runs.claim_run)

Every command writes through :class:`Atlas`. Writes are transactional: a
layer's results, its histogram file and the run's status change together or
not at all (the file is written first under a fresh name, the catalogue then
points at it in one transaction, the old file is removed last).

The catalogue is this module's; the files beside it have their own: atomic writes and file-safe names
(:mod:`~neuronscope.atlas.files`), checkpoints (:class:`~neuronscope.atlas.checkpoints.CheckpointStore`,
:attr:`Atlas.checkpoints`), histogram files (:mod:`~neuronscope.atlas.histograms`).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from neuronscope.atlas.checkpoints import CheckpointStore
from neuronscope.atlas.files import atomic_write_bytes, from_url_name, path_slug
from neuronscope.atlas.histograms import (histogram_sample_ids, read_histogram_file, trimmed_histogram,
                                          write_histogram_file)
from neuronscope.atlas.families import ARTIFACT as FAMILIES_ARTIFACT, family_sources, unit_family
from neuronscope.atlas.multimodality import ARTIFACT as MULTIMODALITY, unit_multimodality
from neuronscope.atlas.schema import ensure_schema
from neuronscope.errors import NeuronscopeError
from neuronscope.units import parse_unit

if TYPE_CHECKING:  # the atlas stores the scanner's result objects; it never imports the scanner at run time
    from neuronscope.mining.results import ImageRecord, LayerScan

DB_NAME = "atlas.sqlite"
#: SQL order of a unit's renders, everywhere they are listed: plain, diverse, then facets by name.
RENDER_ORDER = "CASE kind WHEN 'plain' THEN 0 WHEN 'diverse' THEN 1 ELSE 2 END, kind, path"
#: The tables the Atlas API writes by the names a user types (scans write only keys and canonical layers), each
#: with the columns that key one set its writer replaces whole: a unit's label, words or texts, a unit's renders
#: of one kind, one artifact. :meth:`Atlas._adopt_names` moves them to the canonical names set by set.
_NAMED_TABLES: dict[str, tuple[str, ...]] = {"labels": ("unit",), "words": ("unit",), "texts": ("unit",),
                                             "families": ("unit",), "featurevis": ("unit", "kind"),
                                             "artifacts": ("kind", "name")}


class AtlasError(NeuronscopeError, LookupError):
    """An atlas that is missing, or asked for a model, layer or unit it does not hold."""


class OlderSchemaError(AtlasError):
    """An atlas of an older schema opened read-only, which cannot migrate it (:func:`open_reader` can)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Versions recorded with every run (open_clip's from its package's metadata: importing it takes seconds,
    which a run that loads no model, as `families`, would otherwise spend on its record), and the commit of a
    checkout neuronscope runs from (:func:`source_revision`)."""
    from importlib.metadata import PackageNotFoundError, version

    import PIL
    import torch

    try:
        neuronscope_version = version("neuronscope")
    except PackageNotFoundError:
        neuronscope_version = "unknown"
    try:
        open_clip_version = version("open_clip_torch")
    except PackageNotFoundError:
        open_clip_version = "missing"
    versions = {"torch": torch.__version__, "open_clip": open_clip_version, "pillow": PIL.__version__,
                "numpy": np.__version__, "neuronscope": neuronscope_version, "python": platform.python_version()}
    revision = source_revision()
    return versions if revision is None else {**versions, "neuronscope_source": revision}


@functools.cache
def source_revision() -> str | None:
    """The git commit neuronscope runs from, with ``+modified`` when its sources differ from it, where it runs
    from a checkout (an editable install, whose version number stays the same from commit to commit); None
    for an installed package (its version says which code it is) or where git cannot tell."""
    package = Path(__file__).resolve().parents[1]
    # the repository that encloses the package, not one a git hook or the shell points at
    env = {key: value for key, value in os.environ.items() if key not in ("GIT_DIR", "GIT_WORK_TREE")}

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10,
                              env=env)

    try:
        # a package installed inside another project's work tree (its .venv) is no checkout of neuronscope
        if git("ls-files", "--error-unmatch", "--", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+modified" if changed.stdout.strip() else "")


def _finite(value: float) -> float | None:
    """A float for the catalogue, None (NULL, JSON null) for the inf/NaN of an empty or broken unit."""
    value = float(value)
    return value if np.isfinite(value) else None


def _lower(value: object) -> object:
    """SQL ``pylower(x)``: Python's ``str.lower`` (every script's capitals), NULL and numbers as they are."""
    return value.lower() if isinstance(value, str) else value


def bare_name(model_key: str) -> str:
    """A model key's registry name (``mini-clip@bundled`` -> ``mini-clip``)."""
    return model_key.split("@")[0]


def match_model(name: str, known: list[str]) -> str | None:
    """The key among ``known`` that ``name`` names (a key, or a bare name held once), or None.

    ``~`` may stand for ``/`` (``hf-hub:org~repo``, as URLs write it), as in layer aliases.
    Raises :class:`AtlasError` when a bare name matches several keys (``mini-clip@bundled``
    and ``mini-clip@random``): guessing would read, or write, the wrong model.
    """
    for candidate in dict.fromkeys((name, from_url_name(name))):
        if candidate in known:
            return candidate
        matches = [key for key in known if bare_name(key) == candidate]
        if len(matches) > 1:
            raise AtlasError(f"model {name!r} names several models of this atlas ({', '.join(matches)}): "
                             "give the full key")
        if matches:
            return matches[0]
    return None


@contextmanager
def reading(atlas: Atlas | str | os.PathLike) -> Iterator[Atlas]:
    """``atlas`` itself when it is an open :class:`Atlas` (left open), else that directory opened read-only
    (closed after): for functions that take either."""
    if isinstance(atlas, Atlas):
        yield atlas
        return
    with Atlas(atlas, create=False, read_only=True) as opened:
        yield opened


def open_reader(path: str | os.PathLike) -> Atlas:
    """The atlas at ``path`` opened to read (``neuronscope show``): read-only, so that an atlas on a read-only
    mount or of another user reads; but one of an older schema that this user can write is opened to write,
    which migrates it (``show`` is the migration the read-only error names)."""
    try:
        return Atlas(path, create=False, read_only=True)
    except OlderSchemaError:
        if not _writable(Path(path)):
            raise
        return Atlas(path, create=False)


def _open_read_only(folder: Path) -> tuple[sqlite3.Connection, bool]:
    """The catalogue of the atlas at ``folder``, opened so that nothing can write it, and whether it was
    opened ``immutable``.

    SQLite's ``mode=ro`` still creates the ``-shm`` (and ``-wal``) files of a WAL database beside it, which
    fails in a folder the reader cannot write (an atlas another user owns, a read-only mount). There, with
    no ``-wal`` file holding commits, the file is opened ``immutable``: SQLite reads it as a plain file, with
    no locks and no change detection. Its owner can still write it, which such a connection never sees and
    which (once a checkpoint rewrites pages) can make its reads wrong: a long-lived reader compares
    :meth:`Atlas.catalogue_stamp` and reopens when it moves. A pending ``-wal`` it cannot read is an
    :class:`AtlasError`.
    """
    database = folder / DB_NAME
    wal = database.with_name(f"{DB_NAME}-wal")
    pending = wal.is_file() and wal.stat().st_size > 0
    immutable = not pending and not os.access(folder, os.W_OK)
    uri = f"{database.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    # check_same_thread=False: a server may open it in one thread and read in another (one at a time).
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # the first read opens -shm / -wal
    except sqlite3.DatabaseError as err:
        db.close()
        if pending and not os.access(folder, os.W_OK):
            raise AtlasError(f"cannot read {folder}: its {wal.name} holds commits and you cannot write the folder; "
                             "have its owner open it once (e.g. `neuronscope show`) after any scan ends, or copy "
                             "the atlas to a folder you can write") from None
        raise catalogue_error(folder, err) from None
    return db, immutable


def catalogue_error(folder: Path, err: sqlite3.DatabaseError) -> AtlasError:
    """The one line for an error opening the catalogue of the atlas at ``folder``, saying what to do.

    A read-only mount or a folder of another user fails with "unable to open database file" (the WAL's
    ``-shm`` cannot be made) or "attempt to write a readonly database" (a migration); a damaged file with
    "database disk image is malformed" or "file is not a database"."""
    database = folder / DB_NAME
    message = str(err)
    if "malformed" in message or "not a database" in message:
        return AtlasError(f"{database} is damaged ({message}): restore the atlas from a copy, or recover what "
                          f"it holds with `sqlite3 {database} .recover > dump.sql`")
    if "readonly" in message or not _writable(folder):
        return AtlasError(f"{folder} cannot be written (a read-only mount, or another user's atlas): copy the "
                          "atlas to a folder you can write and run the command on the copy")
    return AtlasError(f"cannot open {database}: {message}")


def _writable(folder: Path) -> bool:
    """Whether this user can change the atlas at ``folder`` (False on a read-only mount too: EROFS)."""
    database = folder / DB_NAME
    return os.access(folder, os.W_OK) and (not database.exists() or os.access(database, os.W_OK))


def check_atlas_target(path: str | Path) -> None:
    """Refuse a path no atlas can be made at (an existing file): commands call it before their work, so a
    wrong ``--out`` costs nothing computed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AtlasError(f"{path} is a file, not an atlas folder: give a new or existing atlas directory with --out")


class Atlas:
    """An atlas directory, opened (and created when ``create``).

    Use as a context manager, or call :meth:`close`. One ``Atlas`` per
    process; SQLite's WAL lets readers (the microscope) read while a scan writes.

    Every method that takes a ``model`` and a ``layer`` takes what a user types: a model key or a bare name
    the atlas holds once (``mini-clip``), a canonical layer name or an alias (``neurons``, ``~`` for ``/``).
    Readers and writers resolve them the same way (:meth:`_key`), so a write is found by every read.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, read_only: bool = False) -> None:
        """Open (or create) the atlas at ``path``.

        ``read_only`` (the microscope) opens the catalogue with SQLite's ``mode=ro``: nothing is
        created or migrated, every write raises, and a scan writing at the same time (WAL) is read
        up to its last commit. In a folder the user cannot write it opens ``immutable``
        (:attr:`immutable`, :func:`_open_read_only`): a snapshot that later writes do not reach.
        """
        self.path = Path(path)
        self.read_only = read_only
        if not (self.path / DB_NAME).is_file():
            if not create or read_only:
                raise AtlasError(f"{self.path} is not an atlas (no {DB_NAME}); fill one with `neuronscope scan --out`")
            check_atlas_target(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
        #: Opened as a plain file (see :func:`_open_read_only`): reopen when :meth:`catalogue_stamp` moves.
        self.immutable = False
        if read_only:
            self.db, self.immutable = _open_read_only(self.path)
            self._check_readable_schema()
        else:
            self.db = self._open_writable()
        # Python's lower() for SQL: SQLite's lower() and LIKE fold ASCII only, so search, the layer filter and
        # the static export's script (JavaScript's toLowerCase) would disagree on "Éclair".
        self.db.create_function("pylower", 1, _lower, deterministic=True)
        #: The checkpoints of jobs in progress (``checkpoints/``).
        self.checkpoints = CheckpointStore(self.path / "checkpoints")
        self._histogram_cache: dict[str, dict[str, np.ndarray]] = {}
        self._held: tuple[tuple[int, int], dict[str, list[dict[str, Any]]]] | None = None
        #: Locks this process holds on runs it works on (:func:`~neuronscope.atlas.runs.claim_run`), by config
        #: key: released when the run stops (:meth:`release_run_lock`), on :meth:`close`, and by the system
        #: when the process dies.
        self.run_locks: dict[str, IO[str]] = {}

    def _open_writable(self) -> sqlite3.Connection:
        """The catalogue opened to write, migrated to this schema; an atlas that cannot be written (a read-only
        mount) or is damaged is an :class:`AtlasError` saying what to do."""
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), never implicit.
        db = sqlite3.connect(self.path / DB_NAME, isolation_level=None, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            ensure_schema(db)
        except sqlite3.DatabaseError as err:
            db.close()
            raise catalogue_error(self.path, err) from None
        return db

    def _check_readable_schema(self) -> None:
        """A read-only atlas cannot be migrated: refuse an older or newer schema with what to do."""
        from neuronscope.atlas.schema import SCHEMA_VERSION, schema_version

        found = schema_version(self.db)
        if found != SCHEMA_VERSION:
            self.db.close()
            if found > SCHEMA_VERSION:
                raise AtlasError(f"{self.path} has atlas schema version {found}, this neuronscope reads "
                                 f"{SCHEMA_VERSION}: upgrade neuronscope to read it")
            # show opens read-only, but migrates an atlas it can write (open_reader)
            action = (f"run `neuronscope show {self.path}` once to migrate it" if _writable(self.path) else
                      "copy it to a folder you can write and open the copy once with `neuronscope show` to migrate it")
            raise OlderSchemaError(f"{self.path} has atlas schema version {found}, this neuronscope reads "
                                   f"{SCHEMA_VERSION}: {action}")

    # ------------------------------------------------------------------ basics

    def close(self) -> None:
        for lock in self.run_locks.values():
            lock.close()
        self.run_locks.clear()
        self.db.close()

    def release_run_lock(self, run_id: int) -> None:
        """Let go of this handle's lock on run ``run_id``'s config, once the run stopped (finished, interrupted,
        abandoned): a handle left open (a notebook) must not keep a later run of that config out. The owner
        record goes with it, so the file no longer names a run as being written."""
        row = self.db.execute("SELECT config_key FROM runs WHERE id = ?", (run_id,)).fetchone()
        lock = self.run_locks.pop(row["config_key"], None) if row is not None else None
        if lock is not None:
            lock.truncate(0)
            lock.close()

    def catalogue_stamp(self) -> tuple:
        """``(inode, size, mtime_ns)`` of the catalogue and of its ``-wal`` (None when there is none): it moves
        whenever anyone commits, which an :attr:`immutable` connection cannot see by itself."""
        stamp = []
        for name in (DB_NAME, f"{DB_NAME}-wal"):
            try:
                info = (self.path / name).stat()
            except FileNotFoundError:
                stamp.append(None)
            else:
                stamp.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(stamp)

    def __enter__(self) -> "Atlas":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together, or none (also on exceptions and kills)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            self._held = None  # read inside the transaction: it may hold what the rollback undid
            raise
        self.db.execute("COMMIT")

    @property
    def thumbs_dir(self) -> Path:
        return self.path / "thumbs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.checkpoints.folder

    # ------------------------------------------------------------------ runs

    def start_run(self, *, command: str, config: Mapping[str, Any], config_key: str, model: str,
                  weights_sha256: str | None, layers: list[dict], dataset: Mapping[str, Any] | None,
                  precision: str) -> int:
        """Record a new run (status ``running``); returns its id."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (command, config, config_key, model, weights_sha256, layers, dataset, precision,"
                " versions, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
                (command, json.dumps(config, sort_keys=True), config_key, model, weights_sha256, json.dumps(layers),
                 json.dumps(dataset), precision, json.dumps(library_versions()), _now()))
            return int(cursor.lastrowid)

    def unfinished_run(self, config_key: str) -> int | None:
        """The latest run with this config that did not finish (a killed scan), if any."""
        row = self.db.execute("SELECT id FROM runs WHERE config_key = ? AND status != 'finished' "
                              "ORDER BY id DESC LIMIT 1", (config_key,)).fetchone()
        return int(row["id"]) if row else None

    def finished_run(self, config_key: str) -> int | None:
        """The latest finished run with this config (a command whose results are already here), if any."""
        row = self.db.execute("SELECT id FROM runs WHERE config_key = ? AND status = 'finished' "
                              "ORDER BY id DESC LIMIT 1", (config_key,)).fetchone()
        return int(row["id"]) if row else None

    def set_run_status(self, run_id: int, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))
        if status != "running":
            self.release_run_lock(run_id)

    def run(self, run_id: int) -> dict[str, Any]:
        """A run's record with its JSON fields decoded."""
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise AtlasError(f"no run {run_id} in {self.path}")
        record = dict(row)
        for key in ("config", "layers", "dataset", "versions", "skipped"):
            if record.get(key) is not None:
                record[key] = json.loads(record[key])
        return record

    def runs(self) -> list[dict[str, Any]]:
        return [self.run(row["id"]) for row in self.db.execute("SELECT id FROM runs ORDER BY id")]

    # ------------------------------------------------------------------ checkpoints

    # :attr:`checkpoints` under their earlier names, which commands and users call.

    def save_checkpoint(self, config_key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Atomically replace the checkpoint of a job in progress (:meth:`CheckpointStore.save`)."""
        self.checkpoints.save(config_key, arrays, meta)

    def load_checkpoint(self, config_key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """A job's checkpoint ``(arrays, meta)``, or None (:meth:`CheckpointStore.load`)."""
        return self.checkpoints.load(config_key)

    def drop_checkpoint(self, config_key: str) -> None:
        """Remove a job's checkpoint (:meth:`CheckpointStore.drop`)."""
        self.checkpoints.drop(config_key)

    # ------------------------------------------------------------------ thumbnails

    def thumbnail_path(self, name: str) -> Path:
        return self.thumbs_dir / name

    def thumbnail_relpath(self, name: str) -> str:
        return self.thumbnail_path(name).relative_to(self.path).as_posix()

    def save_thumbnail(self, name: str, png: bytes) -> str:
        """Write a PNG thumbnail (idempotent: its name says what it shows); returns its atlas-relative path."""
        path = self.thumbnail_path(name)
        if not path.is_file():
            atomic_write_bytes(path, png, durable=False)
        return self.thumbnail_relpath(name)

    def reuse_thumbnail(self, name: str) -> str | None:
        """The atlas-relative path of a thumbnail drawn before, touched so that a rescan finishing beside
        this scan keeps it (:meth:`write_scan`); None when there is none.

        A thumbnail another user drew cannot be touched (only its owner may set its time): it is reused
        untouched rather than failing the scan at its end."""
        try:
            os.utime(self.thumbnail_path(name))
        except FileNotFoundError:
            return None
        except OSError:
            pass  # the file is there; only the touch is skipped
        return self.thumbnail_relpath(name)

    # ------------------------------------------------------------------ scan results

    def write_scan(self, run_id: int, layer_scans: list[LayerScan], images: Mapping[str, ImageRecord],
                   skipped: Mapping[str, int], image_count: int,
                   thumbs: Mapping[tuple[str, int, int, int, int], str] | None = None,
                   categories: Mapping[str, str] | None = None, skipped_files: Mapping[str, str] | None = None
                   ) -> None:
        """Store a finished scan: every layer's units, examples and histogram, its images, and the run's end.

        A rescan of the same (model, layer) replaces that layer's rows; images are
        keyed by id (content-hashed), so scanning the same images again adds none.
        What only the replaced rows used goes with them: image rows no example or
        histogram names any more, and thumbnails no example shows (a rescan on other
        images would otherwise keep both for good).

        Args:
            layer_scans: :class:`neuronscope.mining.results.LayerScan` s.
            images: ``{image id: ImageRecord}`` for every image the results name.
            thumbs: ``{(sha256, rows, cols, row, col): relative path}`` of marked thumbnails.
            categories: ``{image id: category}`` from the source's ``index.json``, for the conditional
                plots (:meth:`sample_categories`); an image scanned again keeps the one it has when this
                scan gives none.
            skipped_files: ``{name in the source: reason}`` of a few skipped files per reason, kept in the
                run's ``dataset`` as ``"skipped_files"`` (beside ``skipped``'s counts), so that a run's bad
                files can be found and fixed.
        """
        thumbs, categories = thumbs or {}, categories or {}
        old_files, new_files = [], []
        replaced_thumbs: set[str] = set()
        try:
            for scan in layer_scans:
                new_files.append(self._write_histogram_file(run_id, scan))
            with self.transaction() as db:
                db.executemany("INSERT INTO images (id, source, name, sha256, width, height, category) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?) "
                               "ON CONFLICT (id) DO UPDATE SET category = coalesce(excluded.category, category)",
                               [(r.id, r.source, r.name, r.sha256, r.width, r.height, categories.get(r.id))
                                for r in images.values()])
                for scan, histogram_file in zip(layer_scans, new_files):
                    old = db.execute("SELECT path FROM histograms WHERE model = ? AND layer = ?",
                                     (scan.model, scan.layer)).fetchone()
                    if old is not None and old["path"] != histogram_file:
                        old_files.append(old["path"])
                    replaced_thumbs.update(row["thumb"] for row in db.execute(
                        "SELECT DISTINCT thumb FROM examples WHERE model = ? AND layer = ? AND thumb IS NOT NULL",
                        (scan.model, scan.layer)))
                    self._write_layer_rows(db, run_id, scan, images, thumbs, histogram_file)
                dropped = [path for model in dict.fromkeys(scan.model for scan in layer_scans)
                           for path in self._adopt_names(db, model)]
                if old_files:
                    self._drop_unnamed_images(db)
                # (a first scan replaced nothing: it skips reading every example's thumbnail)
                orphans = replaced_thumbs - {row["thumb"] for row in db.execute(
                    "SELECT DISTINCT thumb FROM examples WHERE thumb IS NOT NULL")} if replaced_thumbs else set()
                started = db.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
                db.execute("UPDATE runs SET status = 'finished', finished_at = ?, skipped = ?, images = ? WHERE id = ?",
                           (_now(), json.dumps(dict(skipped)), image_count, run_id))
                if skipped_files:
                    dataset = json.loads(db.execute("SELECT dataset FROM runs WHERE id = ?",
                                                    (run_id,)).fetchone()["dataset"] or "{}")
                    db.execute("UPDATE runs SET dataset = ? WHERE id = ?",
                               (json.dumps({**dataset, "skipped_files": dict(skipped_files)}), run_id))
        except BaseException:
            for name in new_files:
                if name not in old_files:
                    (self.path / name).unlink(missing_ok=True)
            raise
        self.release_run_lock(run_id)
        for name in [*old_files, *dropped]:
            (self.path / name).unlink(missing_ok=True)
        self._drop_thumbnails(orphans, untouched_since=datetime.fromisoformat(started["started_at"]).timestamp()
                              if started else 0.0)
        self._drop_legacy_thumbnails()

    def _drop_unnamed_images(self, db: sqlite3.Connection) -> None:
        """Delete the image rows that no example and no histogram's reservoir names (inside a write)."""
        db.execute("CREATE TEMP TABLE IF NOT EXISTS named_images (id TEXT PRIMARY KEY)")
        db.execute("DELETE FROM named_images")
        for row in db.execute("SELECT path FROM histograms").fetchall():
            try:
                sample_ids = histogram_sample_ids(self.path / row["path"])
            except (OSError, KeyError, ValueError):
                return  # a histogram file we cannot read: keep every row rather than guess what it names
            db.executemany("INSERT OR IGNORE INTO named_images (id) VALUES (?)", ((i,) for i in sample_ids))
        db.execute("DELETE FROM images WHERE id NOT IN (SELECT image_id FROM examples) "
                   "AND id NOT IN (SELECT id FROM named_images)")
        db.execute("DELETE FROM named_images")

    def _drop_thumbnails(self, relpaths: set[str], *, untouched_since: float) -> None:
        """Remove thumbnails no example shows any more, but not one a scan has drawn or reused since
        ``untouched_since`` (seconds since the epoch): a scan beside this one may show it once it writes
        (scans touch a thumbnail they reuse, :meth:`reuse_thumbnail`)."""
        for relpath in relpaths:
            path = self.path / relpath
            try:
                if path.stat().st_mtime < untouched_since:
                    path.unlink()
            except OSError:
                pass  # gone already, or one we may not delete (another user's, a sticky folder): it stays

    def _drop_legacy_thumbnails(self) -> None:
        """Remove thumbnails named the old way (without the input contract) that no example shows any more: a
        rescan of an older atlas draws its thumbnails under new names, and the old files would stay for good.
        A current name is never removed here (a scan beside this one may not have written its rows yet)."""
        from neuronscope.atlas.thumbnails import LEGACY_THUMBNAIL

        legacy = [path for path in self.thumbs_dir.glob("*.png") if LEGACY_THUMBNAIL.fullmatch(path.name)]
        if not legacy:
            return
        shown = {row["thumb"] for row in self.db.execute("SELECT DISTINCT thumb FROM examples WHERE thumb IS NOT NULL")}
        for path in legacy:
            if self.thumbnail_relpath(path.name) not in shown:
                path.unlink(missing_ok=True)

    def _write_histogram_file(self, run_id: int, scan: LayerScan) -> str:
        """Write ``scan``'s histogram file under a name of its own run; returns its atlas-relative path."""
        relative = f"arrays/{path_slug(scan.model)}/{path_slug(scan.layer)}.run{run_id}.npz"
        write_histogram_file(self.path / relative, scan.histogram)
        return relative

    def _write_layer_rows(self, db: sqlite3.Connection, run_id: int, scan: LayerScan, images: Mapping[str, ImageRecord],
                          thumbs: Mapping, histogram_file: str) -> None:
        key = (scan.model, scan.layer)
        for table in ("units", "examples"):
            db.execute(f"DELETE FROM {table} WHERE model = ? AND layer = ?", key)
        db.execute("INSERT OR REPLACE INTO layers (model, layer, aliases, units, grid_rows, grid_cols, run_id) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (*key, json.dumps(scan.aliases), scan.units, *scan.grid, run_id))
        db.execute("INSERT OR REPLACE INTO histograms (model, layer, run_id, path, n_bins, reservoir) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (*key, run_id, histogram_file, scan.histogram.counts.shape[1], scan.histogram.samples.shape[2]))
        db.executemany(
            "INSERT INTO units (model, layer, unit, run_id, mean, std, max, min, count, map_mean, nonfinite) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*key, unit, run_id, _finite(scan.mean[unit]), _finite(scan.std[unit]), _finite(scan.max[unit]),
              _finite(scan.min[unit]), int(scan.count[unit]), _finite(scan.map_mean[unit]),
              int(scan.histogram.nonfinite[unit]))
             for unit in range(scan.units)])
        rows = []
        for kind, examples in (("top", scan.top), ("bottom", scan.bottom)):
            for unit in range(scan.units):
                for rank, image in enumerate(examples.ids[unit]):
                    if image is None:
                        break
                    row, col = (int(v) for v in examples.cells[unit, rank])
                    thumb = thumbs.get((images[image].sha256, *scan.grid, row, col)) if kind == "top" else None
                    rows.append((*key, unit, kind, rank, image, float(examples.values[unit, rank]), row, col, thumb))
        db.executemany("INSERT INTO examples (model, layer, unit, kind, rank, image_id, activation, cell_row, "
                       "cell_col, thumb) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    # ------------------------------------------------------------------ labels and other writers

    def set_label(self, model: str, layer: str, unit: int, text: str, *, source: str = "user") -> None:
        """Set (or replace) a unit's label; ``source`` says who wrote it (user, world-card, auto:...).

        A label may be written before any scan (``world eval``): names the atlas does not hold yet are
        stored as given (see :meth:`_key`), and moved when the layer is registered. Raises :class:`AtlasError`
        when a bare name matches several stored models, or ``unit`` is not a unit of a registered layer.
        """
        if not text.strip():
            raise AtlasError("an empty label: give the label text, e.g. \"cat (drawn or written)\"")
        unit = parse_unit(unit)  # a float unit is refused, not truncated
        model, layer = self._unit_key(model, layer, [unit])
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO labels (model, layer, unit, text, source, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (model, layer, unit, text.strip(), source, _now()))

    def replace_labels(self, model: str, layer: str, labels: Mapping[int, str], *, source: str) -> list[int]:
        """An automatic labeller's labels, in one transaction: ``labels`` (``{unit: text}``) set where a unit has no
        label or one of this ``source``, and this source's labels on other units removed (a rerun that finds
        fewer units leaves none stale). A label from another source (a user's) is kept. Returns the units
        labelled."""
        units = [parse_unit(unit) for unit in labels]
        model, layer = self._unit_key(model, layer, units)
        now = _now()
        with self.transaction() as db:
            db.execute("DELETE FROM labels WHERE model = ? AND layer = ? AND source = ?", (model, layer, source))
            taken = {row["unit"] for row in db.execute("SELECT unit FROM labels WHERE model = ? AND layer = ?",
                                                       (model, layer))}
            written = [unit for unit in units if unit not in taken]
            db.executemany("INSERT INTO labels (model, layer, unit, text, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                           [(model, layer, unit, labels[unit].strip(), source, now) for unit in written])
        return written

    # ------------------------------------------------------------------ other writers: layers, renders, words

    def register_layer(self, model: str, layer: str, *, aliases: list[str], units: int, grid: tuple[int, int],
                       run_id: int | None = None) -> None:
        """Make a layer known before (or without) a scan, so its renders and words can be read.

        A scan of the same layer later replaces this row with its own; an existing row is kept (also one
        that ``layer`` names by alias). Rows written before under the model's bare name or the layer's aliases
        are moved to its key and canonical name (:meth:`_adopt_names`).
        """
        model, layer = self._key(model, layer)
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO layers (model, layer, aliases, units, grid_rows, grid_cols, run_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (model, layer, json.dumps(aliases), int(units), *grid, run_id))
            dropped = self._adopt_names(db, model)
        for path in dropped:  # after the commit, as write_featurevis removes the renders it replaced
            (self.path / path).unlink(missing_ok=True)

    def _adopt_names(self, db: sqlite3.Connection, model: str) -> list[str]:
        """Move the rows written under names that now resolve to ``model`` (a key) and its registered layers,
        inside the registering transaction; returns the files of the rows that lost to newer ones.

        A writer stores names the atlas does not hold as given (``mini-clip``, ``neurons`` before any scan,
        :meth:`_key`), but once the layer is registered every read resolves those names to the key and the
        canonical layer: without this move the rows would be found by no read, and the bare name would show as
        a second model. A bare name that also names another registered key is left alone (it is ambiguous).
        The name cache (:meth:`_held_layers`) sees these writes through ``total_changes``.
        """
        registered = [row["model"] for row in db.execute("SELECT DISTINCT model FROM layers")]
        moves = []
        for name in sorted(self._stored_names(db, "model") - {model}):
            try:
                owner = match_model(name, [key for key in registered if key != name])
            except AtlasError:  # a bare name of several keys
                continue
            if owner == model:
                moves += [((name, layer), (model, layer)) for layer in self._stored_names(db, "layer", name)]
        dropped = [path for source, target in moves for path in self._move_rows(db, source, target)]
        entries = [(row["layer"], json.loads(row["aliases"]))
                   for row in db.execute("SELECT layer, aliases FROM layers WHERE model = ?", (model,))]
        for name in sorted(self._stored_names(db, "layer", model)):
            wanted = from_url_name(name) if ":" not in name else name
            canonical = next((layer for layer, aliases in entries if name in aliases or wanted in aliases), name)
            if canonical != name:
                dropped += self._move_rows(db, (model, name), (model, canonical))
        named = {row["path"] for table in ("featurevis", "artifacts")
                 for row in db.execute(f"SELECT path FROM {table} WHERE path IS NOT NULL")}
        return [path for path in dropped if path not in named]

    @staticmethod
    def _stored_names(db: sqlite3.Connection, column: str, model: str | None = None) -> set[str]:
        """The model names (``column="model"``) or one model's layer names (``"layer"``) that rows are stored
        under, in ``layers`` and every table the API writes by name."""
        where, arguments = ("", ()) if model is None else (" WHERE model = ?", (model,))
        return {row[0] for table in ("layers", *_NAMED_TABLES)
                for row in db.execute(f"SELECT DISTINCT {column} FROM {table}{where}", arguments)}

    @staticmethod
    def _move_rows(db: sqlite3.Connection, source: tuple[str, str], target: tuple[str, str]) -> list[str]:
        """Re-key the rows of ``(model, layer)`` ``source`` to ``target``; returns the files of rows dropped.

        Where both hold a set (a unit's label, words or texts, a unit's renders of one kind, an artifact: see
        :data:`_NAMED_TABLES`), the newest write is kept: the set with the greater rowid, which every insert
        takes anew (``created_at`` has whole seconds). Rows keep their files, whose paths may name the alias; a
        later rewrite replaces them. A layer row under ``source`` gives way to a registered ``target``.
        """
        dropped: list[str] = []
        for table, columns in _NAMED_TABLES.items():
            group, match = ", ".join(columns), " AND ".join(f"{column} = ?" for column in columns)
            newest = [{tuple(row[:-1]): row[-1] for row in db.execute(
                f"SELECT {group}, MAX(rowid) FROM {table} WHERE model = ? AND layer = ? GROUP BY {group}", key)}
                for key in (source, target)]
            for values in newest[0].keys() & newest[1].keys():
                older = target if newest[0][values] > newest[1][values] else source
                if table in ("featurevis", "artifacts"):
                    dropped += [row[0] for row in db.execute(
                        f"SELECT path FROM {table} WHERE model = ? AND layer = ? AND {match} AND path IS NOT NULL",
                        (*older, *values))]
                db.execute(f"DELETE FROM {table} WHERE model = ? AND layer = ? AND {match}", (*older, *values))
            db.execute(f"UPDATE {table} SET model = ?, layer = ? WHERE model = ? AND layer = ?", (*target, *source))
        if db.execute("SELECT 1 FROM layers WHERE model = ? AND layer = ?", target).fetchone():
            db.execute("DELETE FROM layers WHERE model = ? AND layer = ?", source)
        else:
            db.execute("UPDATE layers SET model = ?, layer = ? WHERE model = ? AND layer = ?", (*target, *source))
        return dropped

    def finish_run(self, run_id: int, *, images: int | None = None, skipped: Mapping[str, int] | None = None) -> None:
        """Mark a run finished (commands other than scan call this after their last write)."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET status = 'finished', finished_at = ?, images = COALESCE(?, images), "
                       "skipped = COALESCE(?, skipped) WHERE id = ?",
                       (_now(), images, json.dumps(dict(skipped)) if skipped is not None else None, run_id))
        self.release_run_lock(run_id)

    def featurevis_relpath(self, model: str, layer: str, unit: int, kind: str, index: int = 0) -> str:
        """Where a render is stored: ``featurevis/<model key>/<canonical layer>/<unit>_<kind>_<index>.png``."""
        return _featurevis_relpath(*self._key(model, layer), unit, kind, index)

    def write_featurevis(self, run_id: int | None, model: str, layer: str,
                         renders: list[Mapping[str, Any]]) -> list[str]:
        """Store renders: PNG files first, then their rows in one transaction; returns their relative paths.

        Args:
            renders: ``{"unit", "kind" ("plain" | "diverse" | "facet:NAME"), "index" (0 unless diverse),
                "png" (bytes), "objective" (float reached), "description" (str)}`` each. The renders of a
                (unit, kind) are its whole set: they replace every earlier render of that unit and kind,
                rows and files (4 diverse renders, then 2, leaves 2, not the old third and fourth).
        """
        renders = [{**render, "unit": parse_unit(render["unit"])} for render in renders]  # 2.7 is refused
        model, layer = self._unit_key(model, layer, [render["unit"] for render in renders])
        paths = []
        for render in renders:
            relative = _featurevis_relpath(model, layer, render["unit"], render["kind"], int(render.get("index", 0)))
            atomic_write_bytes(self.path / relative, render["png"], durable=False)
            paths.append(relative)
        sets = sorted({(r["unit"], r["kind"]) for r in renders})
        with self.transaction() as db:
            replaced = {row["path"] for unit, kind in sets for row in db.execute(
                "SELECT path FROM featurevis WHERE model = ? AND layer = ? AND unit = ? AND kind = ?",
                (model, layer, unit, kind))}
            db.executemany("DELETE FROM featurevis WHERE model = ? AND layer = ? AND unit = ? AND kind = ?",
                           [(model, layer, unit, kind) for unit, kind in sets])
            db.executemany(
                "INSERT OR REPLACE INTO featurevis (model, layer, unit, kind, path, objective, description, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(model, layer, r["unit"], r["kind"], path, _finite(r["objective"]), r.get("description"),
                  run_id) for r, path in zip(renders, paths)])
        for stale in replaced - set(paths):  # removed after the commit, as a rescan's old histogram file
            (self.path / stale).unlink(missing_ok=True)
        return paths

    def rendered_units(self, model: str, layer: str, kind: str, config_key: str | None = None) -> set[int]:
        """Units of a layer that hold a render of ``kind`` (from runs with ``config_key``, when given).

        A render job started again skips these: same settings and seed give the same images.
        """
        model, layer = self._key(model, layer)
        rows = self.db.execute(
            "SELECT DISTINCT f.unit FROM featurevis f LEFT JOIN runs r ON r.id = f.run_id "
            "WHERE f.model = ? AND f.layer = ? AND f.kind = ? AND (? IS NULL OR r.config_key = ?)",
            (model, layer, kind, config_key, config_key))
        return {int(row["unit"]) for row in rows}

    def run_render_count(self, run_id: int) -> int:
        """Feature visualizations a run holds (a resumed job's earlier ones included)."""
        (count,) = self.db.execute("SELECT COUNT(*) FROM featurevis WHERE run_id = ?", (run_id,)).fetchone()
        return int(count)

    def write_unit_texts(self, table: str, run_id: int | None, model: str, layer: str,
                         scored: Mapping[int, list[tuple[str, float]]]) -> None:
        """Replace the top words (``table="words"``) or texts (``"texts"``) of the given units.

        Args:
            scored: ``{unit: [(word or text, score), ...]}``; order does not matter (readers sort by score).
        """
        if table not in ("words", "texts"):
            raise ValueError(f"table must be 'words' or 'texts', not {table!r}")
        column = table[:-1]
        scored = {parse_unit(unit): entries for unit, entries in scored.items()}  # 2.7 is refused, not truncated
        model, layer = self._unit_key(model, layer, scored)
        with self.transaction() as db:
            for unit, entries in scored.items():
                db.execute(f"DELETE FROM {table} WHERE model = ? AND layer = ? AND unit = ?", (model, layer, unit))
                db.executemany(f"INSERT OR REPLACE INTO {table} (model, layer, unit, {column}, score, run_id) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               [(model, layer, unit, text, float(score), run_id) for text, score in entries])

    def save_artifact(self, model: str, layer: str, kind: str, name: str, *, data: Any = None,
                      file_bytes: bytes | None = None, suffix: str = ".bin", run_id: int | None = None) -> dict:
        """Store a per-layer result (``data``: JSON-able; ``file_bytes``: a file beside the catalogue).

        ``kind`` groups artifacts (``facet-probe``, ``emotions``, ...); ``name`` keys one of them
        (a facet probe's cache key, ``codes``, ``nmf-7``). Replaces an artifact of the same key.
        """
        model, layer = self._key(model, layer)
        relative = None
        if file_bytes is not None:
            relative = f"artifacts/{path_slug(model)}/{path_slug(layer)}/{path_slug(kind)}_{path_slug(name)}{suffix}"
            atomic_write_bytes(self.path / relative, file_bytes)
        with self.transaction() as db:
            old = db.execute("SELECT path FROM artifacts WHERE model = ? AND layer = ? AND kind = ? AND name = ?",
                             (model, layer, kind, name)).fetchone()
            db.execute("INSERT OR REPLACE INTO artifacts (model, layer, kind, name, path, data, run_id, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (model, layer, kind, name, relative, None if data is None else json.dumps(data), run_id, _now()))
        if old is not None and old["path"] and old["path"] != relative:  # another suffix, or data only now
            (self.path / old["path"]).unlink(missing_ok=True)  # after the commit, as write_featurevis does
        return self._artifact(model, layer, kind, name)

    def artifact(self, model: str, layer: str, kind: str, name: str) -> dict[str, Any] | None:
        """One artifact ``{"kind", "name", "path", "data", "run_id", "created_at"}`` or None."""
        return self._artifact(*self._key(model, layer), kind, name)

    def _artifact(self, model: str, layer: str, kind: str, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM artifacts WHERE model = ? AND layer = ? AND kind = ? AND name = ?",
                              (model, layer, kind, name)).fetchone()
        return None if row is None else self._artifact_record(row)

    def artifacts(self, model: str, layer: str, kind: str | None = None) -> list[dict[str, Any]]:
        """A layer's artifacts (of one kind, or all), by kind and name."""
        model, layer = self._key(model, layer)
        rows = self.db.execute("SELECT * FROM artifacts WHERE model = ? AND layer = ? AND (? IS NULL OR kind = ?) "
                               "ORDER BY kind, name", (model, layer, kind, kind))
        return [self._artifact_record(row) for row in rows]

    @staticmethod
    def _artifact_record(row: sqlite3.Row) -> dict[str, Any]:
        record = {key: row[key] for key in ("kind", "name", "path", "run_id", "created_at")}
        record["data"] = None if row["data"] is None else json.loads(row["data"])
        return record

    def write_multimodality(self, run_id: int | None, model: str, layer: str, scores: Mapping[str, Any]) -> None:
        """Store a layer's multimodality measurement (``Multimodality.to_dict()``), replacing an earlier one:
        each unit's record then carries it (:meth:`unit`'s ``multimodality``)."""
        units = len(scores["concept"])
        self._unit_key(model, layer, [units - 1])  # a registered layer of fewer units refuses it
        self.save_artifact(model, layer, *MULTIMODALITY, data=dict(scores), run_id=run_id)

    def write_families(self, model: str, layer: str, families: Mapping[int, Mapping[str, Any]], *, source: str,
                       about: Mapping[str, Any] | None = None, run_id: int | None = None) -> None:
        """Replace the families ``source`` gave a layer's units with ``families`` (``{unit: {"family",
        "score"}}``; a record's other keys, a lexical unit's ``"affix"``, are not rows: ``about`` keeps the
        affixes, and :func:`~neuronscope.atlas.families.unit_family` joins them back); a unit's family from another
        source (a user's) is kept. ``about`` (JSON: the probe and settings they came from) is kept as the layer's
        ``families`` artifact named ``source``, under the run ``run_id`` that computed them."""
        units = [parse_unit(unit) for unit in families]
        model, layer = self._unit_key(model, layer, units)
        with self.transaction() as db:
            db.execute("DELETE FROM families WHERE model = ? AND layer = ? AND source = ?", (model, layer, source))
            db.executemany("INSERT INTO families (model, layer, unit, family, score, source) VALUES (?, ?, ?, ?, ?, ?) "
                           "ON CONFLICT DO NOTHING",
                           [(model, layer, unit, record["family"], record.get("score"), source)
                            for unit, record in zip(units, families.values())])
        if about is not None:
            self.save_artifact(model, layer, FAMILIES_ARTIFACT, source, data=dict(about), run_id=run_id)

    def multimodality(self, model: str, layer: str) -> dict[str, Any] | None:
        """A layer's stored multimodality measurement (``Multimodality.to_dict()``'s shape), or None."""
        return self._multimodality(*self._key(model, layer))

    def _multimodality(self, model: str, layer: str) -> dict[str, Any] | None:
        stored = self._artifact(model, layer, *MULTIMODALITY)
        return None if stored is None else stored["data"]

    # ------------------------------------------------------------------ reading

    def label(self, model: str, layer: str, unit: int) -> str | None:
        """A unit's label, or None (no scan of the layer needed)."""
        return self._label((*self._key(model, layer), parse_unit(unit)))

    def _label(self, key: tuple[str, str, int]) -> str | None:
        row = self.db.execute("SELECT text FROM labels WHERE model = ? AND layer = ? AND unit = ?",
                              key).fetchone()
        return row["text"] if row else None

    def models(self) -> list[str]:
        """Model keys the atlas holds (layers scanned or labelled)."""
        return list(self._held_layers())

    def _held_layers(self) -> dict[str, list[dict[str, Any]]]:
        """``{model key: its stored layers}`` of every model the atlas holds, read once per catalogue state.

        Resolution runs on every call (``show --unit all`` and the microscope read per unit), so the catalogue
        is not re-read while nothing changed: ``PRAGMA data_version`` moves when another connection commits,
        ``total_changes`` when this one writes. Callers must not mutate what it returns.
        """
        state = (self.db.execute("PRAGMA data_version").fetchone()[0], self.db.total_changes)
        if self._held is None or self._held[0] != state:
            held: dict[str, list[dict[str, Any]]] = {row["model"]: [] for row in self.db.execute(
                "SELECT model FROM layers UNION SELECT model FROM labels ORDER BY model")}
            for row in self.db.execute("SELECT * FROM layers ORDER BY model, layer"):
                held[row["model"]].append({**dict(row), "aliases": json.loads(row["aliases"])})
            self._held = (state, held)
        return self._held[1]

    def _model_key(self, model: str) -> str:
        """The key of the model ``model`` names (:func:`match_model`), or ``model`` itself when the atlas holds
        none such (a writer's first row of a model). Raises :class:`AtlasError` for a bare name of several."""
        return match_model(model, self.models()) or model

    def _key(self, model: str, layer: str) -> tuple[str, str]:
        """``(model key, canonical layer)`` of the names a user types, resolved once per public call.

        A name the atlas does not hold is kept as given: a label or render of a layer no scan has registered
        yet (``world eval`` labels before any scan) is stored, and found, under the names it was given, until
        the layer is registered and its rows move to the canonical names (:meth:`_adopt_names`).
        """
        model, entry = self._lookup(model, layer)
        return model, layer if entry is None else entry["layer"]

    def _unit_key(self, model: str, layer: str, units: Iterable[int]) -> tuple[str, str]:
        """:meth:`_key` for a writer of ``units`` (plain ints, read by :func:`parse_unit` as every reader reads
        them): raises :class:`AtlasError` (as :meth:`unit` does) for a unit outside a registered layer, which no
        read would show. A layer not registered yet takes any unit."""
        model, entry = self._lookup(model, layer)
        if entry is None:
            return model, layer
        for unit in units:
            self.check_unit(model, entry, unit)
        return model, entry["layer"]

    def _lookup(self, model: str, layer: str) -> tuple[str, dict[str, Any] | None]:
        """The model key and the stored layer's cached entry (None when the atlas does not hold the layer)."""
        model = self._model_key(model)
        try:
            return model, self._resolve_layer(model, layer)
        except AtlasError:
            return model, None

    def resolve_model(self, model: str | None) -> str:
        """A model key from a key, a bare name (``mini-clip``) or None when the atlas holds one model.

        ``~`` may stand for ``/`` (``hf-hub:org~repo``, as URLs write it), as in layer aliases.
        """
        known = self.models()
        if not known:
            raise AtlasError(f"{self.path} holds no scanned layers yet; run `neuronscope scan --out {self.path}`")
        if model is None:
            if len(known) > 1:
                raise AtlasError(f"{self.path} holds several models ({', '.join(known)}); pass --model")
            return known[0]
        key = match_model(model, known)
        if key is None:
            raise AtlasError(f"model {model!r} is not in {self.path}; it holds {', '.join(known)}")
        return key

    def layers(self, model: str) -> list[dict[str, Any]]:
        """A model's stored layers by canonical name: ``[{"model", "layer", "aliases", "units", "grid_rows",
        "grid_cols", "run_id"}]`` (``[]`` for a model the atlas does not hold)."""
        return [{**entry, "aliases": list(entry["aliases"])}
                for entry in self._held_layers().get(self._model_key(model), [])]

    def resolve_layer(self, model: str, layer: str) -> dict[str, Any]:
        """The stored layer named by its canonical name or an alias (``~`` may stand for ``/``); raises
        :class:`AtlasError` when the atlas does not hold it."""
        entry = self._resolve_layer(self._model_key(model), layer)
        return {**entry, "aliases": list(entry["aliases"])}

    def _resolve_layer(self, model: str, layer: str) -> dict[str, Any]:
        """:meth:`resolve_layer` of a model key (the cached entry itself: not to be mutated)."""
        wanted = from_url_name(layer) if ":" not in layer else layer
        stored = self._held_layers().get(model, [])
        for entry in stored:
            if layer in (entry["layer"], *entry["aliases"]) or wanted in entry["aliases"]:
                return entry
        names = ", ".join(entry["layer"] for entry in stored) or "none"
        raise AtlasError(f"layer {layer!r} of {model} is not in {self.path} (scanned layers: {names})")

    def unit(self, model: str | None, layer: str, unit: int) -> dict[str, Any]:
        """One unit's record, the shape ``show --json`` prints (see CONVENTIONS.md).

        ``top`` and ``bottom`` are sorted best first (ties by image id), each
        ``{"image", "activation", "cell": [row, col], "thumb"}``; parts not computed are ``[]``/``None``.
        """
        unit = parse_unit(unit)  # a NumPy / torch integer as a plain int: the record goes on into JSON
        model = self.resolve_model(model)
        entry = self._resolve_layer(model, layer)
        canonical = entry["layer"]
        self.check_unit(model, entry, unit)
        key = (model, canonical, unit)
        stats = self.db.execute("SELECT mean, std, max, min, count, map_mean FROM units "
                                "WHERE model = ? AND layer = ? AND unit = ?", key).fetchone()
        return {
            "model": model,
            "layer": canonical,
            "aliases": list(entry["aliases"]),
            "unit": unit,
            "top": self._examples(key, "top"),
            "bottom": self._examples(key, "bottom"),
            "stats": dict(stats) if stats else None,
            "histogram": self._histogram(model, canonical, unit),
            "label": self._label(key),
            "featurevis": [dict(row) for row in self.db.execute(
                "SELECT kind, path, objective, description FROM featurevis WHERE model = ? AND layer = ? "
                f"AND unit = ? ORDER BY {RENDER_ORDER}", key)],
            "words": [dict(row) for row in self.db.execute(
                "SELECT word, score FROM words WHERE model = ? AND layer = ? AND unit = ? "
                "ORDER BY score DESC, word", key)],
            "texts": self._unit_texts(key),
            "multimodality": self._unit_multimodality(model, canonical, unit),
            "family": self._family(key),
        }

    def _family(self, key: tuple[str, str, int]) -> dict[str, Any] | None:
        row = self.db.execute("SELECT family, score, source FROM families WHERE model = ? AND layer = ? AND unit = ?",
                              key).fetchone()
        return unit_family(row, key[2], family_sources(self, *key[:2]) if row else {})

    def _unit_multimodality(self, model: str, layer: str, unit: int) -> dict[str, Any] | None:
        scores = self._multimodality(model, layer)
        return None if scores is None else unit_multimodality(scores, unit)

    @staticmethod
    def check_unit(model: str, entry: Mapping[str, Any], unit: int) -> None:
        """Raise :class:`AtlasError` unless ``unit`` is a unit of the stored layer ``entry`` (of ``model``)."""
        if not 0 <= unit < entry["units"]:
            raise AtlasError(f"unit {unit} is out of range: {entry['layer']} of {model} has {entry['units']} units "
                             f"(0-{entry['units'] - 1})")

    def unit_texts(self, model: str, layer: str, unit: int) -> list[dict[str, Any]]:
        """One unit's stored texts, ``[{"text", "score"}]`` best first: :meth:`unit`'s ``texts`` without the
        rest of the record."""
        return self._unit_texts((*self._key(model, layer), parse_unit(unit)))

    def _unit_texts(self, key: tuple[str, str, int]) -> list[dict[str, Any]]:
        return [dict(row) for row in self.db.execute(
            "SELECT text, score FROM texts WHERE model = ? AND layer = ? AND unit = ? ORDER BY score DESC, text",
            key)]

    def _examples(self, key: tuple[str, str, int], kind: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT image_id, activation, cell_row, cell_col, thumb FROM examples "
                               "WHERE model = ? AND layer = ? AND unit = ? AND kind = ? ORDER BY rank",
                               (*key, kind))
        # _finite: an atlas scanned before non-finite values were kept out may hold inf (not JSON).
        return [{"image": row["image_id"], "activation": _finite(row["activation"]),
                 "cell": [row["cell_row"], row["cell_col"]], "thumb": row["thumb"]} for row in rows]

    def histogram(self, model: str, layer: str, unit: int) -> dict[str, Any] | None:
        """A unit's histogram trimmed to its occupied bins: ``{"edges", "counts", "samples", "seed", "reservoir"}``.

        ``edges`` has one more entry than ``counts``; ``samples[i]`` are the
        reservoir's image ids for bin ``i``, smallest ``hash(id, seed)`` first;
        ``reservoir``: how many a bin keeps at most.
        """
        return self._histogram(*self._key(model, layer), parse_unit(unit))

    def _histogram(self, model: str, layer: str, unit: int) -> dict[str, Any] | None:
        arrays = self._histogram_arrays(model, layer)
        return None if arrays is None else trimmed_histogram(arrays, unit)

    def scan_runs(self, model: str) -> dict[str, int]:
        """``{layer: run id}`` of the scans whose results the atlas holds for ``model``.

        Read from the histograms, which only a scan writes: a layer's ``run_id`` in :meth:`layers` is also
        set by the run that first registered it (words, visualize, attribute, textvis), which scanned nothing.
        """
        return {row["layer"]: row["run_id"] for row in self.db.execute(
            "SELECT layer, run_id FROM histograms WHERE model = ? AND run_id IS NOT NULL", (self._model_key(model),))}

    def histogram_arrays(self, model: str, layer: str) -> dict[str, np.ndarray] | None:
        """A layer's histogram file as arrays (``counts`` [C, n_bins], ``exponent``, ``first`` [C], ...), or None.

        None when the layer has no histogram, or its file is missing or unreadable: a rescan removes
        the previous run's file after its commit, so a reader between the two (a server during a scan)
        or a partly copied atlas finds none, and shows the unit without it rather than failing.
        Loaded once per Atlas (``show --unit all`` reads it per unit); the file name carries the run
        id, so a rescan's new file is never served from an old entry.
        """
        return self._histogram_arrays(*self._key(model, layer))

    def _histogram_arrays(self, model: str, layer: str) -> dict[str, np.ndarray] | None:
        row = self.db.execute("SELECT path FROM histograms WHERE model = ? AND layer = ?", (model, layer)).fetchone()
        if row is None:
            return None
        relative = row["path"]
        if relative not in self._histogram_cache:
            arrays = read_histogram_file(self.path / relative)
            if arrays is None:
                return None
            self._histogram_cache = {relative: arrays}  # keep one layer
        return self._histogram_cache[relative]

    def conditional_buckets(self, model: str | None, layer: str, unit: int, n_buckets: int = 10) -> list[dict]:
        """:func:`conditional_buckets` of a unit read from the atlas."""
        return self.record_buckets(self.unit(model, layer, unit), n_buckets)

    def record_buckets(self, record: Mapping[str, Any], n_buckets: int = 10) -> list[dict]:
        """:func:`conditional_buckets` of a unit's :meth:`unit` record already read (the static export's unit
        page), with the categories a scan stored for its samples."""
        return conditional_buckets(record, n_buckets, self.sample_categories(record))

    def sample_categories(self, record: Mapping[str, Any]) -> dict[str, str]:
        """``{image id: category}`` of the histogram samples of a unit's :meth:`unit` record that a scan stored
        a category for (their source's ``index.json``): the conditional plot's y axis where no folder is."""
        return self.stored_categories(image for images in (record["histogram"] or {}).get("samples", [])
                                      for image in images)

    def stored_categories(self, images: Iterable[str]) -> dict[str, str]:
        """``{image id: category}`` of those ``images`` that a scan stored a category for (their source's
        ``index.json``, :meth:`write_scan`); the others are left out."""
        ids = sorted(set(images))
        categories: dict[str, str] = {}
        for start in range(0, len(ids), 500):  # below SQLite's limit on bound parameters
            chunk = ids[start:start + 500]
            categories.update((row["id"], row["category"]) for row in self.db.execute(
                f"SELECT id, category FROM images WHERE category IS NOT NULL AND id IN ({','.join('?' * len(chunk))})",
                chunk))
        return categories


def _featurevis_relpath(model: str, layer: str, unit: int, kind: str, index: int) -> str:
    """:meth:`Atlas.featurevis_relpath` of a model key and canonical layer."""
    return f"featurevis/{path_slug(model)}/{path_slug(layer)}/{unit}_{path_slug(kind)}_{index}.png"


def conditional_buckets(record: Mapping[str, Any], n_buckets: int = 10,
                        categories: Mapping[str, str] | None = None) -> list[dict]:
    """Uniform buckets in SDs from zero with sample images, from a unit's :meth:`Atlas.unit` record.

    See :func:`neuronscope.mining.buckets.uniform_buckets` (``categories``: :meth:`Atlas.sample_categories`);
    ``[]`` for a unit without a histogram or SD.
    """
    from neuronscope.mining.buckets import uniform_buckets

    histogram, stats = record["histogram"], record["stats"]
    if not histogram or not stats or stats["std"] is None:  # None: an older scan's NaN (see StreamingMoments)
        return []
    return uniform_buckets(histogram["edges"], histogram["counts"], histogram["samples"], histogram["seed"],
                           std=stats["std"], reservoir=histogram["reservoir"], n_buckets=n_buckets,
                           categories=categories)
