/*
 * sparcl.h -- the one public header of libsparcl, a library of fused
 * sparse-attention kernels written as parametrized OpenCL C.
 *
 * This header is the API documentation.  Each call states what it does, who
 * owns what, what it may be called from, and how it fails.
 *
 * The path of one forward call:
 *
 *   sparcl_ctx      a device, a command queue, a program cache, the last error
 *   sparcl_layout   which keys each query attends to (token-exact, block-sparse)
 *   sparcl_plan     shapes + layout + tuned kernel parameters, built once
 *   sparcl_plan_forward()   enqueues the fused kernel and returns a cl_event
 *
 * Errors are values.  Every fallible call returns a sparcl_status; on failure
 * the context keeps a message that names what was wrong
 * (sparcl_ctx_errmsg()).  The library never prints, aborts or exits.
 *
 * Threading.  A sparcl_ctx may be shared by threads: its program cache and
 * its error state are guarded by a mutex, and the last error message is kept
 * per context (the message of the most recent failure in any thread; use one
 * context per thread if you need messages that cannot interleave).  Layouts
 * are immutable once built and may be read from any thread.  A plan may be
 * executed from several threads at once; it holds no per-call state.
 * Creating and freeing one object must not race with using the same object.
 */
#ifndef SPARCL_H
#define SPARCL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SPARCL_STATIC_DEFINE)
#define SPARCL_API
#elif defined(SPARCL_BUILDING)
#define SPARCL_API __attribute__((visibility("default")))
#else
#define SPARCL_API
#endif

/* The version of this header (CMake's project version must agree; the
 * build checks it).  SPARCL_VERSION_NUMBER is MAJOR * 1000000 + MINOR *
 * 1000 + PATCH, so versions compare as integers. */
#define SPARCL_VERSION_MAJOR 0
#define SPARCL_VERSION_MINOR 1
#define SPARCL_VERSION_PATCH 0
#define SPARCL_VERSION_STRING "0.1.0"
#define SPARCL_VERSION_NUMBER                                                                      \
    (SPARCL_VERSION_MAJOR * 1000000 + SPARCL_VERSION_MINOR * 1000 + SPARCL_VERSION_PATCH)

/* Largest head dimension any kernel accepts. */
#define SPARCL_MAX_HEAD_DIM 256

/* ------------------------------------------------------------------------
 * Status codes
 * ---------------------------------------------------------------------- */

/* 0 is success; every error is negative and distinct. */
typedef enum sparcl_status {
    SPARCL_OK = 0,
    SPARCL_ERR_INVALID_ARGUMENT = -1, /* a parameter or shape was wrong */
    SPARCL_ERR_NOT_SUPPORTED = -2,    /* valid, but not on this device or for this plan kind */
    SPARCL_ERR_OPENCL = -3,           /* an OpenCL call failed; see sparcl_ctx_cl_error() */
    SPARCL_ERR_BUILD = -4,            /* a kernel failed to build; see sparcl_ctx_build_log() */
    SPARCL_ERR_OUT_OF_MEMORY = -5,    /* host or device allocation failed */
    SPARCL_ERR_DATABASE = -6,         /* the tuning database could not be used */
    SPARCL_ERR_INTERNAL = -7,         /* a bug in sparcl; please report it */
    SPARCL_ERR_CONFIG = -8            /* the environment or a setting points at something
                                         unusable (e.g. SPARCL_KERNEL_DIR); the message names it */
} sparcl_status;

/* Static English text for a status code ("invalid argument", ...).  Never
 * NULL; unknown codes give "unknown status".  Thread-safe. */
SPARCL_API const char *sparcl_status_string(sparcl_status status);

/* ------------------------------------------------------------------------
 * Versions and versioned structs
 *
 * sparcl_version() and sparcl_version_number() give the version of the
 * library actually loaded (SPARCL_VERSION_STRING / SPARCL_VERSION_NUMBER of
 * the header it was built with); compare them with the macros to detect an
 * application running on another library than the one it was compiled
 * against.
 *
 * The rule for structs that grow (every public *_desc, and
 * sparcl_program_stats), as SQLite's iVersion rule does for its method
 * tables:
 *  - the first field is `size_t struct_size`, and new fields are only ever
 *    appended at the end; no field is removed, moved or retyped;
 *  - the struct's _init function is an inline wrapper in this header that
 *    passes the size of the struct as the APPLICATION was compiled
 *    (`sizeof *desc`) to the library's _init_sized, which writes only that
 *    many bytes, so a newer library never writes past an older caller's
 *    struct;
 *  - every call that reads such a struct reads only its first struct_size
 *    bytes and takes the _init default for each field beyond them, so an
 *    application built against an older header keeps its old behaviour
 *    with a newer library;
 *  - a struct_size below the oldest layout the library knows, or above the
 *    library's own (an application built against a newer header than the
 *    library), is refused with SPARCL_ERR_INVALID_ARGUMENT naming the type,
 *    the size and the accepted range.  0 (a struct zeroed by hand, never
 *    passed through _init) is refused the same way;
 *  - a struct the library fills (sparcl_program_stats) is filled only as
 *    far as its struct_size.
 * Always initialize such structs with their _init (or the _init_sized
 * function with your own sizeof), then set fields by name.
 * ---------------------------------------------------------------------- */

/* "major.minor.patch" of the loaded library.  Static. */
SPARCL_API const char *sparcl_version(void);

/* SPARCL_VERSION_NUMBER of the loaded library. */
SPARCL_API int sparcl_version_number(void);

/* ------------------------------------------------------------------------
 * Context
 * ---------------------------------------------------------------------- */

typedef struct sparcl_ctx sparcl_ctx;

typedef enum sparcl_log_level {
    SPARCL_LOG_DEBUG = 0,
    SPARCL_LOG_INFO = 1,
    SPARCL_LOG_WARNING = 2,
    SPARCL_LOG_ERROR = 3
} sparcl_log_level;

/* Optional sink for diagnostics (for example "tuning database unreadable,
 * using defaults").  Called synchronously from the thread that made the
 * call; `message` is valid only during the call. */
typedef void (*sparcl_log_fn)(void *user, sparcl_log_level level, const char *message);

/* Creates a context on the default device, with its own cl_context and an
 * in-order command queue with profiling enabled.
 *
 * The device is chosen by the environment variable SPARCL_DEVICE when set:
 * either a decimal index into the list of all devices of all platforms (in
 * platform order, as sparcl_device_list() prints them) or a case-insensitive
 * substring of "platform name / device name".  Otherwise the first GPU of any
 * platform, else the first CPU, else the first device.
 *
 * On success *out owns every OpenCL object it created; release it with
 * sparcl_ctx_free().  On failure *out is NULL and the message is available
 * through sparcl_ctx_errmsg(NULL) in the calling thread. */
SPARCL_API sparcl_status sparcl_ctx_init(sparcl_ctx **out);

/* As sparcl_ctx_init(), but `selector` (index or name substring, as for
 * SPARCL_DEVICE) picks the device; NULL or "" means the default rule. */
SPARCL_API sparcl_status sparcl_ctx_init_device(sparcl_ctx **out, const char *selector);

/* Wraps the application's own OpenCL objects.  The three objects are
 * retained (clRetain*) and released again by sparcl_ctx_free(); sparcl never
 * releases them beyond that.  `queue` must belong to `context` and `device`.
 * Event timings (used by the tuner) need CL_QUEUE_PROFILING_ENABLE; a queue
 * without it still runs every kernel. */
SPARCL_API sparcl_status sparcl_ctx_init_wrap(sparcl_ctx **out, cl_context context,
                                              cl_device_id device, cl_command_queue queue);

/* Frees the context, its program cache and the OpenCL objects it owns or
 * retained.  Plans made from it must be freed first.  NULL does nothing. */
SPARCL_API void sparcl_ctx_free(sparcl_ctx *ctx);

/* The message of the last failure recorded on `ctx`, or "" if none.  With
 * ctx == NULL: the last failure of a call made without a context (or of a
 * failed sparcl_ctx_init) in the calling thread.  The pointer stays valid
 * until the next failing call on the same context or thread. */
SPARCL_API const char *sparcl_ctx_errmsg(const sparcl_ctx *ctx);

/* The raw cl_int of the last SPARCL_ERR_OPENCL on `ctx` (CL_SUCCESS if
 * none). */
SPARCL_API cl_int sparcl_ctx_cl_error(const sparcl_ctx *ctx);

/* The build log of the last SPARCL_ERR_BUILD on `ctx`, or "" if none. */
SPARCL_API const char *sparcl_ctx_build_log(const sparcl_ctx *ctx);

/* Installs (or with fn == NULL removes) the log callback.  Besides the
 * warnings (fallbacks) and errors, it receives at SPARCL_LOG_DEBUG one
 * message per kernel program built: 'built <file> with "<options>"',
 * followed by "; compiler log:" and the log (e.g. warnings) when the
 * compiler wrote one; messages are truncated at about 1 KB. */
SPARCL_API void sparcl_ctx_set_log(sparcl_ctx *ctx, sparcl_log_fn fn, void *user);

/* Memory limits for what sparcl itself allocates on behalf of `ctx`: the
 * host memory of one layout or plan build (layout arrays, the re-blocked
 * tile lists and their scratch) and the device memory one plan holds
 * (sparcl_plan_device_bytes(): tile lists and workspaces; the caller's
 * tensors are not counted).  Builders estimate these bytes from the shapes
 * before allocating and fail with SPARCL_ERR_OUT_OF_MEMORY, with a message
 * that names the bytes needed and the limit, when the estimate exceeds the
 * limit; where the size depends on the pattern's content they also stop as
 * soon as their arrays would grow past it.  0 means the default: the
 * host's physical memory (sysconf) and the device's
 * CL_DEVICE_GLOBAL_MEM_SIZE.  Each single device buffer is also held to
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE whatever the limit.  A limit above what the
 * host or device reports is allowed.  Layout constructors called with
 * ctx == NULL use the default host limit.  Thread-safe; builds that have
 * started keep the limit they read.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT for a NULL ctx. */
SPARCL_API sparcl_status sparcl_ctx_set_memory_limit(sparcl_ctx *ctx, uint64_t host_bytes,
                                                     uint64_t device_bytes);

/* The limits in force (defaults resolved; UINT64_MAX-like values where the
 * default is unknown).  Either pointer may be NULL.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT for a NULL ctx. */
SPARCL_API sparcl_status sparcl_ctx_memory_limit(sparcl_ctx *ctx, uint64_t *host_bytes,
                                                 uint64_t *device_bytes);

/* The OpenCL objects of the context.  Borrowed: do not release them. */
SPARCL_API cl_context sparcl_ctx_cl_context(const sparcl_ctx *ctx);
SPARCL_API cl_device_id sparcl_ctx_cl_device(const sparcl_ctx *ctx);
SPARCL_API cl_command_queue sparcl_ctx_cl_queue(const sparcl_ctx *ctx);

/* A one-line description of the device ("platform / device / driver"),
 * valid for the life of the context. */
SPARCL_API const char *sparcl_ctx_device_string(const sparcl_ctx *ctx);

/* Writes one line per OpenCL device, "index: platform / device (type)", into
 * buf (always NUL-terminated, truncated if it does not fit).  *count, if not
 * NULL, receives the number of devices.  Fails with SPARCL_ERR_OPENCL when no
 * platform is present. */
SPARCL_API sparcl_status sparcl_device_list(char *buf, size_t size, int *count);

/* ---- Program binaries on disk, and offline mode ----
 *
 * Kernels are OpenCL C compiled at run time (0.3-1.5 s per variant on
 * POCL).  A context keeps every program it built for its own life, and
 * also keeps the binaries on disk (clGetProgramInfo(CL_PROGRAM_BINARIES)),
 * so that a later process loads them (clCreateProgramWithBinary) instead
 * of compiling.  A binary is keyed by the text of every source file of the
 * program, the full option string, the platform, device and driver version,
 * and sparcl's binary-format version; a change in any of them is a miss.
 * Files are written to a temporary name and renamed, so concurrent
 * processes never see a partial file.  Any failure of the disk cache (no
 * folder, read-only, corrupt or truncated file, a binary the driver
 * refuses) falls back to compiling from source, with at most a
 * SPARCL_LOG_DEBUG line: the cache can make plan creation faster, never
 * fail it.  Writing costs time too (on POCL, fetching a binary generates
 * the kernels' code, about as long again as the compile), so a process
 * that builds many one-off programs (a tuner's worker) should turn it off.
 *
 * Where: sparcl_ctx_set_program_cache(), else the environment variable
 * SPARCL_PROGRAM_CACHE (a folder; "off" or "0" turn the cache off), else
 * the folder "sparcl-programs" beside the default user tuning database
 * (sparcl_tuning_db_default_path(): $SPARCL_DB's folder, else
 * $XDG_CACHE_HOME/sparcl, else ~/.cache/sparcl).
 *
 * Offline mode is for devices that cannot compile at run time (FPGAs,
 * whose binaries take hours to build): the context never compiles a
 * sparcl kernel.  It loads binaries by the same key from one folder, a
 * "binary bundle" (the same file format as the cache; `sparcl-tune
 * --build-bundle DIR` writes one for the tuned rows and standard problems
 * of a device).  A program missing from the bundle, or a bundle file built
 * from other kernel sources or another format version, makes plan creation
 * fail with SPARCL_ERR_NOT_SUPPORTED and a message naming the kernel files
 * and the full option string (its -D parameters).  In offline mode
 * sparcl_kernel_check_params() also reports a parameter set whose program
 * is not in the bundle as SPARCL_ERR_NOT_SUPPORTED, so a tuner searches
 * only what the bundle holds.  Offline mode covers sparcl's own programs;
 * the plans that call CLBlast (ALGO=1, FAVOR+, Linformer) still let CLBlast
 * compile its GEMM kernels.
 * Turned on by sparcl_ctx_set_offline(), else by the environment variable
 * SPARCL_OFFLINE=bundle_folder.
 */

/* Sets the folder of the context's disk program cache: a path (created
 * when the first binary is written), "" to turn the cache off, or NULL to
 * restore the default rule above.  The path is copied.  Call it before
 * creating plans.  Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL ctx, path of
 * 1024 bytes or more). */
SPARCL_API sparcl_status sparcl_ctx_set_program_cache(sparcl_ctx *ctx, const char *dir);

/* Offline mode: `bundle_dir` a folder of binaries (must exist; never
 * written), "" for online (compiling allowed, whatever SPARCL_OFFLINE
 * says), NULL to restore the default rule (SPARCL_OFFLINE).  Programs the
 * context already holds stay usable.  Errors: SPARCL_ERR_CONFIG (not a
 * folder), SPARCL_ERR_INVALID_ARGUMENT. */
SPARCL_API sparcl_status sparcl_ctx_set_offline(sparcl_ctx *ctx, const char *bundle_dir);

/* Counters of a context's program cache since it was created. */
typedef struct sparcl_program_stats {
    size_t struct_size;    /* sizeof(sparcl_program_stats); see "Versioned structs" */
    int64_t memory_hits;   /* programs taken from the context's own cache */
    int64_t disk_hits;     /* loaded from the disk cache or the offline bundle */
    int64_t builds;        /* compiled from source */
    int64_t disk_writes;   /* binaries written to the disk cache */
    int64_t disk_rejected; /* files found on disk but not used (corrupt, other key) */
} sparcl_program_stats;

/* Sets struct_size (and zeroes the rest). */
static inline void sparcl_program_stats_init(sparcl_program_stats *stats)
{
    if (stats) {
        stats->struct_size = sizeof *stats;
        stats->memory_hits = stats->disk_hits = stats->builds = 0;
        stats->disk_writes = stats->disk_rejected = 0;
    }
}

/* Fills *stats (the fields its struct_size covers).  Thread-safe.  Errors:
 * SPARCL_ERR_INVALID_ARGUMENT (NULL, or a struct_size that is not that of a
 * sparcl_program_stats). */
SPARCL_API sparcl_status sparcl_ctx_program_stats(sparcl_ctx *ctx, sparcl_program_stats *stats);

/* ------------------------------------------------------------------------
 * Layouts: which keys each query attends to
 *
 * A layout defines, for every head h, query i in [0, q_len) and key j in
 * [0, kv_len), whether i attends to j.  It is stored as block-sparse rows
 * (BSR) per head at the layout's block size: a row pointer per block row, the
 * column of each stored block, and for each stored block either FULL (every
 * in-range element attends) or PARTIAL with an exact bit per element.  The
 * semantics are token-exact: the block size is a storage choice, and a plan
 * re-blocks the layout to its own tile without changing any result.
 *
 * A layout has either 1 head (the same pattern for every query head) or one
 * per query head.  It is broadcast over the batch.
 *
 * Positions are aligned bottom-right when q_len != kv_len, as FlashAttention
 * does: query i sits at key position i + (kv_len - q_len).
 *
 * Every constructor takes a context only for its error message; `ctx` may be
 * NULL (the message then goes to sparcl_ctx_errmsg(NULL)).  The layout does
 * not refer to the context afterwards.  On failure *out is NULL.
 * Limits: heads >= 1, q_len and kv_len in [1, 2^30], block in [1, 1024].
 * Memory: the host memory a layout needs is estimated before it is built
 * (exactly enough for dense, causal and window patterns) and the build
 * stops as soon as its arrays would pass the context's host limit
 * (sparcl_ctx_set_memory_limit(); with ctx == NULL, physical memory):
 * SPARCL_ERR_OUT_OF_MEMORY with the bytes needed and the limit.
 * ---------------------------------------------------------------------- */

typedef struct sparcl_layout sparcl_layout;

/* Every query attends to every key. */
SPARCL_API sparcl_status sparcl_layout_init_dense(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                  int q_len, int kv_len, int block);

/* Causal: query i attends to key j iff j <= i + (kv_len - q_len). */
SPARCL_API sparcl_status sparcl_layout_init_causal(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                   int q_len, int kv_len, int block);

/* Sliding window: query i attends to key j iff
 *   -left <= j - (i + kv_len - q_len) <= right.
 * left, right >= 0 are extents in tokens (left = past, right = future). */
SPARCL_API sparcl_status sparcl_layout_init_window(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                   int q_len, int kv_len, int block, int left,
                                                   int right);

