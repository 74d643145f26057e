-- schema.sql -- the sparcl tuning database (SQLite).
--
-- One file holds every measurement sparcl-tune ever made on any device, so
-- that results survive crashes, resume after a kill, and merge across
-- machines.  The library embeds this text and applies it to a new database;
-- the build applies it with the sqlite3 CLI before loading the shipped
-- configurations.  Bump user_version (and teach the library the migration)
-- whenever a table changes; the runtime ignores databases of another version.
-- Version 2 (from 1): CPU devices are keyed without their memory sizes,
-- evaluations carry the finalists' re-timing and the decision, and tuners
-- claim candidates; the library migrates a version 1 file in place when it
-- opens it for writing.
--
-- Readable with plain sqlite3, e.g.
--   SELECT kernel, q_len, head_dim, pattern, params, median_ms FROM best_flat;

PRAGMA application_id = 1397769036; -- 0x5350434C, "SPCL"
PRAGMA user_version = 2;

-- The device fingerprint: what identifies the hardware and its driver.  On
-- CPU devices global_mem and max_alloc are 0: CPU drivers (POCL) derive them
-- from the memory free at start-up, so they would make every run a new
-- device (the evaluation_flat trigger applies the same rule to imports).
CREATE TABLE device (
    id            INTEGER PRIMARY KEY,
    platform      TEXT    NOT NULL, -- CL_PLATFORM_NAME
    vendor        TEXT    NOT NULL, -- CL_DEVICE_VENDOR
    name          TEXT    NOT NULL, -- CL_DEVICE_NAME
    driver        TEXT    NOT NULL, -- CL_DRIVER_VERSION
    version       TEXT    NOT NULL, -- CL_DEVICE_VERSION
    type          TEXT    NOT NULL CHECK (type IN ('CPU', 'GPU', 'ACCELERATOR', 'OTHER')),
    compute_units INTEGER NOT NULL,
    global_mem    INTEGER NOT NULL, -- bytes; 0 on CPU devices
    local_mem     INTEGER NOT NULL, -- bytes
    max_alloc     INTEGER NOT NULL, -- bytes; 0 on CPU devices
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
    -- The finalists' re-timing after the search: `rounds` separate
    -- evaluations interleaved with the other finalists; round_ms is the
    -- median of their medians, round_lo_ms/round_hi_ms the smallest and
    -- largest (the spread across evaluations), cpu_ms the median process CPU
    -- time of one call (NULL where not measured).  speedup* compare with the
    -- default round by round: median, smallest and largest ratio.
    rounds      INTEGER NOT NULL DEFAULT 0,
    round_ms    REAL,
    round_lo_ms REAL,
    round_hi_ms REAL,
    cpu_ms      REAL,
    speedup     REAL,
    speedup_lo  REAL,
    speedup_hi  REAL,
    chosen      INTEGER NOT NULL DEFAULT 0, -- 1: the decision for this device and problem
    UNIQUE (device_id, kernel_id, problem_id, params)
);
CREATE INDEX evaluation_ok ON evaluation (device_id, kernel_id, problem_id, status, median_ms);

-- @version-2 -- everything below is (re)created by the migration from version 1.

-- At most one decision per device, kernel version and problem.
CREATE UNIQUE INDEX evaluation_chosen ON evaluation (device_id, kernel_id, problem_id)
 WHERE chosen = 1;

-- A candidate a tuner is measuring: claimed before it runs, so that tuners
-- sharing the file never measure the same one.  The key columns are those
-- of evaluation_flat.  A claim whose lease has expired, or whose process on
-- this host is gone, may be taken over.
CREATE TABLE claim (
    platform TEXT, vendor TEXT, device TEXT, driver TEXT, version TEXT, type TEXT,
    compute_units INTEGER, global_mem INTEGER, local_mem INTEGER, max_alloc INTEGER,
    kernel TEXT, kernel_hash TEXT, dtype TEXT, batch INTEGER, q_heads INTEGER,
    kv_heads INTEGER, q_len INTEGER, kv_len INTEGER, head_dim INTEGER, causal INTEGER,
    pattern TEXT, block INTEGER, density REAL,
    params  TEXT    NOT NULL,
    host    TEXT    NOT NULL, -- gethostname() of the owner
    pid     INTEGER NOT NULL, -- its process id
    expires REAL    NOT NULL, -- unix time at which the lease ends
    UNIQUE (platform, vendor, device, driver, version, type, compute_units, global_mem,
            local_mem, max_alloc, kernel, kernel_hash, dtype, batch, q_heads, kv_heads, q_len,
            kv_len, head_dim, causal, pattern, block, density, params)
);

-- The best per device, kernel version and problem: the decided one where
-- the finalists were re-timed, else the fastest correct evaluation.  A view,
-- so it is never stale and merging databases needs no recomputation.
-- (SQLite takes the bare columns from the row that holds the MIN.)
CREATE VIEW best AS
SELECT device_id, kernel_id, problem_id, id AS evaluation_id, params, median_ms, min_ms, max_ms,
       runs
  FROM evaluation
 WHERE status = 'ok' AND chosen = 1
