-- schema_v1.sql -- db/schema.sql as it was at schema version 1, kept as the fixture of the
-- migration test (test_tuning_db.c); never loaded by the library.
--
-- One file holds every measurement sparcl-tune ever made on any device, so
-- that results survive crashes, resume after a kill, and merge across
-- machines.  The library embeds this text and applies it to a new database;
-- the build applies it with the sqlite3 CLI before loading the shipped
-- configurations.  Bump user_version (and teach the library the migration)
-- whenever a table changes; the runtime ignores databases of another version.
--
-- Readable with plain sqlite3, e.g.
--   SELECT kernel, q_len, head_dim, pattern, params, median_ms FROM best_flat;

PRAGMA application_id = 1397769036; -- 0x5350434C, "SPCL"
PRAGMA user_version = 1;

-- The device fingerprint: everything that can change a kernel's speed.
CREATE TABLE device (
    id            INTEGER PRIMARY KEY,
    platform      TEXT    NOT NULL, -- CL_PLATFORM_NAME
    vendor        TEXT    NOT NULL, -- CL_DEVICE_VENDOR
    name          TEXT    NOT NULL, -- CL_DEVICE_NAME
    driver        TEXT    NOT NULL, -- CL_DRIVER_VERSION
    version       TEXT    NOT NULL, -- CL_DEVICE_VERSION
    type          TEXT    NOT NULL CHECK (type IN ('CPU', 'GPU', 'ACCELERATOR', 'OTHER')),
    compute_units INTEGER NOT NULL,
    global_mem    INTEGER NOT NULL, -- bytes
    local_mem     INTEGER NOT NULL, -- bytes
    max_alloc     INTEGER NOT NULL, -- bytes
    UNIQUE (platform, vendor, name, driver, version, type, compute_units, global_mem, local_mem,
            max_alloc)
);

-- A kernel family at one version: a hash of its source (common header
-- included) and its fixed build options.  Rows of an old hash stay for the
-- record but the runtime never uses them.
CREATE TABLE kernel (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL, -- family, e.g. 'attn_fwd'
    hash TEXT NOT NULL, -- 16 hex digits (FNV-1a 64)
    UNIQUE (name, hash)
);

-- A problem shape.  pattern names the layout family for people; the runtime
-- matches on the numbers (a layout does not know its family).
CREATE TABLE problem (
    id       INTEGER PRIMARY KEY,
    kernel   TEXT    NOT NULL,
    dtype    TEXT    NOT NULL, -- 'f32'
    batch    INTEGER NOT NULL,
    q_heads  INTEGER NOT NULL,
    kv_heads INTEGER NOT NULL,
    q_len    INTEGER NOT NULL,
    kv_len   INTEGER NOT NULL,
    head_dim INTEGER NOT NULL,
    causal   INTEGER NOT NULL, -- the plan's causal flag (not the layout's)
    pattern  TEXT    NOT NULL, -- 'dense', 'causal', 'window', 'bigbird', ...
    block    INTEGER NOT NULL, -- the layout's block size, 0 without a layout
    density  REAL    NOT NULL, -- attended pairs / (heads * q_len * kv_len), 6 decimals
    UNIQUE (kernel, dtype, batch, q_heads, kv_heads, q_len, kv_len, head_dim, causal, pattern,
            block, density)
);

-- Every evaluation, committed as soon as it completes, failures included.
-- params is a JSON object with sorted keys, so equal sets are equal text.
CREATE TABLE evaluation (
    id         INTEGER PRIMARY KEY,
    device_id  INTEGER NOT NULL REFERENCES device (id),
    kernel_id  INTEGER NOT NULL REFERENCES kernel (id),
    problem_id INTEGER NOT NULL REFERENCES problem (id),
    params     TEXT    NOT NULL CHECK (json_valid(params)),
    status     TEXT    NOT NULL CHECK (status IN ('ok', 'invalid', 'build_error', 'launch_error',
                                                  'wrong', 'timeout', 'crash')),
    median_ms  REAL,             -- OpenCL event time of one call; NULL unless 'ok'
    min_ms     REAL,
    max_ms     REAL,
    runs       INTEGER NOT NULL DEFAULT 0, -- timed repetitions behind the statistics
    max_err    REAL,             -- largest |kernel - reference|, NULL if never run
    message    TEXT    NOT NULL DEFAULT '',
    created    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    UNIQUE (device_id, kernel_id, problem_id, params)
);
CREATE INDEX evaluation_ok ON evaluation (device_id, kernel_id, problem_id, status, median_ms);