/* From a block mask: mask[(h * nbr + r) * nbc + c] != 0 means block (r, c)
 * of head h is attended in full (clipped to q_len x kv_len), where
 * nbr = ceil(q_len / block) and nbc = ceil(kv_len / block).  The mask is
 * copied; the caller keeps ownership.  A mask with no block set at all is
 * rejected as invalid (it is almost always a bug). */
SPARCL_API sparcl_status sparcl_layout_init_block_mask(sparcl_ctx *ctx, sparcl_layout **out,
                                                       int heads, int q_len, int kv_len, int block,
                                                       const uint8_t *mask);

/* Frees a layout.  NULL does nothing.  Plans keep their own copy of what
 * they need, so a layout may be freed once its plans are created. */
SPARCL_API void sparcl_layout_free(sparcl_layout *layout);

/* Shape accessors. */
SPARCL_API int sparcl_layout_heads(const sparcl_layout *layout);
SPARCL_API int sparcl_layout_q_len(const sparcl_layout *layout);
SPARCL_API int sparcl_layout_kv_len(const sparcl_layout *layout);
SPARCL_API int sparcl_layout_block(const sparcl_layout *layout);

/* 1 if query i of head h attends to key j, 0 if not or out of range.
 * O(log nnz of the block row). */
SPARCL_API int sparcl_layout_attends(const sparcl_layout *layout, int head, int i, int j);

/* Number of attended (query, key) pairs, summed over the layout's heads. */
SPARCL_API int64_t sparcl_layout_pairs(const sparcl_layout *layout);

/* Attended pairs / (heads * q_len * kv_len), in [0, 1]. */
SPARCL_API double sparcl_layout_density(const sparcl_layout *layout);

/* Number of stored blocks, summed over heads. */
SPARCL_API int64_t sparcl_layout_nnz_blocks(const sparcl_layout *layout);

/* ------------------------------------------------------------------------
 * Kernel parameters
 *
 * A small name -> integer map.  Plans choose parameters themselves (tuning
 * database, then built-in defaults); a map passed in sparcl_plan_desc.params
 * overrides that choice.  Names are the kernel's -D names (BLOCK_M, ...).
 * ---------------------------------------------------------------------- */

#define SPARCL_PARAMS_MAX 16
#define SPARCL_PARAM_NAME_MAX 24

typedef struct sparcl_params {
    int count;
    struct {
        char name[SPARCL_PARAM_NAME_MAX];
        int32_t value;
    } item[SPARCL_PARAMS_MAX];
} sparcl_params;

/* Empties the map. */
SPARCL_API void sparcl_params_clear(sparcl_params *params);

/* A map is read only when count lies in [0, SPARCL_PARAMS_MAX] and each
 * name is a C identifier (letters, digits and '_', not starting with a
 * digit) NUL-terminated within its SPARCL_PARAM_NAME_MAX bytes, appearing
 * once: names become kernel -D options and database keys, so nothing else
 * may pass.  Every function that takes a map checks this first (names are
 * read with bounded string functions) and refuses any other map with
 * SPARCL_ERR_INVALID_ARGUMENT naming the field, e.g. "desc.params count 17
 * is not in [0, 16]". */

/* Sets name = value, replacing an existing entry.  `name` is read up to
 * SPARCL_PARAM_NAME_MAX bytes, never further.  Fails with
 * SPARCL_ERR_INVALID_ARGUMENT (message via sparcl_ctx_errmsg(NULL)) for a
 * NULL map or name, a name that is empty, over-long, unterminated or not
 * an identifier, a map whose count is out of range, or a full map. */
SPARCL_API sparcl_status sparcl_params_set(sparcl_params *params, const char *name, int32_t value);

/* 1 and *value set if `name` is present, else 0 (also for NULL, a map
 * whose count is out of range, or a name longer than a map can hold). */
SPARCL_API int sparcl_params_get(const sparcl_params *params, const char *name, int32_t *value);

/* Writes "NAME=value NAME=value ..." sorted by name into buf (always
 * NUL-terminated, truncated if it does not fit).  A map that fails the
 * rules above is written as "" (the reason via sparcl_ctx_errmsg(NULL)). */
SPARCL_API void sparcl_params_format(const sparcl_params *params, char *buf, size_t size);

/* ------------------------------------------------------------------------
 * Plans
 * ---------------------------------------------------------------------- */

/* Storage type of the tensors q, k, v and out (sparcl_plan_desc.dtype).
 * Only storage changes: every kernel loads elements into fp32, computes and
 * accumulates in fp32 (scores, running max and sum, P.V), and rounds to the
 * storage type once when it stores out (round to nearest, ties to even).
 * lse is always fp32.  A half tensor holds 2-byte elements; strides and
 * buffer sizes count elements of the plan's dtype.
 *   F32   IEEE binary32 (float), the default.
 *   F16   IEEE binary16 (OpenCL half), read and written with vload_half /
 *         vstore_half_rte, which every OpenCL device has (no cl_khr_fp16).
 *   BF16  bfloat16: the upper 16 bits of a binary32, kept as uint16_t.
 * Which plans read half storage natively (their kernels load and store the
 * dtype): the softmax forward over a layout, by the fused kernel (ALGO=0),
 * by the split-KV decoding kernel (q_len <= 16 over long keys, and
 * sparcl_plan_forward_cache() with contiguous or paged caches of the
 * plan's dtype; its partial results stay fp32 and the merge rounds out
 * once) and with dynamic block selection; the sparse normalizations
 * (sparsemax, entmax) over a layout, forward by attn_entmax and backward
 * by attn_entmax_bwd (dq, dk, dv rounded once by their owners); the
 * forward of LSH attention (its hash, gather and chunk kernels read q and v
 * as stored, the rounds' partial results stay fp32, the merge rounds out
 * once); and the backward of softmax over a layout (fused and decoding
 * plans), by attn_bwd: dk, dv and ALGO=0's dq rounded once when stored,
 * ALGO=1's dq summed in fp32 partial buffers (one per SPLIT, allocated per
 * call) and rounded once by the reduction; and adaptive span, forward and
 * backward, by attn_span (dq, dk, dv rounded once by their owners).
 * Which plans stage half storage through fp32: FAVOR+ and Linformer,
 * forward and backward: their products run in CLBlast's fp32 GEMM, because
 * CLBlast's half GEMM accumulates in half (which would break the fp32
 * accumulation above), needs cl_khr_fp16, and CLBlast has no bfloat16 at
 * all.  The plan keeps fp32
 * device workspaces, converts the caller's half q, k and v (and out, dout for a backward) into them
 * on the device, runs the fp32 kernels unchanged and rounds out (dq, dk, dv) to nearest even into
 * the caller's buffers: no host round trip, the same results as an fp32 plan given the half values
 * (the conversion into fp32 is exact).  lse, dspans, dproj_e and dproj_f stay fp32.  The workspaces
 * cost 4 bytes per element of q, k, v and out (2 x (q + k) elements: batch x heads x len x head_dim
 * each) for a staged forward, allocated by sparcl_plan_init(), and 4 x (q + k) more for the
 * backward (dout, dq, dk, dv), allocated by the first backward or sparcl_plan_prepare_backward();
 * they count in sparcl_plan_device_bytes() and the device-memory limit.  Staged calls on one plan
 * share the workspaces and so run one after another on the device (each waits for the previous
 * one), whichever thread or queue enqueues them.  Still refused with SPARCL_ERR_NOT_SUPPORTED,
 * naming the kind and the dtype: the dense CLBlast path (ALGO=1; a softmax forward, which is never
 * staged) and the backward of dynamic block selection (it chooses its blocks again from q and k as
 * stored). */
typedef enum sparcl_dtype {
    SPARCL_DTYPE_F32 = 0,
    SPARCL_DTYPE_F16 = 1,
    SPARCL_DTYPE_BF16 = 2
} sparcl_dtype;

/* "f32", "f16", "bf16" (the tuning database's and the tools' spelling);
 * "unknown" for any other value.  Static. */
SPARCL_API const char *sparcl_dtype_name(int dtype);

/* Bytes per element: 4, 2, 2; 0 for any other value. */
SPARCL_API size_t sparcl_dtype_size(int dtype);

/* Host conversions for preparing and reading half buffers, written out in
 * integer arithmetic (no compiler or library half support needed): n
 * elements from src to dst, which must not overlap.  float -> half and
 * float -> bfloat16 round to nearest, ties to even, as the kernels do when
 * they store; a value beyond the largest finite half (65504; from 65520 on,
 * the rounding boundary) becomes infinity; results below the smallest
 * normal become subnormals or signed zero, correctly rounded; infinities
 * keep their sign; NaN stays NaN (quiet, sign and upper payload bits kept).
 * half/bfloat16 -> float is exact for every bit pattern.  Thread-safe.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT for a NULL pointer with n > 0 (the
 * message via sparcl_ctx_errmsg(NULL)); n = 0 does nothing. */
SPARCL_API sparcl_status sparcl_convert_f32_to_f16(const float *src, uint16_t *dst, size_t n);
SPARCL_API sparcl_status sparcl_convert_f16_to_f32(const uint16_t *src, float *dst, size_t n);
SPARCL_API sparcl_status sparcl_convert_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
SPARCL_API sparcl_status sparcl_convert_bf16_to_f32(const uint16_t *src, float *dst, size_t n);

/* Strides of a 4-D tensor [batch, head, seq, dim] in elements (of the plan's
 * dtype: floats, or 2-byte halves).  The
 * dim stride is always 1.  All zero means contiguous [B, H, S, D]; a tensor
 * stored [B, S, H, D] has head = D, seq = H * D, batch = S * H * D.
 *
 * sparcl_plan_init() checks, for q, k, v and out: no stride is negative;
 * each extent times its stride, the span (the largest element offset + 1,
 * (batch-1)*batch_stride + (heads-1)*head_stride + (len-1)*seq_stride +
 * head_dim) and the span in bytes fit in int64 (kernels index with 64-bit
 * offsets); and the contiguous size of the shape fits as well (the _host
 * calls copy contiguous arrays).  Inputs may overlap (stride 0 broadcasts
 * an axis), but out must not: two work-items would write one element.  The
 * test, sound and sufficient: take the axes of extent > 1, dim (stride 1,
 * extent head_dim) included, in increasing order of stride; each stride
 * must be at least the span of the axes before it (1 + the largest offset
 * they reach).  [B, H, S, D], [B, S, H, D] and padded variants pass; a zero
 * stride on an axis of extent > 1, equal strides on two such axes, or a seq
 * stride below head_dim fail.  The backward writes dq, dk and dv with q's,
 * k's and v's strides, so it applies the same test to those. */
typedef struct sparcl_strides {
    int64_t batch, head, seq;
} sparcl_strides;

/* Where a plan's kernel parameters came from. */
typedef enum sparcl_param_source {
    SPARCL_PARAMS_DEFAULT = 0,  /* built-in defaults */
    SPARCL_PARAMS_OVERRIDE = 1, /* sparcl_plan_desc.params */
    SPARCL_PARAMS_DATABASE = 2  /* a tuning database row */
} sparcl_param_source;

typedef struct sparcl_plan_desc {
    size_t struct_size; /* set by sparcl_plan_desc_init(); see "Versioned structs" */
    int batch;    /* >= 1 */
    int q_heads;  /* >= 1, a multiple of kv_heads */
    int kv_heads; /* >= 1; fewer than q_heads is GQA, 1 is MQA */
    int q_len;    /* query positions, >= 1 */
    int kv_len;   /* key/value positions, >= 1 */
    int head_dim; /* 1 .. SPARCL_MAX_HEAD_DIM, any value */
    float scale;  /* score scale; 0 means 1/sqrt(head_dim) */
    int causal;   /* nonzero: also mask j > i + (kv_len - q_len) */
    /* The pattern; NULL means dense.  Its heads must be 1 or q_heads, its
     * q_len/kv_len those of the plan.  Borrowed during sparcl_plan_init
     * only. */
    const sparcl_layout *layout;
    /* Tensor strides; zeros mean contiguous [B, H, S, D].  lse is always
     * contiguous [B, q_heads, q_len]. */
    sparcl_strides q_strides, k_strides, v_strides, o_strides;
    /* Explicit kernel parameters, or NULL to let the plan choose.  Entries
     * that are missing are filled from the defaults.  Borrowed during
     * sparcl_plan_init only. */
    const sparcl_params *params;
    /* Nonzero: hand `params` to the kernel compiler without checking them
     * against the parameter schema (kernel development, fault testing).
     * Only positivity of BLOCK_M, BLOCK_N and WG_SIZE is still checked; a
     * value the kernel rejects surfaces as SPARCL_ERR_BUILD with the
     * compiler's log in sparcl_ctx_build_log(). */
    int unchecked_params;
    /* Normalization and attention kind (section "Sparse normalizations,
     * kernelized and low-rank attention" below).  All zero, as
     * sparcl_plan_desc_init() leaves them, means softmax attention over the
     * layout as described above. */
    int normalization;        /* a sparcl_normalization */
    float alpha;              /* SPARCL_NORMALIZATION_ENTMAX only: alpha in (1, 2] */
    int attention;            /* a sparcl_attention_kind */
    int features;             /* SPARCL_ATTENTION_FAVOR: random features m >= 1 */
    int proj_len;             /* SPARCL_ATTENTION_LINFORMER: projected length k */
    uint64_t seed;            /* FAVOR+ features and seeded Linformer projections */
    const float *proj_e;      /* Linformer E and F, k x kv_len row-major, or NULL */
    const float *proj_f;      /* for seeded ones; borrowed during sparcl_plan_init */
    /* KV cache paging (section "Decoding" below): 0 (the default) for K and
     * V stored per sequence, else the tokens per page of a paged cache,
     * which sparcl_plan_forward_cache() then requires.  >= 0. */
    int page_size;
    /* Storage type of q, k, v and out, a sparcl_dtype; 0 (F32) is what
     * sparcl_plan_desc_init() leaves, and what a struct from before this
     * field (a smaller struct_size) means.  lse stays float. */
    int dtype;
    /* Dynamic block selection (section "Dynamic block selection" below).
     * select 0 (SPARCL_SELECT_NONE, the default and what a smaller
     * struct_size means) runs `layout` as given; otherwise every call chooses
     * key blocks from q and k, and `layout` (NULL: none) is the pinned
     * pattern kept in addition. */
    int select;       /* a sparcl_select_rule */
    int select_k;     /* SPARCL_SELECT_TOPK: key blocks kept per query block, >= 1 */
    float select_tau; /* SPARCL_SELECT_MASS: estimated softmax mass to reach, in (0, 1] */
    int select_block; /* query and key block of the selection in tokens, >= 0; 0 means 64 */
    /* SPARCL_ATTENTION_SPAN (section "Adaptive attention span" below): the
     * spans z_h >= 0 of the q_heads query heads (NULL: all 0), borrowed
     * during sparcl_plan_init only, and the ramp R > 0 of the soft mask. */
    const float *spans;
    float span_ramp;
    /* SPARCL_ATTENTION_LSH (section "LSH attention" below); 0 elsewhere.
     * The rotations are drawn from `seed`. */
    int lsh_rounds;  /* hash rounds, 1 .. SPARCL_LSH_MAX_ROUNDS */
    int lsh_buckets; /* buckets per round: even, 2 .. SPARCL_LSH_MAX_BUCKETS */
    int lsh_chunk;   /* tokens per chunk of the sorted order, >= 1 */
    /* A plan of the same context made before, typically for another length
     * of the same pattern, or NULL (the default, and what a smaller
     * struct_size means).  When both plans walk a tiled layout (the fused
     * forward, the sparse normalizations, the CLBlast path and decoding)
     * at the same tile (BLOCK_M x BLOCK_N), layout heads and block size,
     * causal rule and diagonal (kv_len - q_len, where causal), the new plan
     * copies from it every tile row that would come out the same -- the
     * layout's block rows under it store the same blocks in both layouts
     * and stop before the last, cut tile column of either kv_len -- and
     * re-blocks only the others; otherwise the plan is built as without it.
     * Results never depend on it.  A window grown by 64 tokens re-blocks
     * about the last 64 + window rows.  Borrowed during sparcl_plan_init
     * only; a plan of another context is SPARCL_ERR_INVALID_ARGUMENT. */
    const struct sparcl_plan *previous;
} sparcl_plan_desc;

/* Fills the first `size` bytes of *desc with the defaults (batch 1, one
 * head, scale 0, not causal, no layout, contiguous strides, no parameter
 * override, softmax, exact attention) and struct_size = size.  Shapes must
 * still be set.  Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL, or a size this
 * library cannot read; nothing is written).  Call it through
 * sparcl_plan_desc_init(). */
SPARCL_API sparcl_status sparcl_plan_desc_init_sized(sparcl_plan_desc *desc, size_t size);

/* sparcl_plan_desc_init_sized(desc, sizeof *desc) with this header's size.
 * NULL does nothing. */
static inline void sparcl_plan_desc_init(sparcl_plan_desc *desc)
{
    if (desc)
        (void)sparcl_plan_desc_init_sized(desc, sizeof *desc);
}

typedef struct sparcl_plan sparcl_plan;

/* Creates a plan: validates the descriptor (naming the first wrong field),
 * chooses kernel parameters, re-blocks the layout to the kernel's tile,
 * builds the program (or takes it from the context's cache) and uploads the
 * layout arrays once.  The plan keeps a reference to `ctx`, which must
 * outlive it.  On failure *out is NULL, nothing is leaked, and the message is
 * on `ctx`.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (shape, a size or stride that
 * overflows or overlaps as described at sparcl_strides, layout mismatch,
 * a parameter map that breaks the rules of the Kernel parameters section,
 * bad parameter, a dtype that is not a sparcl_dtype, a desc->struct_size
 * this library cannot read),
 * SPARCL_ERR_NOT_SUPPORTED (parameters exceed this device's work-group or
 * local-memory limits; in offline mode, a program the bundle lacks; a half
 * dtype with a kind or algorithm that has no half storage, see
 * sparcl_dtype),
 * SPARCL_ERR_CONFIG (SPARCL_KERNEL_DIR names a folder without the kernel
 * files), SPARCL_ERR_BUILD, SPARCL_ERR_OPENCL, SPARCL_ERR_OUT_OF_MEMORY
 * (also when the re-blocked layout or the plan's device memory would
 * exceed the context's limits, sparcl_ctx_set_memory_limit(), checked
 * before allocating). */
SPARCL_API sparcl_status sparcl_plan_init(sparcl_ctx *ctx, sparcl_plan **out,
                                          const sparcl_plan_desc *desc);