UNION ALL
SELECT device_id, kernel_id, problem_id, id AS evaluation_id, params, MIN(median_ms) AS median_ms,
       min_ms, max_ms, runs
  FROM evaluation e
 WHERE status = 'ok'
   AND NOT EXISTS (SELECT 1 FROM evaluation c
                    WHERE c.chosen = 1 AND c.status = 'ok' AND c.device_id = e.device_id
                      AND c.kernel_id = e.kernel_id AND c.problem_id = e.problem_id)
 GROUP BY device_id, kernel_id, problem_id;

-- One self-contained row per evaluation: the export format (CSV columns and
-- SQL INSERTs) and the only way rows are written, through the trigger below.
CREATE VIEW evaluation_flat AS
SELECT d.platform, d.vendor, d.name AS device, d.driver, d.version, d.type, d.compute_units,
       d.global_mem, d.local_mem, d.max_alloc, k.name AS kernel, k.hash AS kernel_hash, p.dtype,
       p.batch, p.q_heads, p.kv_heads, p.q_len, p.kv_len, p.head_dim, p.causal, p.pattern,
       p.block, p.density, e.params, e.status, e.median_ms, e.min_ms, e.max_ms, e.runs, e.max_err,
       e.message, e.created, e.rounds, e.round_ms, e.round_lo_ms, e.round_hi_ms, e.cpu_ms,
       e.speedup, e.speedup_lo, e.speedup_hi, e.chosen, e.id AS evaluation_id
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

-- An imported row keeps its decision only where the file has none yet for
-- that device, kernel version and problem (rows already present are kept).
CREATE TRIGGER evaluation_flat_insert INSTEAD OF INSERT ON evaluation_flat
BEGIN
    INSERT OR IGNORE INTO device (platform, vendor, name, driver, version, type, compute_units,
                                  global_mem, local_mem, max_alloc)
    VALUES (NEW.platform, NEW.vendor, NEW.device, NEW.driver, NEW.version, NEW.type,
            NEW.compute_units, CASE WHEN NEW.type = 'CPU' THEN 0 ELSE NEW.global_mem END,
            NEW.local_mem, CASE WHEN NEW.type = 'CPU' THEN 0 ELSE NEW.max_alloc END);
    INSERT OR IGNORE INTO kernel (name, hash) VALUES (NEW.kernel, NEW.kernel_hash);
    INSERT OR IGNORE INTO problem (kernel, dtype, batch, q_heads, kv_heads, q_len, kv_len,
                                   head_dim, causal, pattern, block, density)
    VALUES (NEW.kernel, NEW.dtype, NEW.batch, NEW.q_heads, NEW.kv_heads, NEW.q_len, NEW.kv_len,
            NEW.head_dim, NEW.causal, NEW.pattern, NEW.block, NEW.density);
    INSERT OR IGNORE INTO evaluation (device_id, kernel_id, problem_id, params, status, median_ms,
                                      min_ms, max_ms, runs, max_err, message, created, rounds,
                                      round_ms, round_lo_ms, round_hi_ms, cpu_ms, speedup,
                                      speedup_lo, speedup_hi, chosen)
    SELECT d.id, k.id, p.id, json(NEW.params), NEW.status, NEW.median_ms, NEW.min_ms, NEW.max_ms,
           coalesce(NEW.runs, 0), NEW.max_err, coalesce(NEW.message, ''),
           coalesce(NEW.created, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), coalesce(NEW.rounds, 0),
           NEW.round_ms, NEW.round_lo_ms, NEW.round_hi_ms, NEW.cpu_ms, NEW.speedup,
           NEW.speedup_lo, NEW.speedup_hi,
           coalesce(NEW.chosen, 0) = 1
             AND NOT EXISTS (SELECT 1 FROM evaluation c
                              WHERE c.chosen = 1 AND c.device_id = d.id AND c.kernel_id = k.id
                                AND c.problem_id = p.id)
      FROM device d, kernel k, problem p
     WHERE d.platform = NEW.platform AND d.vendor = NEW.vendor AND d.name = NEW.device
       AND d.driver = NEW.driver AND d.version = NEW.version AND d.type = NEW.type
       AND d.compute_units = NEW.compute_units
       AND d.global_mem = CASE WHEN NEW.type = 'CPU' THEN 0 ELSE NEW.global_mem END
       AND d.local_mem = NEW.local_mem
       AND d.max_alloc = CASE WHEN NEW.type = 'CPU' THEN 0 ELSE NEW.max_alloc END
       AND k.name = NEW.kernel AND k.hash = NEW.kernel_hash
       AND p.kernel = NEW.kernel AND p.dtype = NEW.dtype AND p.batch = NEW.batch
       AND p.q_heads = NEW.q_heads AND p.kv_heads = NEW.kv_heads AND p.q_len = NEW.q_len
       AND p.kv_len = NEW.kv_len AND p.head_dim = NEW.head_dim AND p.causal = NEW.causal
       AND p.pattern = NEW.pattern AND p.block = NEW.block AND p.density = NEW.density;
END;