-- The chosen best per device, kernel version and problem: the fastest
-- correct evaluation.  A view, so it is never stale and merging databases
-- needs no recomputation.  (SQLite takes the bare columns from the row
-- that holds the MIN.)
CREATE VIEW best AS
SELECT device_id, kernel_id, problem_id, id AS evaluation_id, params, MIN(median_ms) AS median_ms,
       min_ms, max_ms, runs
  FROM evaluation
 WHERE status = 'ok'
 GROUP BY device_id, kernel_id, problem_id;

-- One self-contained row per evaluation: the export format (CSV columns and
-- SQL INSERTs) and the only way rows are written, through the trigger below.
CREATE VIEW evaluation_flat AS
SELECT d.platform, d.vendor, d.name AS device, d.driver, d.version, d.type, d.compute_units,
       d.global_mem, d.local_mem, d.max_alloc, k.name AS kernel, k.hash AS kernel_hash, p.dtype,
       p.batch, p.q_heads, p.kv_heads, p.q_len, p.kv_len, p.head_dim, p.causal, p.pattern,
       p.block, p.density, e.params, e.status, e.median_ms, e.min_ms, e.max_ms, e.runs, e.max_err,
       e.message, e.created
  FROM evaluation e
  JOIN device d ON d.id = e.device_id
  JOIN kernel k ON k.id = e.kernel_id
  JOIN problem p ON p.id = e.problem_id;

-- The best rows with their device and problem spelled out: what the runtime
-- reads at plan creation.
CREATE VIEW best_flat AS
SELECT d.platform, d.vendor, d.name AS device, d.driver, d.version, d.type, d.compute_units,
       d.global_mem, d.local_mem, d.max_alloc, k.name AS kernel, k.hash AS kernel_hash, p.dtype,
       p.batch, p.q_heads, p.kv_heads, p.q_len, p.kv_len, p.head_dim, p.causal, p.pattern,
       p.block, p.density, b.params, b.median_ms, b.min_ms, b.max_ms, b.runs
  FROM best b
  JOIN device d ON d.id = b.device_id
  JOIN kernel k ON k.id = b.kernel_id
  JOIN problem p ON p.id = b.problem_id;

CREATE TRIGGER evaluation_flat_insert INSTEAD OF INSERT ON evaluation_flat
BEGIN
    INSERT OR IGNORE INTO device (platform, vendor, name, driver, version, type, compute_units,
                                  global_mem, local_mem, max_alloc)
    VALUES (NEW.platform, NEW.vendor, NEW.device, NEW.driver, NEW.version, NEW.type,
            NEW.compute_units, NEW.global_mem, NEW.local_mem, NEW.max_alloc);
    INSERT OR IGNORE INTO kernel (name, hash) VALUES (NEW.kernel, NEW.kernel_hash);
    INSERT OR IGNORE INTO problem (kernel, dtype, batch, q_heads, kv_heads, q_len, kv_len,
                                   head_dim, causal, pattern, block, density)
    VALUES (NEW.kernel, NEW.dtype, NEW.batch, NEW.q_heads, NEW.kv_heads, NEW.q_len, NEW.kv_len,
            NEW.head_dim, NEW.causal, NEW.pattern, NEW.block, NEW.density);
    INSERT OR IGNORE INTO evaluation (device_id, kernel_id, problem_id, params, status, median_ms,
                                      min_ms, max_ms, runs, max_err, message, created)
    VALUES ((SELECT id FROM device
              WHERE platform = NEW.platform AND vendor = NEW.vendor AND name = NEW.device
                AND driver = NEW.driver AND version = NEW.version AND type = NEW.type
                AND compute_units = NEW.compute_units AND global_mem = NEW.global_mem
                AND local_mem = NEW.local_mem AND max_alloc = NEW.max_alloc),
            (SELECT id FROM kernel WHERE name = NEW.kernel AND hash = NEW.kernel_hash),
            (SELECT id FROM problem
              WHERE kernel = NEW.kernel AND dtype = NEW.dtype AND batch = NEW.batch
                AND q_heads = NEW.q_heads AND kv_heads = NEW.kv_heads AND q_len = NEW.q_len
                AND kv_len = NEW.kv_len AND head_dim = NEW.head_dim AND causal = NEW.causal
                AND pattern = NEW.pattern AND block = NEW.block AND density = NEW.density),
            json(NEW.params), NEW.status, NEW.median_ms, NEW.min_ms, NEW.max_ms,
            coalesce(NEW.runs, 0), NEW.max_err, coalesce(NEW.message, ''),
            coalesce(NEW.created, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')));
END;