/* Frees the plan and its device buffers.  NULL does nothing.  Work already
 * enqueued keeps the buffers alive until it completes. */
SPARCL_API void sparcl_plan_free(sparcl_plan *plan);

/* Enqueues softmax attention on the context's queue:
 *   out[b,h,i,:] = sum_j softmax_j(scale * q[b,h,i,:] . k[b,h/g,j,:]) v[b,h/g,j,:]
 * over the keys j that query i attends to (g = q_heads / kv_heads).  A query
 * that attends to no key gets out = 0 and lse = -inf, and it is the only
 * source of that result.
 *
 * Non-finite inputs propagate as in the double reference (and in every
 * normalization): a row whose attended scores contain a NaN or +inf, or
 * are all -inf, gets NaN in out and lse; a -inf score next to finite ones
 * weighs 0; a NaN in the value of a key the row attends to (with softmax;
 * in the support, with a sparse normalization) makes that output column
 * NaN.  Elements the layout masks out are never read into a row, so NaN
 * there changes nothing -- except for values under the dense algorithm
 * (ALGO=1), whose P V is one GEMM over every key: there a NaN anywhere in
 * a head's v reaches every row of the head (0 * NaN).  FAVOR+ and
 * Linformer mix every key into every row: a NaN in k or v reaches them all.
 *
 * q, k, v, out: buffers of the plan's dtype (float by default, 2-byte
 * elements for SPARCL_DTYPE_F16/BF16) shaped by the descriptor and its
 * strides; out must not alias q, k or v.  lse: NULL, or a float buffer of
 * batch * q_heads * q_len receiving the natural-log sum of exponentials of
 * the scaled scores per row.  The buffers are borrowed: they must stay alive
 * until the returned event completes.  Buffer sizes are checked with
 * clGetMemObjectInfo before anything is enqueued, at the element size of
 * the plan's dtype (a buffer that holds the shape in halves is too small
 * for an F32 plan).
 *
 * num_wait/wait: an OpenCL wait list (may be 0/NULL).  event: NULL, or
 * receives an event the caller must release.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL or too small buffers, a
 * buffer of another cl_context -- as every call that takes buffers),
 * SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_forward(sparcl_plan *plan, cl_mem q, cl_mem k, cl_mem v,
                                             cl_mem out, cl_mem lse, cl_uint num_wait,
                                             const cl_event *wait, cl_event *event);

/* As sparcl_plan_forward(), on `queue` instead of the context's queue
 * (NULL means the context's).  The queue must belong to the context's
 * cl_context and device; it is borrowed for the call.  This is how threads
 * sharing one context and plan run concurrently: one queue per thread.
 * A queue of another context or device is refused; a handle that is not a
 * command queue at all is undefined behaviour, as everywhere in OpenCL
 * (POCL reports it, NVIDIA's driver dereferences it). */
SPARCL_API sparcl_status sparcl_plan_forward_on_queue(sparcl_plan *plan, cl_command_queue queue,
                                                      cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                      cl_mem lse, cl_uint num_wait,
                                                      const cl_event *wait, cl_event *event);

/* Blocking convenience for simple applications: copies host arrays in
 * (contiguous [B, H, S, D] regardless of the descriptor's strides), runs
 * sparcl_plan_forward() and copies out and lse (lse may be NULL) back.
 * q, k, v and out hold elements of the plan's dtype: float for F32 (the
 * pointers were `float *` before dtypes existed; float pointers still
 * convert implicitly, so callers compile unchanged), uint16_t bit patterns
 * for F16 and BF16 (see sparcl_convert_f32_to_f16()).  lse is float. */
SPARCL_API sparcl_status sparcl_plan_forward_host(sparcl_plan *plan, const void *q,
                                                  const void *k, const void *v, void *out,
                                                  float *lse);

/* The kernel parameters the plan uses and where they came from.  Either
 * pointer may be NULL. */
SPARCL_API void sparcl_plan_params(const sparcl_plan *plan, sparcl_params *params,
                                   sparcl_param_source *source);

/* The CLBlast SGEMM parameters the plan applied before its GEMMs run
 * (kernel family "clblast_xgemm": CLBlast's XgemmDirect kernel, whose
 * parameter names they are), into *params (may be NULL), and a sentence on
 * where they came from.  Plans that run CLBlast GEMMs for attention (the
 * dense path, attn_fwd ALGO=1) apply, at creation: the context's
 * sparcl_ctx_set_gemm_params() map if one is set, else the tuning
 * databases' row for the device and the attention problem (the same lookup
 * order, fallbacks and warnings as the plan's own parameters; sparcl-tune
 * stores these rows), else nothing: then params is empty and the sentence
 * says CLBlast uses its own parameters.  Plans that run no such GEMM give
 * an empty map and "".  Applying goes through CLBlastOverrideParameters,
 * which is process-wide per device: it stays in force for later CLBlast
 * calls on the device until another plan applies other parameters, and
 * two threads creating plans on one device with different parameters
 * race.  The pointer is valid for the life of the plan. */
SPARCL_API const char *sparcl_plan_gemm_params(const sparcl_plan *plan, sparcl_params *params);

/* Bytes of device memory the plan itself holds, excluding the caller's
 * tensors: the tiled layout arrays, plus the workspace its parameters need
 * (KT=1: K packed per tile, batch * kv_heads * kv_len * head_dim floats;
 * ALGO=1: the scores of as many heads as fit, q_len x kv_len floats each).
 * CLBlast may allocate temporaries of its own during an ALGO=1 call; they
 * are not counted.  A plan's workspace serializes its calls on the queue.
 * A half plan's fp32 staging workspaces count too (see sparcl_dtype).
 * Not counted: buffers one call allocates for itself and releases when its
 * work is done, so that calls on one plan share nothing: the softmax
 * backward's D (one float per query row) and fp32 partial dQ sums (ALGO=1
 * with SPLIT > 1, a half dq, or a dq created CL_MEM_WRITE_ONLY: SPLIT x
 * batch x q_heads x q_len x head_dim floats), the scratch of FAVOR+,
 * Linformer and LSH
 * calls (features, projections, hash orders and per-round partial results)
 * and the adaptive-span backward's row workspace (2 floats per query row). */
SPARCL_API size_t sparcl_plan_device_bytes(const sparcl_plan *plan);

/* ---- Decoding: few query rows over many keys ----
 *
 * A plan of exact softmax attention with q_len <= 16 (one token at a time
 * over a KV cache, or a few speculative tokens) runs on the split-KV
 * decoding path (flash-decoding) instead of the fused forward when either
 * its parameter override names SPLITS or HEADS (kernel family
 * "attn_decode"), or it has desc.page_size > 0 (a paged KV cache), or it
 * has no override and kv_len >= 256 and kv_len >= 8 q_len.  The key range is cut into at most SPLITS ranges of BLOCK_N-key
 * tiles; one work-group per (range, HEADS query heads of one KV head,
 * batch) reads each key and value row of its range once for all its query
 * heads (under GQA/MQA the K/V traffic is that of the KV heads, not of the
 * query heads).  The group is one work-item on CPUs (WG_SIZE 1, the CPU
 * default) or WG_SIZE lanes across the head dimension (the GPU default, up
 * to 32 lanes of one VEC-vector each): the lanes' partial dot products are
 * summed in local memory, two barriers per key tile, and each lane keeps
 * and writes its own dimensions of the output and writes a partial output and LSE into the plan's
 * workspace (SPLITS x batch x q_heads x q_len x (head_dim + 1) floats,
 * counted in sparcl_plan_device_bytes()); a second kernel merges them as
 * sparcl_merge() does.  K is read as stored: nothing is repacked per call.
 * With PREFETCH 1 (the CPU default) each key row read also hints the same
 * row of the next tile of K and V into the cache (the prefetch instruction
 * on x86-64 and AArch64 targets, OpenCL's prefetch() elsewhere).
 * Results, layouts (causal, window, streaming, block masks, per-head, any
 * pattern), non-finite inputs, lse and the backward are exactly those of
 * the fused forward; sparcl_plan_params() reports the attn_decode
 * parameters (BLOCK_N, EXP, HEADS, PREFETCH, PV_ROWS, SPLITS, VEC,
 * WG_SIZE), tunable like any family.  PV_ROWS (1, 2, 4 or 8; at most
 * HEADS x q_len, and 1 with WG_SIZE > 1) is how many of a work-item's query
 * rows share each load of a V vector in P.V (default 1).
 * Calls of one plan share the workspace, so they run one after another. */

/* ---- KV caches: lengths and pages as call arguments ----
 *
 * A decoding plan (above) also runs over a KV cache whose sequences grow:
 * the plan is made once with kv_len = the cache's capacity per sequence,
 * and each call says how many tokens each sequence holds now, so appending
 * a token needs no new plan.  Sequence b's q_len queries sit at its end,
 * positions kv_lens[b] - q_len + i: they attend its keys j < kv_lens[b],
 * and with desc.causal only j <= i + kv_lens[b] - q_len.
 *
 * Layouts that follow the sequence -- sparcl_layout_init_dense(),
 * _causal(), _window() and _streaming(), made at the plan's kv_len (the
 * capacity) -- apply to every length: each sequence's queries, at
 * positions pos = kv_lens[b] - q_len + i, attend the keys the same
 * constructor would give at length kv_lens[b] (a window's right side and
 * the sinks clipped to the keys there), so a streaming (StreamingLLM) or
 * sliding-window decoder also needs one plan only.  The kernel then visits
 * only the key tiles of the sinks and of the rows' windows, split evenly
 * over SPLITS, so a call reads O(sink + window) keys however long the
 * cache.  Any other layout (block masks, BigBird, unions, per-head lists,
 * ...) is fixed at the plan's kv_len: it takes only lengths equal to it,
 * and other lengths give SPARCL_ERR_NOT_SUPPORTED naming them; such a
 * pattern takes one plan per length, which after the first builds no
 * program (they come from the context's program cache; the split count
 * SPLITS is not a build option) and costs the layout's re-blocking, of
 * only the tile rows that changed when desc.previous names the plan of the
 * previous length.
 *
 * Contiguous cache (desc.page_size 0): k and v as the descriptor's strides
 * say, [batch, kv_heads, capacity, head_dim] by default; only the first
 * kv_lens[b] rows of each sequence are read.
 *
 * Paged cache (desc.page_size P > 0, chosen by the application, as in vLLM
 * and FlexAttention): k and v are pools of pool_pages pages of P tokens;
 * k_strides/v_strides give the page stride in .batch, then .head and .seq
 * within a page (zeros: contiguous [pool_pages, kv_heads, P, head_dim]).
 * block_table (host, batch x ceil(kv_len / P) int32, row-major) maps page
 * p of sequence b to a pool page; only the entries its length reaches,
 * p < ceil(kv_lens[b] / P), are read, and each must lie in [0,
 * pool_pages).  Sequences may share pages (a common prefix).
 *
 * kv_lens (host, batch int32) and block_table are read during the call
 * only (copied to the device with a blocking write on the queue). */

/* Enqueues attention of the plan's queries over the cache as described
 * above; q, out and lse as for sparcl_plan_forward().  For a contiguous
 * cache pass block_table NULL, pool_pages 0 and page_size 0; page_size
 * must be the plan's desc.page_size.  Everything is checked before
 * anything is enqueued, and no cache element outside the lengths and the
 * pool is ever read.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT naming the value: a length outside
 * [0, kv_len], a block table entry outside the pool, a page size the plan
 * was not made for, NULL kv_lens or block_table, too small buffers (k and
 * v must hold the capacity, or the pool); SPARCL_ERR_NOT_SUPPORTED for a
 * plan that is not a decoding plan, or has a layout and a length other than
 * its kv_len; SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_forward_cache(sparcl_plan *plan, cl_command_queue queue,
                                                   cl_mem q, cl_mem k, cl_mem v,
                                                   const int32_t *kv_lens, int page_size,
                                                   const int32_t *block_table, int pool_pages,
                                                   cl_mem out, cl_mem lse, cl_uint num_wait,
                                                   const cl_event *wait, cl_event *event);

/* ---- Dynamic block selection ----
 *
 * A plan with desc.select set chooses, at every forward call, which key
 * blocks each query block attends to, from the data (as MInference,
 * XAttention and SpargeAttn do on CUDA), on the device and in the call's
 * queue: no host round trip, no plan rebuild.  With S = desc.select_block
 * (0 means 64), per (batch, query head, query block r of S rows):
 *   1. pooled q_r and k_c are the means of the block's rows of q and of the
 *      kv head's k (a short last block averages the rows it has);
 *   2. key block c is a candidate when some query of r may see some key of
 *      c: every block without causal; with desc.causal, the blocks with
 *      c * S <= (last query of r) + kv_len - q_len;
 *   3. each candidate scores s_c = scale * (q_r . k_c) (a NaN scores -inf)
 *      and the candidates are ranked by s_c, higher first, ties to the lower
 *      block index;
 *   4. SPARCL_SELECT_TOPK keeps the first min(select_k, candidates);
 *      SPARCL_SELECT_MASS keeps the shortest prefix of the ranking whose
 *      estimated softmax mass sum n_c exp(s_c - max s) (n_c: keys in block
 *      c) reaches select_tau times that of all candidates.
 * Query i then attends key j iff (block (i / S, j / S) is kept, or the
 * pinned desc.layout has (i, j)) and, with causal, j <= i + kv_len - q_len:
 * token-exact, the causal rule cutting kept blocks on the diagonal.  The
 * pinned layout (sinks, a local window, any user layout; 1 or q_heads
 * heads) is combined by union and never counts toward select_k.
 *
 * The chosen tiles are written as the fused forward's tiled layout: kept
 * blocks FULL where the causal rule and the sequence ends do not cut them,
 * pinned tiles with their own masks.  The kernel's tile must divide S: the
 * plan halves BLOCK_M and BLOCK_N of its attn_fwd choice (WG_SIZE and VEC
 * following) until they do, and sparcl_plan_params() reports the tile in
 * use; S must therefore be a multiple of 8 (the smallest BLOCK_N), else
 * sparcl_plan_init() fails with SPARCL_ERR_INVALID_ARGUMENT naming
 * select_block.  ALGO is ignored (the dense path cannot walk a chosen
 * layout).  Device memory, allocated at
 * plan creation: the pooled q and k (O((q_len + kv_len) * head_dim / S)
 * floats per head), 9 bytes per (query block, key block) per head, and 2
 * ints per tile of room per head: per tile row its visible tiles, and with
 * TOPK at most the pinned tiles plus select_k blocks' tiles.
 *
 * Supported: exact softmax (normalization SOFTMAX, attention EXACT), any
 * storage (F32, F16, BF16: the selection pools q and k as stored, in fp32
 * arithmetic; the backward takes F32 plans only, as for every kind), any q_len, kv_len, head_dim, GQA, batch 1 with any strides, and
 * batch > 1 when every tensor's batch stride is its heads times its head
 * stride (contiguous [B, H, S, D]); sparcl_plan_forward() refuses other
 * strides with SPARCL_ERR_NOT_SUPPORTED.
 *
 * Decoding: a plan whose calls are decoding calls (q_len <= 16 and within
 * one selection block, kv_len >= 256 and >= 8 q_len, or an override naming
 * SPLITS or HEADS, as for split-KV decoding without selection) runs the
 * selection over split-KV decoding: one tile row per head at BLOCK_M =
 * q_len, attn_decode's parameters (sparcl_plan_params() reports them; its
 * BLOCK_N halves until it divides select_block), the same rule and the
 * same token-exact pairs.  Each call pools all of k (one read of the
 * keys), then reads k and v only in the kept blocks and the pinned tiles.
 * Paged caches and sparcl_plan_forward_cache() are not supported.
 *
 * Backward: sparcl_plan_backward() (and _host) chooses the blocks again
 * from the call's q and k, with the forward's kernels and arithmetic, so
 * it walks exactly the pairs the forward attended for the same q and k
 * (pass that forward's out and lse); dq, dk and dv are the softmax
 * backward over them (the selection itself is a step function of q and k
 * and has no gradient, as in MInference and SpargeAttn).  The choice is
 * listed on the device at the backward's tile, by tile row and by tile
 * column, in the call's queue.  Parameters come from the attn_bwd family
 * as for any plan (tuning databases, then the defaults;
 * sparcl_plan_prepare_backward() takes an override); BLOCK_M and BLOCK_N
 * are halved until they divide select_block (WG_SIZE following), and
 * sparcl_plan_backward_params() reports the tile in use.  The backward's
 * lists take the same room per head at its own tile, allocated when it is
 * prepared.  The same strides rule as the forward applies.
 *
 * Calls of one plan are ordered through its workspace (each call's
 * selection waits for the previous call, forward or backward), whatever
 * the queue.
 * Errors at sparcl_plan_init(): SPARCL_ERR_INVALID_ARGUMENT naming the
 * field for select not a rule, select_k <= 0 with TOPK, select_tau outside
 * (0, 1] or NaN with MASS, select_block < 0 or not a multiple of 8;
 * SPARCL_ERR_NOT_SUPPORTED for another normalization or attention kind, or
 * page_size > 0. */
typedef enum sparcl_select_rule {
    SPARCL_SELECT_NONE = 0, /* the layout as given */
    SPARCL_SELECT_TOPK = 1, /* select_k key blocks per query block */
    SPARCL_SELECT_MASS = 2, /* the fewest blocks reaching select_tau of the estimated mass */
} sparcl_select_rule;

/* The blocks the last call (forward or backward) of `plan` chose for batch
 * entry `batch`, as a layout: q_heads heads, block select_block, exactly the (i, j) the
 * call attended (kept blocks, union the pinned layout, cut by the causal
 * rule), for inspection, drawing (sparcl-layout's SVG) or a reference
 * forward.  Waits for that call to finish (a blocking read on the
 * context's queue after its event).  *out is the caller's, freed with
 * sparcl_layout_free(); NULL on failure.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL plan or out, a plan without
 * select, batch outside [0, batch), no forward call yet),
 * SPARCL_ERR_OPENCL, SPARCL_ERR_OUT_OF_MEMORY. */
SPARCL_API sparcl_status sparcl_plan_read_selection(sparcl_plan *plan, int batch,
                                                    sparcl_layout **out);

/* ---- Merging partial results ---- */

