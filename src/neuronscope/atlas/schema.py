"""The atlas catalogue's SQLite schema, its version, and the migration hook.

``SCHEMA_VERSION`` is stored in the ``meta`` table. Opening an older atlas
runs ``MIGRATIONS[v]`` (v -> v + 1) for each missing step, all in one
transaction; an atlas from a newer neuronscope is refused rather than
damaged. Tables that other issues fill (``words``, ``texts``,
``featurevis``, ``families``) are created here so that readers can answer
``[]`` for them today.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from neuronscope.errors import NeuronscopeError

SCHEMA_VERSION = 3

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- One row per command run that wrote into the atlas: its provenance.
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    config TEXT NOT NULL,            -- JSON of every option that changes results
    config_key TEXT NOT NULL,        -- hash of config: a rerun of the same command resumes this run
    model TEXT NOT NULL,             -- model key, e.g. mini-clip@bundled
    weights_sha256 TEXT,             -- NULL for random weights
    layers TEXT NOT NULL,            -- JSON [{"layer": canonical, "aliases": [...]}]
    dataset TEXT,                    -- JSON {"kind", "name", "entries", "fingerprint"}; no absolute paths
    precision TEXT,                  -- the precision actually used (fp32, bf16, ...)
    versions TEXT NOT NULL,          -- JSON {"torch", "open_clip", "pillow", "numpy", "neuronscope", "python"}
    skipped TEXT,                    -- JSON {reason: count}
    images INTEGER,                  -- images scanned
    status TEXT NOT NULL,            -- running | interrupted | finished | abandoned (its source changed)
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_config ON runs (config_key, status);

-- Images are identified by their path relative to the source plus a content hash.
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,             -- relpath#sha12
    source TEXT NOT NULL,            -- the source's name (folder, shard or list name)
    name TEXT NOT NULL,              -- relpath (SHARD.tar::member for tar members)
    sha256 TEXT NOT NULL,
    width INTEGER,
    height INTEGER
);

CREATE TABLE IF NOT EXISTS layers (
    model TEXT NOT NULL,
    layer TEXT NOT NULL,             -- canonical name (dot path, or dotpath:input)
    aliases TEXT NOT NULL,           -- JSON list
    units INTEGER NOT NULL,
    grid_rows INTEGER NOT NULL,
    grid_cols INTEGER NOT NULL,
    run_id INTEGER REFERENCES runs (id),
    PRIMARY KEY (model, layer)
);

CREATE TABLE IF NOT EXISTS units (
    model TEXT NOT NULL,
    layer TEXT NOT NULL,
    unit INTEGER NOT NULL,
    run_id INTEGER REFERENCES runs (id),
    mean REAL, std REAL, max REAL, min REAL, count INTEGER,   -- of the max-over-space value per image
    map_mean REAL,                   -- mean over images and positions (for mean ablation)
    nonfinite INTEGER DEFAULT 0,
    PRIMARY KEY (model, layer, unit)
);

-- Top and bottom dataset examples: kind = 'top' | 'bottom', rank 0 = best.
CREATE TABLE IF NOT EXISTS examples (
    model TEXT NOT NULL,
    layer TEXT NOT NULL,
    unit INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rank INTEGER NOT NULL,
    image_id TEXT NOT NULL REFERENCES images (id),
    activation REAL NOT NULL,
    cell_row INTEGER NOT NULL,
    cell_col INTEGER NOT NULL,
    thumb TEXT,                      -- PNG path relative to the atlas, firing cell marked
    PRIMARY KEY (model, layer, unit, kind, rank)
);

-- Histograms (with reservoir samples) are arrays in a .npz beside the database.
CREATE TABLE IF NOT EXISTS histograms (
    model TEXT NOT NULL,
    layer TEXT NOT NULL,
    run_id INTEGER REFERENCES runs (id),
    path TEXT NOT NULL,              -- relative to the atlas directory
    n_bins INTEGER NOT NULL,
    reservoir INTEGER NOT NULL,
    PRIMARY KEY (model, layer)
);

CREATE TABLE IF NOT EXISTS labels (
    model TEXT NOT NULL,
    layer TEXT NOT NULL,
    unit INTEGER NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,            -- user | world-card | auto:...
    created_at TEXT NOT NULL,
    PRIMARY KEY (model, layer, unit)
);

-- Filled by other issues (words, text side, feature vis, families).
CREATE TABLE IF NOT EXISTS words (
    model TEXT NOT NULL, layer TEXT NOT NULL, unit INTEGER NOT NULL,
    word TEXT NOT NULL, score REAL NOT NULL, run_id INTEGER,
    PRIMARY KEY (model, layer, unit, word)
);
CREATE TABLE IF NOT EXISTS texts (
    model TEXT NOT NULL, layer TEXT NOT NULL, unit INTEGER NOT NULL,
    text TEXT NOT NULL, score REAL NOT NULL, run_id INTEGER,
    PRIMARY KEY (model, layer, unit, text)
);
CREATE TABLE IF NOT EXISTS featurevis (
    model TEXT NOT NULL, layer TEXT NOT NULL, unit INTEGER NOT NULL,
    kind TEXT NOT NULL,              -- plain | diverse | facet:NAME
    path TEXT NOT NULL, objective TEXT NOT NULL, run_id INTEGER,
    PRIMARY KEY (model, layer, unit, kind, path)
);
CREATE TABLE IF NOT EXISTS families (
    model TEXT NOT NULL, layer TEXT NOT NULL, unit INTEGER NOT NULL,
    family TEXT NOT NULL, score REAL, source TEXT,
    PRIMARY KEY (model, layer, unit)
);
"""