/* Combines `parts` partial softmax attention results of the same query
 * rows into the exact result over the union of their keys: part p holds
 * out_p (softmax attention of each row over a set of keys S_p, the S_p
 * disjoint, e.g. sparcl_plan_forward() over one slice of a long key range,
 * or one device's share) and lse_p (its natural-log sum of exponentials,
 * the lse output of the forward).  For each row:
 *   m = max_p lse_p,  w_p = exp(lse_p - m),
 *   out = sum_p w_p out_p / sum_p w_p,  lse = m + log sum_p w_p.
 * A part whose lse is -inf saw no key: it weighs 0 and its out is not
 * read.  When every part's lse is -inf the row attends to nothing: out 0,
 * lse -inf -- or NaN in both when some such part's out begins with NaN
 * (the decoding path's mark for keys whose scores were all -inf).  A NaN
 * lse makes the row NaN.
 *
 * Shapes: batch, heads, q_len >= 1, head_dim in [1, SPARCL_MAX_HEAD_DIM].
 * part_out[0 .. parts) and part_lse[0 .. parts): device buffers, each
 * part's out with the strides part_strides (zeros: contiguous [B, H, S,
 * D]; the rules of sparcl_strides), each lse contiguous [batch, heads,
 * q_len].  out: written with o_strides (which must not overlap); lse: NULL
 * or receives the merged lse (contiguous).  out and lse must not be any
 * part's buffer.  Buffers are borrowed until the returned event completes;
 * sizes are checked with clGetMemObjectInfo before anything is enqueued.
 * One kernel launch merges up to 8 parts; more parts chain launches (each
 * folding up to 7 more parts into out), with a temporary lse buffer when
 * lse is NULL.
 *
 * queue: NULL for the context's queue, or a queue of its context and
 * device.  num_wait/wait: an OpenCL wait list.  event: NULL, or receives
 * the event of the last launch, which the caller must release.  The
 * kernel is built on first use (then taken from the context's program
 * cache).  Thread-safe: each call creates its own kernel object.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL ctx, arrays or buffers, a shape
 * or stride out of range, a buffer too small, aliasing, a wait list that
 * does not match num_wait, a queue of another context), SPARCL_ERR_BUILD,
 * SPARCL_ERR_OUT_OF_MEMORY, SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_merge(sparcl_ctx *ctx, cl_command_queue queue, int batch,
                                      int heads, int q_len, int head_dim, int parts,
                                      const cl_mem *part_out, const cl_mem *part_lse,
                                      sparcl_strides part_strides, cl_mem out,
                                      sparcl_strides o_strides, cl_mem lse, cl_uint num_wait,
                                      const cl_event *wait, cl_event *event);

/* ---- Several devices in one host ----
 *
 * A multi-device plan shards one attention call over a list of contexts
 * (one per device, e.g. sparcl_ctx_init_device(&c, "0"), "1", ...; two
 * contexts may also share a device), runs every share at once and returns
 * the result of the single-device call within fp32 rounding.  Each share is
 * an ordinary plan on its context, of the shapes and the slice of the
 * pattern it covers, so it takes that context's tuned parameters, caches
 * and limits.  Three ways to cut (sparcl_shard_mode):
 *   HEADS    query heads, whole groups of a kv head where there are at
 *            least as many kv heads as devices, else the q heads of one kv
 *            head over several devices (MQA).  No device reads another's
 *            K/V heads.
 *   QUERIES  query rows, cut at the pattern's block rows and balanced by
 *            the attended pairs (causal rows do not weigh alike); each
 *            device reads only the keys its rows attend (causal: device 0
 *            the first ones).
 *   KEYS     the key range (context parallelism for one long sequence):
 *            each device attends every query row to its share of keys,
 *            balanced by attended pairs, and the partial outputs are merged
 *            by their LSEs with sparcl_merge() on contexts[0].  Softmax
 *            only (the sparse normalizations' threshold is not a sum over
 *            parts).
 * The causal flag is folded into the pattern first, so every cut is exact
 * whatever q_len and kv_len are.  A device whose share attends nothing gets
 * no plan (its rows: out 0, lse -inf); with fewer units than devices
 * (e.g. QUERIES with one block row) fewer devices work.
 *
 * The calls take host arrays, contiguous [B, H, S, D] whatever the
 * descriptor's strides say (as sparcl_plan_forward_host()): each device
 * receives only its share (rectangular copies, no gather on the host), all
 * devices are enqueued before the call waits for any, and the results come
 * back into the caller's arrays.  Device buffers live for one call.
 * Supported: exact attention (attention EXACT) over any layout, causal or
 * not, GQA/MQA, q_len != kv_len, the softmax and (HEADS, QUERIES) sparse
 * normalizations, F32 storage, and the backward of all of them.
 *
 * The backward takes the full call's out and lse (as the forward wrote
 * them) and hands each share the rows of out, lse and dout it covers:
 * with the full row's lse every share's gradients are exact parts of the
 * whole.  dq of a row is the sum over the shares that hold the row (KEYS),
 * dk and dv of a key the sum over the shares that read it (QUERIES, and
 * HEADS when a kv head is split), added on the host in shard order, so
 * results are deterministic.
 *
 * Errors are recorded on contexts[0] (sparcl_ctx_errmsg(contexts[0]));
 * a share's own failure is copied there after "shard S (contexts[C]): ".
 * Threading: as plans (a multi-plan holds no per-call state); the
 * contexts' queues are shared with their other users.
 */

typedef enum sparcl_shard_mode {
    SPARCL_SHARD_HEADS = 0,
    SPARCL_SHARD_QUERIES = 1,
    SPARCL_SHARD_KEYS = 2
} sparcl_shard_mode;

/* Most contexts one multi-device plan takes. */
#define SPARCL_MULTI_MAX_DEVICES 64

typedef struct sparcl_multi_plan sparcl_multi_plan;

/* Creates a multi-device plan of `desc` (as sparcl_plan_init() reads and
 * validates it; strides are ignored, page_size must be 0) over contexts[0
 * .. count), cut as `mode` (a sparcl_shard_mode): computes the shares,
 * slices the pattern and creates each share's plan on its context.  The
 * contexts are borrowed and must outlive the plan; the array itself and
 * desc (with its layout and params) are read during the call only.
 * count == 1 gives one share over the whole call: the plain plan's
 * result.  On failure *out is NULL and nothing is leaked.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL out or contexts, count outside
 * [1, SPARCL_MULTI_MAX_DEVICES] or a NULL contexts[0] -- these with the
 * message on sparcl_ctx_errmsg(NULL) --, a later NULL or a repeated
 * context, an unknown mode, the descriptor's own errors, q_heads x q_len x
 * kv_len beyond int64), SPARCL_ERR_NOT_SUPPORTED (FAVOR+ or
 * Linformer, a half dtype, page_size > 0, KEYS with a sparse
 * normalization, dynamic block selection: desc.select not NONE), and any
 * error of a share's sparcl_plan_init() on its context. */
SPARCL_API sparcl_status sparcl_multi_plan_init(sparcl_ctx *const *contexts, int count,
                                                sparcl_multi_plan **out,
                                                const sparcl_plan_desc *desc, int mode);

/* Frees the plan and its shares' plans.  NULL does nothing. */
SPARCL_API void sparcl_multi_plan_free(sparcl_multi_plan *plan);

/* Blocking: out (and lse, when not NULL) of the whole call from host
 * arrays q, k, v (contiguous; sizes those of sparcl_plan_forward_host()).
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL plan or array; the message on
 * sparcl_ctx_errmsg(NULL) for a NULL plan), SPARCL_ERR_OUT_OF_MEMORY (a
 * device buffer), SPARCL_ERR_OPENCL, and a share's forward errors. */
SPARCL_API sparcl_status sparcl_multi_plan_forward_host(sparcl_multi_plan *plan, const float *q,
                                                        const float *k, const float *v,
                                                        float *out, float *lse);

/* Builds every share's backward resources (sparcl_plan_prepare_backward(
 * share, NULL)), which the first backward call does otherwise.  Errors:
 * those of the preparation, with the share named. */
SPARCL_API sparcl_status sparcl_multi_plan_prepare_backward(sparcl_multi_plan *plan);

/* Blocking: dq, dk and dv (contiguous host arrays, overwritten) of the
 * whole call, as sparcl_plan_backward_host() defines them, from the
 * forward's inputs, its out and lse (both required, as the forward wrote
 * them for the whole call) and dout.  Keys no share reads get dk = dv = 0.
 * Errors: as sparcl_multi_plan_forward_host(), and the backward's. */
SPARCL_API sparcl_status sparcl_multi_plan_backward_host(sparcl_multi_plan *plan, const float *q,
                                                         const float *k, const float *v,
                                                         const float *out, const float *lse,
                                                         const float *dout, float *dq, float *dk,
                                                         float *dv);

/* One share of a multi-device plan. */
typedef struct sparcl_shard_info {
    size_t struct_size;  /* set by sparcl_shard_info_init(); see "Versioned structs" */
    int context;         /* index into the plan's contexts */
    int head0, heads;    /* query heads [head0, head0 + heads) */
    int kv_head0, kv_heads;
    int row0, rows;      /* query rows */
    int key0, keys;      /* keys the share reads: its range, trimmed to the attended ones */
    int64_t pairs;       /* attended (query, key) pairs over its heads, one batch entry;
                            0: the share attends nothing and has no plan */
    size_t device_bytes; /* sparcl_plan_device_bytes() of its plan */
} sparcl_shard_info;

/* Sets struct_size (and zeroes the rest). */
static inline void sparcl_shard_info_init(sparcl_shard_info *info)
{
    if (info) {
        info->struct_size = sizeof *info;
        info->context = info->head0 = info->heads = info->kv_head0 = info->kv_heads = 0;
        info->row0 = info->rows = info->key0 = info->keys = 0;
        info->pairs = 0;
        info->device_bytes = 0;
    }
}

/* Number of shares (at most the number of contexts; 0 for NULL). */
SPARCL_API int sparcl_multi_plan_shard_count(const sparcl_multi_plan *plan);

/* Fills *info (the fields its struct_size covers) for share `index`.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL, index out of range, a
 * struct_size that is not that of a sparcl_shard_info). */
SPARCL_API sparcl_status sparcl_multi_plan_shard(const sparcl_multi_plan *plan, int index,
                                                 sparcl_shard_info *info);

/* ------------------------------------------------------------------------
 * CPU reference
 * ---------------------------------------------------------------------- */

/* Double-precision masked softmax attention on the host, with the same
 * semantics as sparcl_plan_forward() (layout, causal, GQA, scale) on
 * contiguous [B, H, S, D] arrays.  `desc` strides and params are ignored.
 * out: batch*q_heads*q_len*head_dim doubles; lse: NULL or batch*q_heads*q_len
 * doubles.  O(pairs * head_dim) time, O(kv_len) extra memory.  ctx may be
 * NULL (it only receives the error message). */
SPARCL_API sparcl_status sparcl_reference_forward(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                                  const float *q, const float *k, const float *v,
                                                  double *out, double *lse);

/* ---- Tuning: search spaces, device fingerprints, tuning databases ---- */
/*
 * The interface sparcl-tune (or any other tuner) drives the library with.  A
 * kernel family ("attn_fwd", ...) declares its parameter space as data; a
 * tuner enumerates it, filters candidates with sparcl_kernel_check_params(),
 * runs each one through sparcl_plan_init() with sparcl_plan_desc.params set,
 * and records the outcome in a tuning database.  Plans read the database
 * when they are created:
 *
 *   1. sparcl_plan_desc.params, if given (source OVERRIDE);
 *   2. the user database: the path set with sparcl_ctx_set_tuning_db(), else
 *      $SPARCL_DB, else $XDG_CACHE_HOME/sparcl/tuning.db (~/.cache/...);
 *   3. the shipped database (installed with the library, or in the build
 *      tree), unless turned off with sparcl_ctx_set_tuning_db();
 *   4. the built-in defaults (source DEFAULT).
 *
 * Within a database the lookup takes the chosen row of each problem (the
 * finalists' decision, else the fastest evaluation) of the current kernel
 * hash only, and prefers the exact device fingerprint, then the same device
 * under another driver or limits (used, with a warning naming each field
 * that differs and both values), then the same vendor and device
 * type except on CPUs (a CPU device's name carries the instruction set the
 * driver compiles for, and rows of another one can be slower than the
 * defaults: 1.30x on dense attention between POCL's haswell and
 * skylake-avx512 devices of one AMD EPYC); within that, the exact problem, else the nearest one in
 * log-space of the sizes and density whose parameters are valid for this problem.  A row of another
 * problem lends its tiles and vector widths but not the parameters that follow the problem's
 * parallelism: attn_bwd's SPLIT is derived for this problem as its default is (key-tile partitions
 * until every compute unit has a work-item: a 1-head problem on 2 compute units gets 2, a 2-head or
 * 8-head one 1), unless that value does not fit the rest of the row, which then keeps its own.  The
 * first database with a usable row wins.  A database that is missing is
 * skipped quietly; one that is corrupt, of another schema version, locked
 * for longer than 250 ms or unreadable is skipped with a
 * SPARCL_LOG_WARNING through the log callback.  A lookup never fails plan
 * creation, and a tuned row whose program fails to build falls back to the
 * defaults with a warning.
 *
 * A context remembers the rows it read from each database (per kernel
 * family, hash and dtype) and reads the file again only when it changes:
 * its identity, size or modification time, or its write-ahead log's size
 * or header (SQLite appends every commit there).  A plan for a new length
 * then costs about 0.1 ms instead of the 1.8 ms of reading SQLite (POCL,
 * CPU).  Rows committed by a tuner while this context was reading reach
 * its plans at the database's next change.
 */

/* Number of kernel families the library knows, and the name of family i
 * (0 <= i < count; NULL out of range).  Static strings. */
SPARCL_API int sparcl_kernel_count(void);
SPARCL_API const char *sparcl_kernel_name(int index);

#define SPARCL_PARAM_CHOICES_MAX 32

/* One kernel family's parameter space: names and candidate values
 * (ascending).  Constraints between parameters and the device's limits are
 * checked by sparcl_kernel_check_params(), not encoded here. */
typedef struct sparcl_param_space {
    int count;
    struct {
        char name[SPARCL_PARAM_NAME_MAX];
        int n_choices;
        int32_t choices[SPARCL_PARAM_CHOICES_MAX];
        const char *doc; /* one-line description, static */
    } item[SPARCL_PARAMS_MAX];
} sparcl_param_space;

/* Fills *space with the parameters of kernel family `kernel`.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL or unknown family).  ctx may be
 * NULL (it only receives the message).  Thread-safe. */
SPARCL_API sparcl_status sparcl_kernel_space(sparcl_ctx *ctx, const char *kernel,
                                             sparcl_param_space *space);

/* Restricts parameter `name` of *space to `values` (n_values >= 1), a
 * subset of its current choices in any order (duplicates count once); the
 * kept choices stay ascending.  Call it once per parameter to restrict
 * several; a single value pins the parameter.  The restriction only
 * removes candidates: a search over the result still filters them with
 * sparcl_kernel_check_params(), and a plan still accepts any valid value.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL argument, n_values < 1, a name
 * the space lacks, a value that is not among its choices); *space is then
 * unchanged.  ctx may be NULL (it only receives the message). */
SPARCL_API sparcl_status sparcl_param_space_restrict(sparcl_ctx *ctx, sparcl_param_space *space,
                                                     const char *name, const int32_t *values,
                                                     int n_values);

/* The same from text: rule is "NAME=v1,v2,..." (e.g. "BLOCK_M=8,16,32";
 * "NAME=v" pins one value), what sparcl-tune's --space and --fix take.
 * Errors as sparcl_param_space_restrict(), plus malformed text. */
SPARCL_API sparcl_status sparcl_param_space_restrict_text(sparcl_ctx *ctx,
                                                          sparcl_param_space *space,
                                                          const char *rule);

/* Checks a complete parameter set of `kernel` for the problem `desc` on the
 * context's device: every parameter present with an allowed value, the
 * constraints between parameters, and the work-group, local- and
 * private-memory formulas against the device's limits.  Nothing is built or
 * launched.  Returns SPARCL_OK, SPARCL_ERR_INVALID_ARGUMENT (naming the
 * first violation) or SPARCL_ERR_NOT_SUPPORTED (a device limit, or in
 * offline mode a parameter set whose program the bundle does not hold). */
SPARCL_API sparcl_status sparcl_kernel_check_params(sparcl_ctx *ctx, const char *kernel,
                                                    const sparcl_plan_desc *desc,
                                                    const sparcl_params *params);

/* The built-in default parameters of `kernel` for `desc` on the context's
 * device (what a plan uses when no database has a row).  *params is
 * overwritten. */
SPARCL_API sparcl_status sparcl_kernel_default_params(sparcl_ctx *ctx, const char *kernel,
                                                      const sparcl_plan_desc *desc,
                                                      sparcl_params *params);

/* Writes the 16-hex-digit hash of every source file family `kernel` builds
 * (the common header included; for attn_fwd also the dense path's
 * attn_dense_softmax.cl), its fixed build options and its parameter space
 * into buf (size >= 17).  It changes whenever any of that code does, which
 * retires tuned rows.  Honors
 * SPARCL_KERNEL_DIR like program building does (SPARCL_ERR_CONFIG when its
 * folder lacks the files). */
SPARCL_API sparcl_status sparcl_kernel_hash(sparcl_ctx *ctx, const char *kernel, char *buf,
                                            size_t size);

/* The device fingerprint a tuning row is keyed by. */
typedef struct sparcl_device_info {
    char platform[128]; /* CL_PLATFORM_NAME */
    char vendor[128];   /* CL_DEVICE_VENDOR */
    char name[128];     /* CL_DEVICE_NAME */
    char driver[128];   /* CL_DRIVER_VERSION */
    char version[128];  /* CL_DEVICE_VERSION */
    char type[16];      /* "CPU", "GPU", "ACCELERATOR" or "OTHER" */
    uint32_t compute_units;
    /* Bytes.  global_mem and max_alloc are 0 on CPU devices: their drivers
     * (POCL) derive them from the memory free at start-up, so they do not
     * identify the device; the database applies the same rule to every row
     * it stores or is asked about. */
    uint64_t global_mem, local_mem, max_alloc;
} sparcl_device_info;

/* Fills *info for the context's device. */
SPARCL_API sparcl_status sparcl_ctx_device_info(sparcl_ctx *ctx, sparcl_device_info *info);

/* A tuning problem: the key of a row besides the device. */
typedef struct sparcl_tuning_problem {
    char kernel[32];      /* family, "attn_fwd" */
    char kernel_hash[17]; /* sparcl_kernel_hash() */
    char dtype[8];        /* sparcl_dtype_name() of desc.dtype: "f32", "f16", "bf16" */
    int batch, q_heads, kv_heads, q_len, kv_len, head_dim;
    int causal;       /* the plan's causal flag */
    char pattern[32]; /* layout family for people ("dense", "window", ...) */
    int block;        /* the layout's block size, 0 without a layout */
    double density;   /* attended pairs / (heads * q_len * kv_len), causal flag included */
} sparcl_tuning_problem;

/* Describes the problem `desc` (shapes, layout, causal flag) for kernel
 * family `kernel`, with `pattern` (NULL: "dense", or "layout" with a layout)
 * as its family name.  Computes the kernel hash and the density.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT for NULL pointers, an unknown family,
 * or a descriptor sparcl_plan_init() would refuse (same checks, same
 * messages). */
SPARCL_API sparcl_status sparcl_tuning_problem_init(sparcl_ctx *ctx, sparcl_tuning_problem *out,
                                                    const char *kernel,
                                                    const sparcl_plan_desc *desc,
                                                    const char *pattern);

/* Outcome of one evaluation. */
typedef enum sparcl_tuning_status {
    SPARCL_TUNING_OK = 0,           /* verified and timed */
    SPARCL_TUNING_INVALID = 1,      /* rejected by the plan (constraint or device limit) */
    SPARCL_TUNING_BUILD_ERROR = 2,  /* the program did not build */
    SPARCL_TUNING_LAUNCH_ERROR = 3, /* enqueue or execution failed */
    SPARCL_TUNING_WRONG = 4,        /* result outside the tolerance of the reference */
    SPARCL_TUNING_TIMEOUT = 5,      /* the watchdog stopped it */
    SPARCL_TUNING_CRASH = 6         /* the evaluating process died */
} sparcl_tuning_status;

/* "ok", "invalid", "build_error", "launch_error", "wrong", "timeout",
 * "crash" (the database's spelling); "unknown" otherwise.  Static. */
SPARCL_API const char *sparcl_tuning_status_string(sparcl_tuning_status status);

typedef struct sparcl_tuning_result {
    sparcl_params params;
    sparcl_tuning_status status;
    double median_ms, min_ms, max_ms; /* event times of one call; 0 unless OK */
    int runs;                         /* timed repetitions */
    double max_err;                   /* vs the reference; < 0 if never run */
    char message[256];                /* why it failed, "" if OK */
} sparcl_tuning_result;

/* An open tuning database. */
typedef struct sparcl_tuning_db sparcl_tuning_db;

/* Flags of sparcl_tuning_db_init(). */
#define SPARCL_TUNING_DB_READ 0  /* read only; the file must exist */
#define SPARCL_TUNING_DB_WRITE 1 /* read-write; creates the file and its folder */

/* Writes the default user database path ($SPARCL_DB, else
 * $XDG_CACHE_HOME/sparcl/tuning.db, else $HOME/.cache/sparcl/tuning.db)
 * into buf.  SPARCL_ERR_INVALID_ARGUMENT if none can be formed or buf is too
 * small. */
SPARCL_API sparcl_status sparcl_tuning_db_default_path(char *buf, size_t size);

/* Opens (with SPARCL_TUNING_DB_WRITE: creates, applies db/schema.sql, turns
 * on WAL) the database at `path`.  The file's application id and schema
 * version are checked; a file whose permission bits forbid writing is
 * refused for WRITE even to root.  Writers wait up to 10 s for a lock.  ctx
 * may be NULL; it receives messages and must outlive the handle.
 * One handle must not be used by two threads at once; open one per thread.
 * Errors: SPARCL_ERR_DATABASE naming the file and the reason (not a sparcl
 * database, schema version N (expected M), locked, read-only, corrupt...),
 * SPARCL_ERR_INVALID_ARGUMENT, SPARCL_ERR_OUT_OF_MEMORY. */
SPARCL_API sparcl_status sparcl_tuning_db_init(sparcl_ctx *ctx, sparcl_tuning_db **out,
                                               const char *path, int flags);

/* Closes the database.  NULL does nothing. */
SPARCL_API void sparcl_tuning_db_free(sparcl_tuning_db *db);

/* Commits one evaluation (its own transaction, durable when this returns).
 * An evaluation of the same device, kernel hash, problem and parameters
 * that is already stored is kept and this one is ignored, so concurrent
 * tuners never duplicate rows.  Refused with SPARCL_ERR_INVALID_ARGUMENT
 * naming the field, storing nothing: NULL pointers; a text field of the
 * device, problem or result (message) that is not NUL-terminated within its
 * array; result params that break the map rules (Kernel parameters
 * section); a status outside sparcl_tuning_status, runs < 0; for
 * SPARCL_TUNING_OK also runs < 1, a min/median/max time that is not finite
 * and >= 0 or not ordered min <= median <= max, and a max_err that is not
 * finite and >= 0.  find, best and count check their device, problem and
 * params the same way.  Other errors: SPARCL_ERR_DATABASE. */
SPARCL_API sparcl_status sparcl_tuning_db_record(sparcl_tuning_db *db,
                                                 const sparcl_device_info *device,
                                                 const sparcl_tuning_problem *problem,
                                                 const sparcl_tuning_result *result);

/* Finds the stored evaluation of exactly these parameters (for resuming).
 * *found is 1 and *out filled if there is one, else 0. */
SPARCL_API sparcl_status sparcl_tuning_db_find(sparcl_tuning_db *db,
                                               const sparcl_device_info *device,
                                               const sparcl_tuning_problem *problem,
                                               const sparcl_params *params,
                                               sparcl_tuning_result *out, int *found);

/* The chosen evaluation of exactly this device and problem: the decision
 * stored by sparcl_tuning_db_decide() if there is one, else the fastest OK
 * evaluation (plans read the same choice). */
SPARCL_API sparcl_status sparcl_tuning_db_best(sparcl_tuning_db *db,
                                               const sparcl_device_info *device,
                                               const sparcl_tuning_problem *problem,
                                               sparcl_tuning_result *out, int *found);

/* Number of stored evaluations of this device and problem (any status). */
SPARCL_API sparcl_status sparcl_tuning_db_count(sparcl_tuning_db *db,
                                                const sparcl_device_info *device,
                                                const sparcl_tuning_problem *problem,
                                                int64_t *count);

/* The n fastest OK evaluations of exactly this device and problem, fastest
 * first (the finalists a tuner re-times).  *count receives how many were
 * written to out[0..n-1]. */
SPARCL_API sparcl_status sparcl_tuning_db_fastest(sparcl_tuning_db *db,
                                                  const sparcl_device_info *device,
                                                  const sparcl_tuning_problem *problem, int n,
                                                  sparcl_tuning_result *out, int *count);

/* One configuration re-timed after the search, in `rounds` separate
 * evaluations interleaved with the other finalists.  round_* are the
 * median, smallest and largest of its per-evaluation medians (the spread
 * across evaluations); speedup* compare it with the default round by round
 * (default time / its time: median, smallest and largest ratio; 1 for the
 * default itself). */
typedef struct sparcl_tuning_finalist {
    sparcl_params params;
    int rounds;
    double round_ms, round_lo_ms, round_hi_ms;
    double cpu_ms; /* median process CPU time of one call; < 0 if not measured */
    double speedup, speedup_lo, speedup_hi;
} sparcl_tuning_finalist;

/* Stores the re-timing of n finalists (each must already be recorded, with
 * status OK) and makes finalists[chosen] the decision for this device and
 * problem, replacing any earlier one: from then on sparcl_tuning_db_best()
 * and plans return it instead of the fastest evaluation.  One transaction.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (n < 1, chosen out of range),
 * SPARCL_ERR_DATABASE (a finalist is not an OK evaluation of this key). */
SPARCL_API sparcl_status sparcl_tuning_db_decide(sparcl_tuning_db *db,
                                                 const sparcl_device_info *device,
                                                 const sparcl_tuning_problem *problem,
                                                 const sparcl_tuning_finalist *finalists, int n,
                                                 int chosen);

/* What sparcl_tuning_db_claim() found. */
typedef enum sparcl_tuning_claim {
    SPARCL_TUNING_CLAIM_TAKEN = 0,  /* now claimed by this process: measure, record, release */
    SPARCL_TUNING_CLAIM_STORED = 1, /* already measured: sparcl_tuning_db_find() has it */
    SPARCL_TUNING_CLAIM_BUSY = 2    /* claimed by another process that is alive, lease running */
} sparcl_tuning_claim;

/* Claims the evaluation of `params` for this process (host name and pid)
 * for lease_s seconds, so that tuners sharing a database never measure the
 * same candidate.  A claim whose lease has expired, or whose owner on this
 * host no longer runs, is taken over; this process's own claim is renewed.
 * One transaction; *state says what was found. */
SPARCL_API sparcl_status sparcl_tuning_db_claim(sparcl_tuning_db *db,
                                                const sparcl_device_info *device,
                                                const sparcl_tuning_problem *problem,
                                                const sparcl_params *params, double lease_s,
                                                sparcl_tuning_claim *state);

/* Drops this process's claim on `params` (after recording it, or when giving
 * it up).  A claim of another process is left alone. */
SPARCL_API sparcl_status sparcl_tuning_db_release(sparcl_tuning_db *db,
                                                  const sparcl_device_info *device,
                                                  const sparcl_tuning_problem *problem,
                                                  const sparcl_params *params);

/* Writes every evaluation to `path`: CSV with a header when it ends in
 * ".csv", else SQL text (INSERTs into the evaluation_flat view) that the
 * sqlite3 CLI or sparcl_tuning_db_import() loads on top of db/schema.sql.
 * Rows are sorted, so exports diff well.  A regular file is replaced
 * atomically (written to `path`.tmp, then renamed; on failure the old file
 * is untouched); a path that exists and is not a regular file (/dev/null,
 * /dev/stdout, a FIFO) is written in place. */
SPARCL_API sparcl_status sparcl_tuning_db_export(sparcl_tuning_db *db, const char *path);

/* Merges a file written by sparcl_tuning_db_export() (CSV or SQL, by
 * extension) into the database in one transaction; rows already present
 * are kept.  SQL files may contain only INSERTs into evaluation_flat (and
 * BEGIN/COMMIT).  *rows, if not NULL, receives the number of rows read. */
SPARCL_API sparcl_status sparcl_tuning_db_import(sparcl_tuning_db *db, const char *path,
                                                 int64_t *rows);

/* Which databases plans of this context read.  role SPARCL_TUNING_DB_USER
 * or SPARCL_TUNING_DB_SHIPPED; path NULL restores the default rule, ""
 * turns that source off.  The path is copied.  Call it before creating
 * plans (it takes the context's lock; plans created meanwhile see either
 * value).  Errors: SPARCL_ERR_INVALID_ARGUMENT (role, over-long path). */
typedef enum sparcl_tuning_db_role {
    SPARCL_TUNING_DB_USER = 0,
    SPARCL_TUNING_DB_SHIPPED = 1
} sparcl_tuning_db_role;
SPARCL_API sparcl_status sparcl_ctx_set_tuning_db(sparcl_ctx *ctx, sparcl_tuning_db_role role,
                                                  const char *path);

/* Makes plans of this context created from now on apply `params` (every
 * parameter of kernel family "clblast_xgemm"; missing ones take the
 * family's defaults) to their CLBlast GEMMs instead of looking tuned rows
 * up (see sparcl_plan_gemm_params()); NULL restores the lookup.  The map is
 * copied.  A map that names another parameter or breaks the family's
 * constraints makes those plans fail (SPARCL_ERR_INVALID_ARGUMENT or
 * SPARCL_ERR_NOT_SUPPORTED naming the rule), as CLBlast refusing it does.
 * For tuners.  Errors: SPARCL_ERR_INVALID_ARGUMENT (ctx NULL). */
SPARCL_API sparcl_status sparcl_ctx_set_gemm_params(sparcl_ctx *ctx, const sparcl_params *params);

/* The database file plans of this context read for `role` (after the rule
 * above: the set path, else the default one), or "" when that source is
 * off or has no file, into buf (always NUL-terminated).  For tools that
 * walk the same rows as the runtime.  Errors: SPARCL_ERR_INVALID_ARGUMENT. */
SPARCL_API sparcl_status sparcl_ctx_tuning_db_path(sparcl_ctx *ctx, sparcl_tuning_db_role role,
                                                   char *buf, size_t size);

/* Called once per best row; the pointers are valid during the call only. */
typedef void (*sparcl_tuning_row_fn)(void *user, const sparcl_device_info *device,
                                     const sparcl_tuning_problem *problem,
                                     const sparcl_params *params, double median_ms);

/* Walks the fastest OK evaluation of every (device, problem) of kernel
 * family `kernel` at the current kernel hash (the rows plans may use), on
 * every device; filter by device in `fn`.  ctx may be NULL (messages).
 * Errors: SPARCL_ERR_INVALID_ARGUMENT, SPARCL_ERR_DATABASE. */
SPARCL_API sparcl_status sparcl_tuning_db_each_best(sparcl_ctx *ctx, sparcl_tuning_db *db,
                                                    const char *kernel, sparcl_tuning_row_fn fn,
                                                    void *user);

/* Called once per stored evaluation by sparcl_tuning_db_each_row(); the
 * pointers are valid during the call only.  Return 0 to go on, anything
 * else to stop the walk. */
typedef int (*sparcl_tuning_eval_fn)(void *user, const sparcl_device_info *device,
                                     const sparcl_tuning_problem *problem,
                                     const sparcl_tuning_result *result);

/* Walks every stored evaluation (any status, any kernel hash, any device)
 * of kernel family `kernel`, or of every family when `kernel` is NULL: for
 * tools (replay, transfer across sizes, reports) that must not read the
 * file themselves.  Rows come grouped by their key (device, family, kernel
 * hash, problem) and in stored order within a group, so the first row of a
 * tuner's run is its first evaluation.  device is given in the database's
 * identity (memory sizes 0 on CPU devices); result->median_ms etc. are 0
 * and max_err < 0 where the row has none.  A row whose params this library
 * cannot read is skipped.  The walk stops early, returning SPARCL_OK, when
 * fn returns nonzero.  Errors: SPARCL_ERR_INVALID_ARGUMENT (db or fn NULL),
 * SPARCL_ERR_DATABASE (on the handle's context). */
SPARCL_API sparcl_status sparcl_tuning_db_each_row(sparcl_tuning_db *db, const char *kernel,
                                                   sparcl_tuning_eval_fn fn, void *user);

/* A sentence on where the plan's parameters came from, e.g. "database
 * /home/u/.cache/sparcl/tuning.db: exact device, exact problem" or
 * "built-in defaults".  Valid for the life of the plan. */
SPARCL_API const char *sparcl_plan_params_origin(const sparcl_plan *plan);

/* ---- Layout patterns from the literature ---- */

/*
 * Generators for the published sparse-attention patterns.  Each is defined
 * below token by token; the stored blocks are only the storage.  Common to
 * all of them:
 *
 *  - pos(i) = i + (kv_len - q_len) is the key position of query i
 *    (bottom-right alignment, as for the foundation layouts).
 *  - "causal" (where a generator takes it) additionally requires
 *    j <= pos(i).  A plan's own causal flag does the same on any layout.
 *  - heads is the number of layout heads (1, or one per query head); a
 *    generator without per-head options repeats one pattern on every head.
 *    Any layout is broadcast over the batch by the plan.
 *  - Block-level patterns (BigBird, global blocks) are defined on the
 *    layout's block size b in key positions: the "block" of query i is
 *    floor(pos(i) / b), that of key j is floor(j / b).  With q_len == kv_len
 *    these are exactly the stored block rows and columns.
 *  - Time and memory are O(stored blocks + b^2 per partially attended
 *    block), never O(q_len * kv_len) (except for patterns that are that
 *    dense).  Nothing depends on global state; random choices come from a
 *    seed and a splitmix64 generator, identical on every platform.
 *  - ctx, out, the shape limits and the failure convention are those of
 *    the foundation constructors: on failure *out is NULL and the message
 *    on ctx names the parameter (SPARCL_ERR_INVALID_ARGUMENT), or
 *    SPARCL_ERR_OUT_OF_MEMORY.
 */

/* Dilated sliding window (Longformer's dilated heads): query i attends key
 * j iff d = j - pos(i) satisfies -left <= d <= right and d is a multiple of
 * the head's dilation.  `dilation` is NULL (1 on every head: the plain
 * window) or an array of `heads` values >= 1, one per head.  The array is
 * read during the call only. */
SPARCL_API sparcl_status sparcl_layout_init_dilated_window(sparcl_ctx *ctx, sparcl_layout **out,
                                                           int heads, int q_len, int kv_len,
                                                           int block, int left, int right,
                                                           const int *dilation);

/* Global tokens (Longformer global attention): for the key positions
 * g in positions[0..count), query i attends key j iff j is global (every
 * query sees it) or pos(i) is global (that query sees every key); with
 * causal, also j <= pos(i).  Positions must lie in [0, kv_len); duplicates
 * are allowed; count 0 gives an empty layout. */
SPARCL_API sparcl_status sparcl_layout_init_global(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                   int q_len, int kv_len, int block,
                                                   const int *positions, int count, int causal);

/* Global blocks (BigBird's ITC form): with nb = ceil(kv_len / block), the
 * global blocks are G = [0, first) and [nb - last, nb).  Query i attends key
 * j iff floor(j / block) is in G or floor(pos(i) / block) is in G; with
 * causal, also j <= pos(i).  first, last >= 0 (clipped to nb). */
SPARCL_API sparcl_status sparcl_layout_init_global_blocks(sparcl_ctx *ctx, sparcl_layout **out,
                                                          int heads, int q_len, int kv_len,
                                                          int block, int first, int last,
                                                          int causal);

/* Strided (Sparse Transformer, Child et al. 2019, both factorized heads in
 * one pattern), stride l >= 1: with t = pos(i) - j, query i attends key j
 * iff |t| <= l or t is a multiple of l; with causal (the paper's form),
 * also t >= 0, i.e. the previous l positions and every l-th one. */