SCHEMA_V2 = """
-- v2: the value a render reached is a number (v1 declared TEXT, and nothing wrote it), and
-- the objective's readable description sits beside it.
DROP TABLE IF EXISTS featurevis;
CREATE TABLE featurevis (
    model TEXT NOT NULL, layer TEXT NOT NULL, unit INTEGER NOT NULL,
    kind TEXT NOT NULL,              -- plain | diverse | facet:NAME
    path TEXT NOT NULL,              -- PNG relative to the atlas
    objective REAL,                  -- the objective's value at the last step
    description TEXT,                -- e.g. "Channel [neurons, 7]"
    run_id INTEGER,
    PRIMARY KEY (model, layer, unit, kind, path)
);
-- Whatever a command computes per layer that is not per unit: facet probes, emotion
-- codes and their plots, NMF atlases. ``path`` is a file relative to the atlas, ``data`` JSON.
CREATE TABLE IF NOT EXISTS artifacts (
    model TEXT NOT NULL, layer TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    path TEXT, data TEXT, run_id INTEGER, created_at TEXT NOT NULL,
    PRIMARY KEY (model, layer, kind, name)
);
"""


SCHEMA_V3 = """
-- v3: an image's category, from its source's index.json (a flat tar shard has no folders to stand in for
-- it): the conditional-probability plots count it. NULL: the image's folder stands in.
ALTER TABLE images ADD COLUMN category TEXT;
"""


def _statements(script: str) -> list[str]:
    """A SQL script's statements, split where SQLite says one is complete (a ``;`` in a string or comment stays)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending)
            pending = ""
    return statements


def _migrate_1_to_2(connection: sqlite3.Connection) -> None:
    for statement in _statements(SCHEMA_V2):
        connection.execute(statement)


def _migrate_2_to_3(connection: sqlite3.Connection) -> None:
    for statement in _statements(SCHEMA_V3):
        connection.execute(statement)


#: ``MIGRATIONS[v]`` upgrades a version-``v`` atlas to ``v + 1`` inside the open transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def schema_version(connection: sqlite3.Connection) -> int:
    """The atlas's schema version; 0 for an empty database."""
    has_meta = connection.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    row = connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def _refuse_newer(found: int, target: int) -> None:
    if found > target:
        raise NeuronscopeError(f"this atlas has schema version {found}, newer than this neuronscope "
                               f"understands ({target}); upgrade neuronscope to read it")


def ensure_schema(connection: sqlite3.Connection, *, migrations: dict[int, Callable] | None = None,
                  target: int = SCHEMA_VERSION) -> int:
    """Create the schema in an empty database, or migrate an older one; returns the version found."""
    migrations = MIGRATIONS if migrations is None else migrations
    found = schema_version(connection)  # without a lock: almost every open finds the atlas current
    _refuse_newer(found, target)
    if found == target:
        return found
    # Another process may be creating or migrating this atlas right now: read the version again under the
    # write lock, or a stale 0 would re-run the migrations over its first rows (v1 -> v2 drops featurevis).
    # One transaction: a crash leaves an empty file or the old schema, never half of one.
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(connection)
        _refuse_newer(found, target)
        if found == 0:
            for statement in _statements(SCHEMA_V1):
                connection.execute(statement)
        for step in range(max(found, 1), target):
            if step not in migrations:
                raise NeuronscopeError(f"no migration from atlas schema {step} to {step + 1}")
            migrations[step](connection)
        if found < target:
            connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                                (str(target),))
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return found