SPARCL_API sparcl_status sparcl_layout_init_strided(sparcl_ctx *ctx, sparcl_layout **out,
                                                    int heads, int q_len, int kv_len, int block,
                                                    int stride, int causal);

/* Parameters of the "fixed" pattern (Sparse Transformer), token units.
 * DeepSpeed's FixedSparsityConfig is this pattern with stride =
 * num_local_blocks * b and summary = num_global_blocks * b. */
typedef struct sparcl_fixed_desc {
    size_t struct_size; /* set by sparcl_fixed_desc_init(); see "Versioned structs" */
    int stride;     /* l >= 1: the local windows are [m*l, (m+1)*l) */
    int summary;    /* c in [0, l]: summary tokens at the end of each window */
    int patterns;   /* >= 1, patterns * summary <= stride: head h uses summary
                       slot h % patterns (DeepSpeed's num_different_global_patterns) */
    int horizontal; /* nonzero: summary positions also attend to every key */
    int causal;     /* nonzero: j <= pos(i) (DeepSpeed's "unidirectional") */
} sparcl_fixed_desc;

/* Defaults: stride 128, summary 16, patterns 1, not horizontal, causal. */
/* sparcl_fixed_desc_init_sized() writes the first `size` bytes (defaults and
 * struct_size = size); sparcl_fixed_desc_init() passes this header's sizeof (see
 * "Versioned structs").  Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL, size). */
SPARCL_API sparcl_status sparcl_fixed_desc_init_sized(sparcl_fixed_desc *desc, size_t size);
static inline void sparcl_fixed_desc_init(sparcl_fixed_desc *desc)
{
    if (desc)
        (void)sparcl_fixed_desc_init_sized(desc, sizeof *desc);
}

/* Fixed pattern: with q = h % patterns and S_h = {x : l - (q+1)c <= x mod l
 * < l - q c}, query i of head h attends key j iff floor(j / l) ==
 * floor(pos(i) / l) (same window), or j is in S_h (summary column), or
 * (horizontal) pos(i) is in S_h; with causal, also j <= pos(i).  A short
 * last window has summary tokens only where it reaches them. */
SPARCL_API sparcl_status sparcl_layout_init_fixed(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                  int q_len, int kv_len, int block,
                                                  const sparcl_fixed_desc *desc);

/* Parameters of BigBird (Zaheer et al. 2020), in blocks of the layout. */
typedef struct sparcl_bigbird_desc {
    size_t struct_size; /* set by sparcl_bigbird_desc_init(); see "Versioned structs" */
    int window;       /* w >= 0: blocks on each side of the query's block */
    int global_first; /* >= 0: leading global blocks */
    int global_last;  /* >= 0: trailing global blocks */
    int random;       /* r >= 0: random blocks per query block */
    uint64_t seed;    /* the random choice is a function of (seed, head, block) */
    int per_head;     /* nonzero: each head draws its own random blocks */
    int causal;       /* nonzero: j <= pos(i); random blocks from the past only */
} sparcl_bigbird_desc;

/* Defaults: window 1 (three sliding blocks), global_first 1, global_last 1,
 * random 3, seed 0, per_head 1, not causal. */
/* sparcl_bigbird_desc_init_sized() writes the first `size` bytes (defaults and
 * struct_size = size); sparcl_bigbird_desc_init() passes this header's sizeof (see
 * "Versioned structs").  Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL, size). */
SPARCL_API sparcl_status sparcl_bigbird_desc_init_sized(sparcl_bigbird_desc *desc, size_t size);
static inline void sparcl_bigbird_desc_init(sparcl_bigbird_desc *desc)
{
    if (desc)
        (void)sparcl_bigbird_desc_init_sized(desc, sizeof *desc);
}

/* BigBird: with b = block, nb = ceil(kv_len / b), Q = floor(pos(i) / b),
 * K = floor(j / b) and G the global blocks as in
 * sparcl_layout_init_global_blocks(), query i attends key j iff
 * |K - Q| <= w, or K in G, or Q in G, or K is one of the random blocks of
 * (head, Q); with causal, also j <= pos(i).  The random blocks of query
 * block Q in [0, nb) are min(r, A) distinct blocks drawn uniformly from the
 * A blocks outside the window and G (causal: also below Q - w), by a
 * splitmix64 stream seeded from (seed, head if per_head else 0, Q).  Query
 * blocks below 0 (q_len > kv_len) draw none. */
SPARCL_API sparcl_status sparcl_layout_init_bigbird(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                    int q_len, int kv_len, int block,
                                                    const sparcl_bigbird_desc *desc);

/* Parameters of Longformer (Beltagy et al. 2020). */
typedef struct sparcl_longformer_desc {
    size_t struct_size; /* set by sparcl_longformer_desc_init(); see "Versioned structs" */
    int left, right;      /* >= 0: window extents in tokens (w/2 each in the paper) */
    const int *dilation;  /* NULL (1) or `heads` values >= 1: per-head dilation */
    const int *global;    /* key positions with global attention, in [0, kv_len) */
    int n_global;         /* >= 0 entries in global */
    int causal;           /* nonzero: j <= pos(i) */
} sparcl_longformer_desc;

/* Defaults: left 256, right 256, no dilation, no global tokens, not
 * causal. */
/* sparcl_longformer_desc_init_sized() writes the first `size` bytes (defaults and
 * struct_size = size); sparcl_longformer_desc_init() passes this header's sizeof (see
 * "Versioned structs").  Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL, size). */
SPARCL_API sparcl_status sparcl_longformer_desc_init_sized(sparcl_longformer_desc *desc, size_t size);
static inline void sparcl_longformer_desc_init(sparcl_longformer_desc *desc)
{
    if (desc)
        (void)sparcl_longformer_desc_init_sized(desc, sizeof *desc);
}

/* Longformer: the union of sparcl_layout_init_dilated_window(left, right,
 * dilation) and sparcl_layout_init_global(global), intersected with
 * j <= pos(i) when causal.  The arrays are read during the call only. */
SPARCL_API sparcl_status sparcl_layout_init_longformer(sparcl_ctx *ctx, sparcl_layout **out,
                                                       int heads, int q_len, int kv_len, int block,
                                                       const sparcl_longformer_desc *desc);

/* Streaming / A-shape (StreamingLLM attention sinks, MInference's
 * A-shape): query i attends key j iff j <= pos(i) and (j < sink or
 * pos(i) - j <= local).  sink, local >= 0. */
SPARCL_API sparcl_status sparcl_layout_init_streaming(sparcl_ctx *ctx, sparcl_layout **out,
                                                      int heads, int q_len, int kv_len, int block,
                                                      int sink, int local);

/* Parameters of vertical-slash (MInference).  Lists of all heads are
 * concatenated in head order; a NULL counts array means one list shared by
 * every head, of length n_columns / n_offsets. */
typedef struct sparcl_vertical_slash_desc {
    size_t struct_size; /* set by sparcl_vertical_slash_desc_init(); see "Versioned structs" */
    const int *columns;       /* key positions in [0, kv_len) */
    const int *column_counts; /* `heads` counts, or NULL */
    int n_columns;            /* length of the shared list when column_counts is NULL */
    const int *offsets;       /* diagonals pos(i) - j, in [1 - q_len, kv_len - 1] */
    const int *offset_counts; /* `heads` counts, or NULL */
    int n_offsets;            /* length of the shared list when offset_counts is NULL */
    int causal;               /* nonzero: j <= pos(i) (MInference's setting) */
} sparcl_vertical_slash_desc;

/* Zero lists, causal. */
/* sparcl_vertical_slash_desc_init_sized() writes the first `size` bytes (defaults and
 * struct_size = size); sparcl_vertical_slash_desc_init() passes this header's sizeof (see
 * "Versioned structs").  Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL, size). */
SPARCL_API sparcl_status sparcl_vertical_slash_desc_init_sized(sparcl_vertical_slash_desc *desc, size_t size);
static inline void sparcl_vertical_slash_desc_init(sparcl_vertical_slash_desc *desc)
{
    if (desc)
        (void)sparcl_vertical_slash_desc_init_sized(desc, sizeof *desc);
}

/* Vertical-slash: query i of head h attends key j iff j is one of head h's
 * columns or pos(i) - j is one of head h's offsets; with causal, also
 * j <= pos(i).  The arrays are read during the call only. */
SPARCL_API sparcl_status sparcl_layout_init_vertical_slash(sparcl_ctx *ctx, sparcl_layout **out,
                                                           int heads, int q_len, int kv_len,
                                                           int block,
                                                           const sparcl_vertical_slash_desc *desc);

/* ---- User-defined layouts and combinators ---- */

/* From BSR arrays of FULL blocks: for head h and block row r (nbr =
 * ceil(q_len / block), nbc = ceil(kv_len / block)), the block columns
 * col_idx[row_ptr[h*nbr + r] .. row_ptr[h*nbr + r + 1]) are attended in
 * full (clipped to the sequence).  row_ptr has heads*nbr + 1 entries,
 * starts at 0 and never decreases; columns lie in [0, nbc), in any order,
 * at most nbc per row; duplicates count once.  No block at all is rejected
 * as invalid.  The arrays are read during the call only. */
SPARCL_API sparcl_status sparcl_layout_init_bsr(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                int q_len, int kv_len, int block,
                                                const int64_t *row_ptr, const int32_t *col_idx);

/* From token-level CSR arrays: query i of head h attends the keys
 * col_idx[row_ptr[h*q_len + i] .. row_ptr[h*q_len + i + 1]).  row_ptr has
 * heads*q_len + 1 entries, starts at 0 and never decreases; keys lie in
 * [0, kv_len), any order, duplicates count once.  No pair at all is
 * rejected as invalid.  The arrays are read during the call only; the
 * build keeps a sorted copy while it runs (O(nnz) memory). */
SPARCL_API sparcl_status sparcl_layout_init_csr(sparcl_ctx *ctx, sparcl_layout **out, int heads,
                                                int q_len, int kv_len, int block,
                                                const int64_t *row_ptr, const int32_t *col_idx);

/* A pattern as a function: nonzero if query i of head h attends key j. */
typedef int (*sparcl_layout_predicate)(void *user, int head, int i, int j);

/* From a predicate, evaluated once per (head, i, j) during the call, from
 * the calling thread only: O(heads * q_len * kv_len) calls, so meant for
 * experiments and moderate lengths.  A predicate that attends no pair at all
 * is rejected as invalid. */
SPARCL_API sparcl_status sparcl_layout_init_predicate(sparcl_ctx *ctx, sparcl_layout **out,
                                                      int heads, int q_len, int kv_len, int block,
                                                      sparcl_layout_predicate fn, void *user);

/* Union: query i of head h attends key j iff it does in any of layouts[0 ..
 * count).  All layouts have the same q_len and kv_len; each has 1 head
 * (broadcast) or H heads, and the result has max heads.  Block sizes may
 * differ; the result uses layouts[0]'s.  count in [1, 8].  The inputs are
 * borrowed during the call only.  Time O(stored blocks of the inputs). */
SPARCL_API sparcl_status sparcl_layout_init_union(sparcl_ctx *ctx, sparcl_layout **out,
                                                  const sparcl_layout *const *layouts, int count);

/* Intersection: as sparcl_layout_init_union(), "in every one of". */
SPARCL_API sparcl_status sparcl_layout_init_intersection(sparcl_ctx *ctx, sparcl_layout **out,
                                                         const sparcl_layout *const *layouts,
                                                         int count);

/* Per-head assembly: the heads of layouts[0], then those of layouts[1],
 * ..., become heads 0, 1, ... of the result (for example one 1-head layout
 * per query head, a different pattern on each).  Same q_len and kv_len;
 * block sizes may differ (the result uses layouts[0]'s); count >= 1. */
SPARCL_API sparcl_status sparcl_layout_init_per_head(sparcl_ctx *ctx, sparcl_layout **out,
                                                     const sparcl_layout *const *layouts,
                                                     int count);

/* Slice: the rectangle of `layout` at queries [q0, q0 + q_len) and keys
 * [k0, k0 + kv_len), as a layout of q_len x kv_len with the parent's
 * heads: query i of head h attends key j iff the parent has query q0 + i
 * attend key k0 + j, and, when `causal` is nonzero, also k0 + j <= q0 + i
 * + (parent kv_len - parent q_len) (the parent's causal mask, which a plan
 * over the slice could not express: its own causal flag aligns the slice's
 * corners).  block: the slice's block size, 0 for the parent's.  Unlike
 * the other constructors, a slice may attend no pair at all (then
 * sparcl_layout_pairs() is 0): that is how a caller learns that a shard of
 * keys is never attended by a shard of queries.  The parent is borrowed
 * during the call only.  Time O(stored blocks of the slice + block^2 per
 * PARTIAL block) plus a binary search per parent block row.  This is what
 * sparcl_mpi's ring runs each (query shard, key shard) pair with.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL layout or out, a rectangle
 * outside the parent, a shape out of the layout limits),
 * SPARCL_ERR_OUT_OF_MEMORY. */
SPARCL_API sparcl_status sparcl_layout_init_slice(sparcl_ctx *ctx, sparcl_layout **out,
                                                  const sparcl_layout *layout, int causal, int q0,
                                                  int q_len, int k0, int kv_len, int block);

/* Packed variable-length batch (FlashAttention's varlen, FlexAttention's
 * document mask): `count` sequences of different lengths packed one after
 * another along the sequence axis, as one layout.  Sequence s owns the
 * packed query rows [cu_q[s], cu_q[s + 1]) and the packed keys [cu_k[s],
 * cu_k[s + 1]) (cu_q == cu_k for self-attention); packed query i = cu_q[s]
 * + a attends packed key j = cu_k[s] + b iff seqs[s] has a attend b (NULL:
 * dense, every key of the sequence).  No pair crosses from one sequence to
 * another.  Each sequence keeps its own pattern and its own alignment:
 * build seqs[s] at its lengths, e.g. sparcl_layout_init_causal() for causal
 * attention per sequence (bottom-right aligned when it has fewer queries
 * than keys, as a plan's causal flag is); the same layout may serve every
 * sequence of one length.
 *
 * A plan over the packed layout (q_len = cu_q[count], kv_len =
 * cu_k[count], desc.causal 0: causality belongs to each sequence's layout)
 * runs the whole batch in one call with q, k, v and out packed as [H,
 * total, D] (batch 1), forward and backward, any kind that takes a layout;
 * a batch of one query row per sequence over long keys takes the decoding
 * path like any plan with q_len <= 16.  Only stored blocks are visited, so
 * the work is that of the sequences, not of a batch padded to the longest
 * one.  A new batch needs a new layout and plan; the plan reuses every
 * built program (sparcl-bench --varlen reports what that costs against a
 * call).
 *
 * count >= 1.  cu_q and cu_k have count + 1 entries, start at 0 and never
 * decrease; a sequence may be empty (0 queries or 0 keys: it attends
 * nothing and its seqs entry must be NULL), but the totals must be
 * >= 1.  Each non-NULL seqs[s] has q_len and kv_len equal to its
 * sequence's lengths and 1 head (broadcast) or H heads, the same H for
 * every one; the result has H heads (1 when all have 1).  block: the
 * packed layout's block size, 0 for that of the first non-NULL seqs entry
 * (64 if none).  The arrays and layouts are borrowed during the call only.
 * Time O(stored blocks of the result + block^2 per block on a sequence
 * boundary or over a PARTIAL sequence block).
 * Errors: SPARCL_ERR_INVALID_ARGUMENT naming the value (NULL out, cu_q,
 * cu_k or seqs; count < 1; an offsets array that does not start at 0,
 * decreases (it names the sequence) or totals 0; a seqs entry whose
 * lengths or heads disagree; a total beyond the layout limits; a batch that
 * attends no pair at all), SPARCL_ERR_OUT_OF_MEMORY. */
SPARCL_API sparcl_status sparcl_layout_init_varlen(sparcl_ctx *ctx, sparcl_layout **out, int count,
                                                   const int32_t *cu_q, const int32_t *cu_k,
                                                   const sparcl_layout *const *seqs, int block);

/* Records a failure on `ctx` exactly as sparcl's own calls do (the message
 * returned by sparcl_ctx_errmsg(), the log callback; ctx NULL: the calling
 * thread's slot) and returns `status`.  For components built on the public
 * API, such as sparcl_mpi (include/sparcl_mpi.h), so that their errors read
 * like the library's.  message may be NULL ("").  Thread-safe. */
SPARCL_API sparcl_status sparcl_ctx_fail(sparcl_ctx *ctx, sparcl_status status,
                                         const char *message);

/* ---- Layout introspection ---- */

typedef struct sparcl_layout_stats {
    int heads, q_len, kv_len, block;
    int block_rows, block_cols;        /* per head */
    int64_t nnz_blocks;                /* stored blocks, all heads */
    int64_t full_blocks, partial_blocks;
    int64_t pairs;                     /* attended (query, key) pairs, all heads */
    double density;                    /* pairs / (heads * q_len * kv_len) */
    int64_t row_blocks_min, row_blocks_max; /* stored blocks per block row, any head */
    double row_blocks_mean;
    size_t bytes;                      /* host memory of the layout's arrays */
} sparcl_layout_stats;

/* Fills *stats.  O(heads * block rows).  Errors: SPARCL_ERR_INVALID_ARGUMENT
 * for NULL (message via sparcl_ctx_errmsg(NULL)). */
SPARCL_API sparcl_status sparcl_layout_get_stats(const sparcl_layout *layout,
                                                 sparcl_layout_stats *stats);

/* A read-only view of a layout's BSR arrays (see the Layouts section): head
 * h, block row r owns entries [row_ptr[h*(block_rows+1) + r],
 * row_ptr[h*(block_rows+1) + r + 1]) with ascending col; mask[e] is -1 for
 * FULL, else the index of the PARTIAL block's bit mask in bits (words_per_mask
 * 64-bit words, bit r*block + c for element (r, c)).  */
typedef struct sparcl_layout_bsr {
    int heads, block, block_rows, block_cols, words_per_mask;
    int64_t nnz, n_masks;
    const int64_t *row_ptr; /* heads * (block_rows + 1) */
    const int32_t *col;     /* nnz */
    const int64_t *mask;    /* nnz */
    const uint64_t *bits;   /* n_masks * words_per_mask */
} sparcl_layout_bsr;

/* Fills *view with pointers into the layout, valid until it is freed (a
 * layout is immutable, so any thread may read them).  Errors:
 * SPARCL_ERR_INVALID_ARGUMENT for NULL. */
SPARCL_API sparcl_status sparcl_layout_get_bsr(const sparcl_layout *layout,
                                               sparcl_layout_bsr *view);
/* ---- Sparse normalizations, kernelized and low-rank attention ----
 *
 * Three fields of sparcl_plan_desc choose what a plan computes instead of
 * softmax attention over the layout; sparcl_plan_forward() and friends run
 * it with the same buffers, strides, events and threading rules.
 *
 * normalization (with attention = SPARCL_ATTENTION_EXACT or LINFORMER):
 *   alpha-entmax weights p_j = [(alpha - 1) s_j - tau]_+ ^ (1 / (alpha - 1))
 *   over the attended keys j of a row, s_j = scale * q . k_j, with the
 *   threshold tau chosen so that the weights sum to 1.  alpha = 2 is
 *   sparsemax, the Euclidean projection of s onto the simplex; alpha = 1.5
 *   is 1.5-entmax; alpha -> 1 would be softmax.  Weights are exactly 0 below
 *   the threshold, non-negative, and sum to 1; a row that attends to no key
 *   gets out = 0.  The lse output receives tau instead of a log-sum-exp (so
 *   the weights can be recomputed from the scores, as LSE allows for
 *   softmax), -inf for rows that attend to no key.
 *   How: tau is found over the row's attended scores only, by recomputing
 *   scores in passes over the row's tiles, never storing an N x N matrix nor
 *   any per-pair workspace.  The first pass keeps the TOPK largest scores
 *   per row (a kernel parameter) and solves for tau on them exactly (sort
 *   formula for alpha = 2 and 1.5, bisection otherwise); when the support
 *   turns out to be larger than TOPK, further passes narrow tau on a grid of
 *   thresholds, finishing with the closed form on the exact support for
 *   alpha = 2 and 1.5.  A last pass accumulates the weighted values.  With a
 *   small support (the usual case for sparsemax) this costs two score passes.
 *   The backward (sparcl_plan_backward()) recomputes the weights from tau.
 *
 * attention = SPARCL_ATTENTION_FAVOR (Performer FAVOR+):
 *   softmax attention approximated with `features` = m positive orthogonal
 *   random features: phi(x) = exp(w_r . x - |x|^2 / 2) / sqrt(m), x = q or k
 *   times sqrt(scale), the w_r drawn from `seed` as orthogonal blocks with
 *   chi-distributed norms.  out_i = phi(q_i) . sum_j phi(k_j) v_j^T divided
 *   by phi(q_i) . sum_j phi(k_j), over every key (non-causal) or j <= i
 *   (causal, computed in chunks: CLBlast products inside a chunk, a prefix
 *   sum kernel across chunks).  Stabilized as in the paper's code: before
 *   the exponential, each query row subtracts its own largest w_r . x and the
 *   keys of a (batch, head) subtract their common largest one (constants
 *   that cancel in the ratio), and 1e-6 is added to each feature.  No layout,
 *   no lse (pass NULL), softmax normalization only; causal needs q_len ==
 *   kv_len.  Matrix products run in CLBlast on the plan's queue, which must
 *   be in-order (the context's queue is); its first use in a process builds
 *   CLBlast's kernels (tens of seconds on POCL).
 *
 * attention = SPARCL_ATTENTION_LINFORMER:
 *   keys and values are first projected along the sequence, K' = E K and
 *   V' = F V with E, F of proj_len x kv_len (given in proj_e/proj_f, or drawn
 *   from `seed` with N(0, 1/proj_len) entries when NULL), the same for every
 *   batch and head; then attention over the proj_len projected keys with the
 *   plan's normalization.  lse is that of the projected attention.  Not
 *   causal, no layout.  Projections run in CLBlast (same queue rule as
 *   FAVOR+).
 *
 * CLBlast keeps its built programs in one process-wide cache.  Freeing a
 * context whose plans used CLBlast clears that cache (CLBlast can only clear
 * all of it), so CLBlast calls of other live contexts rebuild their kernels
 * once, from POCL's or the driver's binary cache where there is one.
 *
 * sparcl_reference_forward() honours `normalization` (tau in lse) and
 * refuses FAVOR+ and Linformer descriptors with SPARCL_ERR_NOT_SUPPORTED:
 * their random matrices live in the plan; the tests hold their oracles.
 *
 * Errors at sparcl_plan_init(): SPARCL_ERR_INVALID_ARGUMENT for an unknown
 * normalization or kind, alpha outside (1, 2], features < 1 or above
 * SPARCL_MAX_FEATURES, proj_len outside [1, kv_len]; SPARCL_ERR_NOT_SUPPORTED
 * for combinations sparcl does not implement (causal Linformer, a layout
 * with FAVOR+ or Linformer, FAVOR+ with a sparse normalization, causal
 * FAVOR+ with q_len != kv_len). */

typedef enum sparcl_normalization {
    SPARCL_NORMALIZATION_SOFTMAX = 0,
    SPARCL_NORMALIZATION_SPARSEMAX = 1, /* alpha = 2 */
    SPARCL_NORMALIZATION_ENTMAX15 = 2,  /* alpha = 1.5 */
    SPARCL_NORMALIZATION_ENTMAX = 3     /* alpha from sparcl_plan_desc.alpha */
} sparcl_normalization;

typedef enum sparcl_attention_kind {
    SPARCL_ATTENTION_EXACT = 0,  /* every attended pair of the layout */
    SPARCL_ATTENTION_FAVOR = 1,  /* Performer FAVOR+ random features */
    SPARCL_ATTENTION_LINFORMER = 2, /* keys and values projected along the sequence */
    SPARCL_ATTENTION_SPAN = 3, /* adaptive span: a learned soft causal window per head */
    SPARCL_ATTENTION_LSH = 4   /* Reformer LSH attention, shared QK ("LSH attention") */
} sparcl_attention_kind;

/* Largest FAVOR+ feature count. */
#define SPARCL_MAX_FEATURES 4096

/* Redraws the random matrices of a FAVOR+ plan (its features) or of a
 * Linformer plan (E and F, replacing given ones by seeded ones) from `seed`,
 * and uploads them with a blocking write on the context's queue.  Must not
 * race with a forward call on the same plan.  Errors:
 * SPARCL_ERR_INVALID_ARGUMENT (NULL plan, or a plan of another kind),
 * SPARCL_ERR_OPENCL, SPARCL_ERR_OUT_OF_MEMORY. */
SPARCL_API sparcl_status sparcl_plan_redraw(sparcl_plan *plan, uint64_t seed);

/* Copies the features of a FAVOR+ plan, features x head_dim row-major
 * floats (the unscaled w_r), into `omega`, owned by the caller.  Blocking.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL pointers, not a FAVOR+ plan),
 * SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_read_features(sparcl_plan *plan, float *omega);

/* Copies the projections of a Linformer plan, proj_len x kv_len row-major
 * floats each, into `e` and `f` (either may be NULL), owned by the caller.
 * Blocking.  Errors: SPARCL_ERR_INVALID_ARGUMENT (not a Linformer plan),
 * SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_read_projections(sparcl_plan *plan, float *e, float *f);

/* Replaces the projections of a Linformer plan with `e` and `f` (proj_len x
 * kv_len row-major floats each, either NULL to keep that one), copied with
 * a blocking write on the context's queue: how training hands updated E and
 * F (sparcl_plan_backward_proj()) back to the plan.  Must not race with a
 * forward or backward call on the same plan.  Errors:
 * SPARCL_ERR_INVALID_ARGUMENT (NULL plan, not a Linformer plan),
 * SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_write_projections(sparcl_plan *plan, const float *e,
                                                       const float *f);

/* ---- LSH attention (Reformer, Kitaev et al. 2020) ----
 *
 * attention = SPARCL_ATTENTION_LSH: shared-QK attention within buckets of
 * angular locality-sensitive hashing, softmax only, q_len == kv_len = N.
 * Exactly what a plan computes, per batch b and query head h:
 *
 *   keys      k_j = q_j / ||q_j|| (the same batch and q head; k_j = 0 when
 *             q_j = 0).  The k tensor is not read: pass any buffer of k's
 *             shape (q itself when kv_heads == q_heads).  Values come from
 *             v of kv head h / (q_heads / kv_heads) (GQA/MQA share values).
 *   rotations round r = 0 .. lsh_rounds-1 has R_r, head_dim x (lsh_buckets
 *             / 2) floats, row-major: independent N(0, 1) draws from
 *             desc.seed (splitmix64 and Box-Muller in double, rounded to
 *             float), shared by every batch and head.
 *   bucket    per token i and round r, in float arithmetic:
 *             x_c = fma(q_i[D-1], R_r[D-1][c], ... fma(q_i[0], R_r[0][c],
 *             0)), the fused multiply-adds taken in order t = 0 .. D-1;
 *             y = [x; -x] (lsh_buckets values); bucket = the smallest index
 *             c attaining the largest non-NaN y_c (0 if none exceeds
 *             -inf).  Kernel and reference evaluate this same float chain
 *             (fma is correctly rounded in C and OpenCL), so buckets agree
 *             token for token wherever the device keeps float subnormals
 *             (CL_FP_DENORM); sparcl_plan_lsh_order() shows them.
 *   sort      per (b, h, r), the tokens ordered stably by bucket: by
 *             (bucket, position).  On the device: a counting sort per
 *             (b, h, r), stable because it scatters tokens in position
 *             order.
 *   chunks    sorted position p lies in chunk p / lsh_chunk.  The query at
 *             sorted position p (token i) attends the tokens at sorted
 *             positions of its own chunk and of the chunk before (none
 *             before chunk 0: no wrap-around), with causal only those
 *             j <= i, and never itself unless that leaves nothing; then
 *             it attends to itself alone.
 *   round     out_r, lse_r: softmax attention of i over that key set S_r(i)
 *             with scores scale * q_i . k_j.
 *   result    the rounds merged by LSE as sparcl_merge() does (with the
 *             stacked merge kernel): m = max_r lse_r, out = sum_r
 *             exp(lse_r - m) out_r / sum_r exp(lse_r - m), lse = m + log
 *             sum_r exp(lse_r - m): softmax over the multiset union of the
 *             rounds' key sets (a key found in two rounds counts twice, as
 *             in the Reformer without its duplicate correction).
 *
 * Work O(B H lsh_rounds N (D lsh_buckets / 2 + 2 lsh_chunk D)); memory
 * O(lsh_rounds B H N D) of per-call workspace (each round's partial output
 * and lse, each round's keys in sorted order, the bucket ids, the sorted
 * order, the key norms), allocated by each call and released when its work
 * completes, so calls never share state.  Five kernels per call:
 * attn_lsh_hash (every round's bucket of every token, and 1/||q||),
 * attn_lsh_sort (one work-item per (b, h, r)), attn_lsh_gather (each
 * round's keys q / ||q|| in sorted order, in transposed tiles of BLOCK_N),
 * attn_lsh_chunk (BLOCK_M sorted queries per work-item, BLOCK_N keys per
 * step, VEC along the head dimension: kernel family "attn_lsh", tuned as
 * any family), then attn_merge_stacked.
 *
 * Errors at sparcl_plan_init(): SPARCL_ERR_INVALID_ARGUMENT naming the
 * field for lsh_rounds outside [1, SPARCL_LSH_MAX_ROUNDS], lsh_buckets odd
 * or outside [2, SPARCL_LSH_MAX_BUCKETS], lsh_chunk < 1;
 * SPARCL_ERR_NOT_SUPPORTED for q_len != kv_len, a layout, a normalization
 * other than softmax.  F16 and BF16: q and v are read as stored, the
 * output rounded once (see sparcl_dtype; sparcl_plan_lsh_order() hashes q
 * as stored too, to the buckets of its fp32 values).  The backward is not
 * implemented:
 * every backward call on an LSH plan returns SPARCL_ERR_NOT_SUPPORTED.
 * sparcl_reference_forward() covers LSH descriptors (the same rotations,
 * its own bucketing, sort and double-precision attention). */

#define SPARCL_LSH_MAX_ROUNDS 64
#define SPARCL_LSH_MAX_BUCKETS 4096

/* The bucket ids and the sorted order an LSH plan computes for q (a
 * device buffer of the plan's q shape and strides), for inspection:
 * buckets[((b * q_heads + h) * lsh_rounds + r) * N + i] is the bucket of
 * token i in round r, order[... + p] the token at sorted position p (both
 * host arrays of batch * q_heads * lsh_rounds * N int32, either may be
 * NULL).  Runs the plan's hash and sort kernels on `queue` (NULL: the
 * context's) and blocks until the copies are done.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL plan or q, a plan of another
 * kind, q too small or of another cl_context), SPARCL_ERR_OUT_OF_MEMORY,
 * SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_lsh_order(sparcl_plan *plan, cl_command_queue queue,
                                               cl_mem q, int32_t *buckets, int32_t *order);

/* The reference's buckets and sorted order for an LSH descriptor and
 * contiguous host q ([B, q_heads, N, D]), laid out as
 * sparcl_plan_lsh_order() writes them (either may be NULL).  ctx may be
 * NULL.  Errors: SPARCL_ERR_INVALID_ARGUMENT (not an LSH descriptor, bad
 * fields), SPARCL_ERR_OUT_OF_MEMORY. */
SPARCL_API sparcl_status sparcl_reference_lsh_order(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                                    const float *q, int32_t *buckets,
                                                    int32_t *order);

/* ---- Backward pass ---- */

/* The backward pass of a plan's attention (dQ, dK, dV), FlashAttention-2
 * style: the attention weights are recomputed tile by tile from q, k and the
 * forward's LSE, so device memory stays O(N * head_dim) plus the layout.
 * Supported: plans of exact attention (attention EXACT) over a layout with
 * softmax, whichever forward algorithm they use (fused or dense path), and
 * with sparsemax, 1.5-entmax or alpha-entmax (normalization SPARSEMAX,
 * ENTMAX15, ENTMAX), with every layout and option such a forward supports
 * (causal, GQA/MQA, PARTIAL blocks, q_len != kv_len); FAVOR+ plans (causal
 * or not, GQA) and Linformer plans, both described below.  A plan of a kind
 * without a backward returns SPARCL_ERR_NOT_SUPPORTED from every backward
 * call, with a message naming the kind and listing the supported ones.
 *
 * FAVOR+ (SPARCL_ATTENTION_FAVOR): the gradients of exactly the forward's
 * function of q, k and v, features held fixed (the random projection w_r is
 * not a parameter).  That function includes the stabilizers: a query row's
 * own largest projection and a key head's largest one are subtracted before
 * the exponential, so with the 1e-6 added to each feature the output
 * depends on them slightly, and their (sub)gradient flows to the one
 * projection that attains the maximum (the first, on ties).  The forward
 * products are recomputed (no lse: pass NULL as lse; out is not read); the
 * gradients are formed with CLBlast products of O(N m (D + 1)) work and
 * O(N (m + D)) device memory, never N x N (causal: chunks of 64 rows, as
 * the forward, with a suffix sum of the query-side states across chunks).
 * sparcl_plan_prepare_backward() builds the kernels and accepts no
 * parameters (NULL or an empty map; the source reported is
 * SPARCL_PARAMS_DEFAULT).
 *
 * Linformer (SPARCL_ATTENTION_LINFORMER): K' = E K and V' = F V are
 * recomputed, the inner attention's backward gives dQ, dK' and dV' (its
 * parameters, prepare and lse are those of the inner exact-attention plan,
 * whose normalization picks the backward as above; the reference, and so
 * the tests, cover softmax only), then dK = E^T dK',
 * dV = F^T dV' and, with sparcl_plan_backward_proj(), dE = sum over batch
 * and kv heads of dK' K^T and dF = sum of dV' V^T.
 *
 * The backward kernels have their own parameters (softmax: kernel family
 * "attn_bwd": ALGO, BLOCK_M, BLOCK_N, EXP, SPLIT, USE_LOCAL, VEC, WG_SIZE;
 * sparse normalizations: "attn_entmax_bwd": BLOCK_M, BLOCK_N, VEC,
 * WG_SIZE, with BLOCK_M / WG_SIZE query rows and BLOCK_N / WG_SIZE keys per
 * work-item, each at most 16, the latter a power of two) and their own tile, so the plan keeps a
 * copy of its layout and re-blocks it for the backward.  These resources (the tile lists by row and
 * by column, the programs) are built once: by sparcl_plan_prepare_backward(), or else by the first
 * backward call.  Two algorithms for softmax: ALGO=0  separate dQ and dK/dV kernels, each
 * recomputing the scores; the GPU configuration (WG_SIZE work-items per group, USE_LOCAL stages
 * shared rows in local memory); SPLIT must be 1. ALGO=1  one pass per key tile: dK and dV of the
 * tile and dS K added into dQ (2/7 fewer FLOPs); WG_SIZE=1 and USE_LOCAL=0 only (the CPU
 * configuration, the default on CPU devices).  SPLIT > 1 lets SPLIT work-items share a kv head's
 * key tiles, each adding into its own partial dQ buffer (SPLIT x the size of dq, allocated per
 * call), summed afterwards in a fixed order.  A plan of a half dtype adds into such fp32 buffers
 * with SPLIT = 1 too (one, 4 bytes per element of dq), so that dq is rounded once. BLOCK_M /
 * WG_SIZE query rows and BLOCK_N / WG_SIZE keys per work-item are vector lanes (at most 16 each);
 * EXP picks the exponential (0 exp2, 1 native_exp2, 2 a polynomial, VEC lanes at a time); VEC is
 * also the vector width of the row copies and of ALGO=1's dQ update.  A built-in default that the
 * device cannot take (the program's local memory, counted for the dQ and dK/dV kernels together, or
 * as the device's compiler reports it) falls back to smaller tiles or USE_LOCAL=0; parameters the
 * caller forces are checked as given.
 *
 * Results are deterministic for every parameter set: the same inputs and
 * parameters give bit-identical gradients (dK and dV are summed over the q
 * heads of a kv head in a fixed order, ALGO=1 adds into dQ in a fixed tile
 * order and sums its partial buffers in split order; no atomics; the
 * sparse normalizations' kernels likewise).
 * Different parameter sets may differ in the last bits.  Once built, the
 * backward's tile lists count in sparcl_plan_device_bytes(). */

/* Builds the plan's backward resources with `params` (NULL: chosen as
 * plans choose theirs, from the tuning databases' rows of the backward's
 * family, "attn_bwd" or "attn_entmax_bwd", else the built-in defaults for
 * this device; a map: its entries, the rest filled from the defaults;
 * checked against that family's schema unless the plan's descriptor had
 * unchecked_params set).  Without params and with resources
 * already built it does nothing; with params it replaces them (work already
 * enqueued is unaffected).  `params` is borrowed during the call only.
 * Thread-safe with respect to other calls on the same plan (the plan's
 * mutex is held while building, which may take a second for a new
 * program).
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (unknown parameter or value, broken
 * constraint, e.g. "BLOCK_M 8 and BLOCK_N 4 must be multiples of WG_SIZE
 * 8"), SPARCL_ERR_NOT_SUPPORTED (exceeds the device's work-group or
 * local-memory limits), SPARCL_ERR_BUILD, SPARCL_ERR_OPENCL,
 * SPARCL_ERR_OUT_OF_MEMORY. */
SPARCL_API sparcl_status sparcl_plan_prepare_backward(sparcl_plan *plan,
                                                      const sparcl_params *params);

/* The backward kernel parameters and where they came from (building the
 * resources first if needed, as sparcl_plan_prepare_backward(plan, NULL)).
 * Either output pointer may be NULL.  Errors: those of the preparation. */
SPARCL_API sparcl_status sparcl_plan_backward_params(sparcl_plan *plan, sparcl_params *params,
                                                     sparcl_param_source *source);

/* Enqueues the gradients of sparcl_plan_forward() with respect to q, k, v,
 * given dout = dLoss/dout:
 *   P[i,j] = exp(scale q_i.k_j - lse_i) over attended (i, j), else 0,
 *   dv_j = sum_i P[i,j] dout_i,   dS[i,j] = P[i,j] (dout_i.v_j - dout_i.out_i),
 *   dq_i = scale sum_j dS[i,j] k_j,   dk_j = scale sum_i dS[i,j] q_i,
 * with dk and dv summed over the q heads that share a kv head.  Keys that no
 * query attends to get dk = dv = 0; rows that attend to nothing (lse =
 * -inf) get dq = 0 and contribute nothing; no NaN arises from them.
 * For sparsemax and alpha-entmax plans, lse holds the forward's threshold
 * tau and the weights are recomputed from it: P[i,j] = u_j / sum u with
 * u_j = [(alpha - 1) scale q_i.k_j - tau_i]_+ ^ (1 / (alpha - 1)), and the
 * entmax Jacobian replaces the softmax one:
 *   dS[i,j] = w_j (g_j - sum_l w_l g_l / sum_l w_l),  g_j = dout_i.v_j,
 * with w_j = P[i,j]^(2 - alpha) on the row's support (1 there for
 * sparsemax) and 0 off it, so a key outside a row's support, masked or not,
 * gets nothing from that row and its value is not read for it.  A row whose
 * tau is NaN (its forward was undefined) gives NaN in its dq and in the dk
 * and dv of every key it attends to.
 *
 * q, k, v, out, lse: the forward's inputs and outputs (out and lse exactly
 * as sparcl_plan_forward() wrote them; lse is required, except that FAVOR+
 * plans take NULL).  dout has out's
 * strides, dq q's, dk k's and dv v's (all from the descriptor).  dq, dk
 * and dv are written in full and must not alias each other or any input.
 * Buffers are borrowed until the returned event completes; sizes are
 * checked with clGetMemObjectInfo before anything is enqueued.  Builds the
 * backward resources first if needed (see above).  Enqueues three kernels
 * (softmax; four for ALGO=1 with SPLIT > 1) or two (sparse normalizations)
 * and allocates one float (softmax) or three floats (sparse normalizations)
 * per query row of workspace (plus SPLIT partial dQ buffers of q's size
 * in floats for ALGO=1 with SPLIT > 1, with half storage, or with a dq
 * created CL_MEM_WRITE_ONLY: otherwise ALGO=1 adds into dq in place,
 * which reads it), released when they finish.
 *
 * num_wait/wait: an OpenCL wait list (may be 0/NULL).  event: NULL, or
 * receives an event (a marker after all the kernels) the caller must
 * release.  Thread-safe: a plan may run forward and backward calls from
 * several threads at once.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL or too small buffers, missing
 * lse, aliasing outputs), SPARCL_ERR_NOT_SUPPORTED (a dynamic block
 * selection plan whose dtype is F16 or BF16, see sparcl_dtype; refused
 * before the buffers are looked at, here, in sparcl_plan_prepare_backward()
 * and in sparcl_plan_backward_host()), SPARCL_ERR_OUT_OF_MEMORY,
 * SPARCL_ERR_OPENCL, and those of the preparation.
 * Half storage: q, k, v, out, dout, dq, dk and dv hold elements of the
 * plan's dtype (2 bytes for F16 and BF16; sizes are checked in those), lse
 * stays float.  Arithmetic is fp32 and dq, dk and dv are rounded to
 * nearest even once: the softmax backward over a layout reads and writes
 * the dtype itself; the other kinds' backward kernels are fp32, and a half
 * plan converts the inputs into fp32 workspaces it keeps, runs them and
 * rounds the gradients into the caller's buffers, all on the device (see
 * sparcl_dtype). */
SPARCL_API sparcl_status sparcl_plan_backward(sparcl_plan *plan, cl_mem q, cl_mem k, cl_mem v,
                                              cl_mem out, cl_mem lse, cl_mem dout, cl_mem dq,
                                              cl_mem dk, cl_mem dv, cl_uint num_wait,
                                              const cl_event *wait, cl_event *event);

/* As sparcl_plan_backward(), on `queue` instead of the context's queue
 * (NULL means the context's), as sparcl_plan_forward_on_queue(): the queue
 * must belong to the context's cl_context and device and is borrowed for
 * the call.  Threads sharing a plan use one queue each. */
SPARCL_API sparcl_status sparcl_plan_backward_on_queue(sparcl_plan *plan, cl_command_queue queue,
                                                       cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                       cl_mem lse, cl_mem dout, cl_mem dq,
                                                       cl_mem dk, cl_mem dv, cl_uint num_wait,
                                                       const cl_event *wait, cl_event *event);

/* Blocking convenience: copies the host arrays in (contiguous [B, H, S, D]
 * regardless of the descriptor's strides; lse [B, q_heads, q_len]), runs
 * sparcl_plan_backward() and copies dq, dk and dv back.  Every pointer is
 * required (but lse is NULL for FAVOR+ plans).  q, k, v, out, dout, dq, dk
 * and dv hold elements of the plan's dtype, as in
 * sparcl_plan_forward_host() (they were `float *` before dtypes existed;
 * float pointers still convert); lse is float.  Errors: as
 * sparcl_plan_backward(). */
SPARCL_API sparcl_status sparcl_plan_backward_host(sparcl_plan *plan, const void *q,
                                                   const void *k, const void *v, const void *out,
                                                   const float *lse, const void *dout, void *dq,
                                                   void *dk, void *dv);

/* sparcl_plan_backward_on_queue() plus the gradients of a Linformer plan's
 * projections: dproj_e and dproj_f (each NULL when not wanted, or a float
 * buffer of proj_len x kv_len, row-major like E and F) receive
 *   dE = sum over batch and kv heads of dK' K^T,  dF = sum of dV' V^T
 * (dK', dV': the gradients of the projected keys and values, summed over
 * the q heads of a kv head), overwritten, not accumulated.  To train E and
 * F, update them with these and hand them back with
 * sparcl_plan_write_projections().  Plans of other kinds take NULL for both.
 * Buffers are borrowed until the event completes; dproj_e and dproj_f must
 * not alias each other or any other tensor of the call.  Everything else
 * as sparcl_plan_backward_on_queue(), with one difference for FAVOR+ plans:
 * lse must be NULL there (their forward writes none), in every backward
 * call.
 * Errors: those of sparcl_plan_backward(), and SPARCL_ERR_INVALID_ARGUMENT
 * for a dproj buffer given to a plan of another kind, too small or
 * aliasing. */
SPARCL_API sparcl_status sparcl_plan_backward_proj(sparcl_plan *plan, cl_command_queue queue,
                                                   cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                   cl_mem lse, cl_mem dout, cl_mem dq, cl_mem dk,
                                                   cl_mem dv, cl_mem dproj_e, cl_mem dproj_f,
                                                   cl_uint num_wait, const cl_event *wait,
                                                   cl_event *event);

/* Blocking convenience of sparcl_plan_backward_proj(), as
 * sparcl_plan_backward_host() (contiguous host arrays): dproj_e and dproj_f
 * are host arrays of proj_len x kv_len floats or NULL (float whatever the
 * plan's dtype: E and F are fp32); lse is NULL for FAVOR+ plans and
 * required otherwise; the tensors hold the plan's dtype. */
SPARCL_API sparcl_status sparcl_plan_backward_proj_host(sparcl_plan *plan, const void *q,
                                                        const void *k, const void *v,
                                                        const void *out, const float *lse,
                                                        const void *dout, void *dq, void *dk,
                                                        void *dv, float *dproj_e,
                                                        float *dproj_f);

/* Double-precision reference of sparcl_plan_backward() on the host, with
 * the same semantics (layout, causal, GQA, scale, normalization: softmax,
 * sparsemax, 1.5-entmax and alpha-entmax, the weights from the reference
 * forward's own threshold) on contiguous [B, H, S, D] arrays: dq
 * (batch*q_heads*q_len*head_dim doubles), dk and dv
 * (batch*kv_heads*kv_len*head_dim doubles) are overwritten.  `desc` strides
 * and params are ignored.  O(pairs * head_dim) time, O(kv_len) extra
 * memory.  ctx may be NULL (it only receives the error message).
 * FAVOR+ and Linformer descriptors are covered too (softmax only), with the
 * random matrices a plan made from `desc` draws: the features from
 * desc->seed; E and F from desc->proj_e and proj_f when given, else from
 * desc->seed (after sparcl_plan_redraw(plan, s), set desc->seed = s).
 * FAVOR+ takes O(q_len * kv_len * (features + head_dim)) time per head
 * (every query-key feature product, independent of the plan's
 * factorization).  sparcl_reference_backward_proj() adds Linformer's dE and
 * dF.
 * Errors: SPARCL_ERR_INVALID_ARGUMENT, SPARCL_ERR_OUT_OF_MEMORY,
 * SPARCL_ERR_NOT_SUPPORTED (a normalization without a reference backward). */
SPARCL_API sparcl_status sparcl_reference_backward(sparcl_ctx *ctx, const sparcl_plan_desc *desc,
                                                   const float *q, const float *k,
                                                   const float *v, const float *dout,
                                                   double *dq, double *dk, double *dv);

/* sparcl_reference_backward() plus, for Linformer descriptors, dproj_e and
 * dproj_f (proj_len x kv_len doubles each, overwritten; either may be
 * NULL), as sparcl_plan_backward_proj() defines them.  Other kinds take
 * NULL for both (else SPARCL_ERR_INVALID_ARGUMENT). */
SPARCL_API sparcl_status sparcl_reference_backward_proj(sparcl_ctx *ctx,
                                                        const sparcl_plan_desc *desc,
                                                        const float *q, const float *k,
                                                        const float *v, const float *dout,
                                                        double *dq, double *dk, double *dv,
                                                        double *dproj_e, double *dproj_f);

/* ---- Adaptive attention span (Sukhbaatar et al., 2019) ----
 *
 * attention = SPARCL_ATTENTION_SPAN: causal softmax attention in which
 * every query head h looks back over a learned, soft span.  Query i sits at
 * position pos(i) = i + kv_len - q_len (as for `causal`); key j lies at
 * distance x = pos(i) - j and is weighted by the soft mask
 *   m_h(x) = clamp((R + z_h - x) / R, 0, 1)   for x >= 0, else 0
 * (z_h = desc.spans[h], R = desc.span_ramp): 1 up to distance z_h, a linear
 * ramp down to 0 over the next R positions, 0 beyond.  The mask multiplies
 * the softmax weights, which are renormalized:
 *   a_ij = m(x) exp(s_ij) / sum_l m(x_l) exp(s_il),   s = scale q_i . k_j,
 *   out_i = sum_j a_ij v_j,   lse_i = log sum_j m(x_j) exp(s_ij)
 * (lse is the log-sum-exp of the masked scores s + log m, so the weights
 * are m exp(s - lse), as P = exp(s - lse) for softmax; m(0) = 1, so every
 * query with pos(i) >= 0 attends at least to its own position, and a query
 * with pos(i) < 0, only when q_len > kv_len, gets out = 0 and lse = -inf).
 * Only the keys with m > 0, distances 0 .. ceil(z_h + R) - 1, are read:
 * time grows with the spans, not with kv_len, and a span beyond the
 * sequence just means all earlier keys.  The kernels read the spans from a
 * device buffer of the plan at every call, so new spans need no new plan.
 *
 * Descriptor: causal must be set (the kind is causal by definition), no
 * layout, softmax normalization, any dtype (F16 and BF16 read and written
 * as stored by the forward and backward kernels, each output and gradient
 * element rounded once, see sparcl_dtype; spans and dspans stay float);
 * GQA and MQA as elsewhere.
 * spans: q_heads floats, each finite and >= 0, or NULL for all 0 (the
 * paper's initialization); span_ramp: finite, > 0 (the paper uses 32).
 * sparcl_plan_init() names the first bad field ("spans[2] is nan; a span
 * must be finite and >= 0"), SPARCL_ERR_INVALID_ARGUMENT;
 * SPARCL_ERR_NOT_SUPPORTED for a layout, another normalization, causal 0
 * or a paged cache.
 *
 * Kernel family "attn_span" (cl/attn_span.cl; the forward's parameters
 * are chosen as for other plans; the backward's come from the same family,
 * a map given to sparcl_plan_prepare_backward() or else the databases'
 * row or the defaults): BLOCK_M query rows and BLOCK_N
 * keys per tile, WG_SIZE work-items per group (BLOCK_M / WG_SIZE rows each
 * in the forward and dQ kernels, BLOCK_N / WG_SIZE keys each in the dK/dV
 * kernel, at most 16), VEC the vector width along head_dim, USE_LOCAL 1
 * stages the tiles a group shares in local memory (the GPU configuration).
 *
 * Backward: sparcl_plan_backward() and friends give dq, dk and dv of the
 * function above (the softmax formulas with P = m exp(s - lse)); lse is
 * required.  sparcl_plan_backward_span() adds the gradient of the spans:
 *   dz_h = (1 / R) sum over batch, rows i and keys j with z_h < x < z_h + R
 *          of exp(s_ij - lse_i) (dout_i . v_j - dout_i . out_i),
 * the derivative of the loss through m, whose slope in z is 1 / R on the
 * open ramp and 0 elsewhere (at the two kinks, x = z and x = z + R, the
 * slope taken is 0).  No atomics: the per-row terms are summed per head in
 * a fixed order, so results are bit-identical run to run. */

/* Replaces the spans of an adaptive-span plan with `spans` (q_heads floats,
 * each finite and >= 0), copied with a blocking write on the context's
 * queue: how training hands updated spans (sparcl_plan_backward_span())
 * back to the plan.  Must not race with a forward or backward call on the
 * same plan.  Errors: SPARCL_ERR_INVALID_ARGUMENT (NULL, not an
 * adaptive-span plan, a bad span, named by its index; nothing is written
 * then), SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_write_spans(sparcl_plan *plan, const float *spans);

/* Copies the spans of an adaptive-span plan (q_heads floats) into `spans`,
 * owned by the caller.  Blocking.  Errors: SPARCL_ERR_INVALID_ARGUMENT
 * (NULL, not an adaptive-span plan), SPARCL_ERR_OPENCL. */
SPARCL_API sparcl_status sparcl_plan_read_spans(sparcl_plan *plan, float *spans);

/* sparcl_plan_backward_on_queue() plus, for an adaptive-span plan, the
 * gradient of its spans: dspans (NULL when not wanted, or a float buffer
 * of q_heads) receives dz as defined above, overwritten, not accumulated.
 * Plans of other kinds take NULL.  dspans must not alias any other tensor
 * of the call; it is borrowed until the event completes.  Enqueues three
 * kernels (dQ, dK/dV, the span reduction; two without dspans) and
 * allocates two floats per query row of workspace, released when they
 * finish.  Errors: those of sparcl_plan_backward(), and
 * SPARCL_ERR_INVALID_ARGUMENT for dspans given to a plan of another kind,
 * too small or aliasing. */
SPARCL_API sparcl_status sparcl_plan_backward_span(sparcl_plan *plan, cl_command_queue queue,
                                                   cl_mem q, cl_mem k, cl_mem v, cl_mem out,
                                                   cl_mem lse, cl_mem dout, cl_mem dq, cl_mem dk,
                                                   cl_mem dv, cl_mem dspans, cl_uint num_wait,
                                                   const cl_event *wait, cl_event *event);

/* Blocking convenience of sparcl_plan_backward_span(), as
 * sparcl_plan_backward_host() (contiguous host arrays of the plan's dtype);
 * dspans is a host array of q_heads floats (whatever the dtype) or NULL. */
SPARCL_API sparcl_status sparcl_plan_backward_span_host(sparcl_plan *plan, const void *q,
                                                        const void *k, const void *v,
                                                        const void *out, const float *lse,
                                                        const void *dout, void *dq, void *dk,
                                                        void *dv, float *dspans);

/* sparcl_reference_backward() plus, for adaptive-span descriptors, dspans
 * (q_heads doubles, overwritten; may be NULL) as defined above.
 * sparcl_reference_forward() and sparcl_reference_backward() take
 * adaptive-span descriptors too (the spans from desc->spans, NULL for all
 * 0); the three check the span fields as sparcl_plan_init() does.  Other
 * kinds take NULL dspans (else SPARCL_ERR_INVALID_ARGUMENT).  O(batch *
 * q_heads * q_len * kv_len * head_dim) time: every causal pair is visited
 * and its mask evaluated, independently of the kernels' span bounds. */
SPARCL_API sparcl_status sparcl_reference_backward_span(sparcl_ctx *ctx,
                                                        const sparcl_plan_desc *desc,
                                                        const float *q, const float *k,
                                                        const float *v, const float *dout,
                                                        double *dq, double *dk, double *dv,
                                                        double *dspans);

#ifdef __cplusplus
}
#endif
#endif /* SPARCL_H */
