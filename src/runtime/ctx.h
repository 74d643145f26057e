/*
 * ctx.h -- the context object shared by the runtime files.
 */
#ifndef SPARCL_CTX_H
#define SPARCL_CTX_H

#include <pthread.h>

#include "sparcl.h"

#define SPARCL_MSG_MAX 1024

typedef struct sparcl__program_entry sparcl__program_entry;
struct sparcl__tuning_rows;

/* Counters of the program cache (sparcl_ctx_program_stats()). */
typedef struct sparcl__program_counters {
    int64_t memory_hits;   /* taken from the context's own list */
    int64_t disk_hits;     /* loaded from the disk cache or the offline bundle */
    int64_t builds;        /* compiled from source */
    int64_t disk_writes;   /* binaries written to the disk cache */
    int64_t disk_rejected; /* cache or bundle files found but not used */
} sparcl__program_counters;

typedef struct sparcl__device_limits {
    size_t max_wg_size;    /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    cl_ulong local_mem;    /* CL_DEVICE_LOCAL_MEM_SIZE, bytes */
    cl_ulong max_alloc;    /* CL_DEVICE_MAX_MEM_ALLOC_SIZE, bytes */
    cl_ulong global_mem;   /* CL_DEVICE_GLOBAL_MEM_SIZE, bytes */
    cl_device_type type;   /* CL_DEVICE_TYPE_* */
    cl_uint compute_units; /* CL_DEVICE_MAX_COMPUTE_UNITS */
    /* CL_DEVICE_HOST_UNIFIED_MEMORY: device and host share memory, so a
     * read-only buffer may use a host array in place (CL_MEM_USE_HOST_PTR)
     * instead of a copy. */
    cl_bool host_unified;
    cl_uint base_align; /* CL_DEVICE_MEM_BASE_ADDR_ALIGN, in bytes */
} sparcl__device_limits;

struct sparcl_ctx {
    cl_context context;
    cl_device_id device;
    cl_command_queue queue;
    sparcl__device_limits limits;
    char device_string[512];   /* "platform / device / driver" */

    pthread_mutex_t lock;      /* guards everything below */
    sparcl__program_entry *programs; /* program cache, a singly linked list */
    char errmsg[SPARCL_MSG_MAX];
    char *build_log;           /* owned; NULL if none */
    cl_int cl_error;
    sparcl_log_fn log_fn;
    void *log_user;
    char tuning_db[2][1024]; /* sparcl_ctx_set_tuning_db() paths, by role */
    int tuning_db_set[2];    /* 0: that role follows the default rule */
    int clblast_used;          /* CLBlast holds programs of this context (gemm.c) */
    sparcl_params gemm_params; /* sparcl_ctx_set_gemm_params() */
    int gemm_params_set;       /* 0: plans look the GEMM parameters up */
    sparcl__program_counters program_counters;
    char program_cache[1024]; /* sparcl_ctx_set_program_cache(); "" = off */
    int program_cache_set;    /* 0: SPARCL_PROGRAM_CACHE, else the default folder */
    char offline[1024];       /* sparcl_ctx_set_offline(); "" = online */
    int offline_set;          /* 0: SPARCL_OFFLINE decides */
    uint64_t mem_limit[2];     /* sparcl_ctx_set_memory_limit(): host, device; 0 = default */

    /* The tuning databases' rows read so far (tuning/tuning_rows.c),
     * guarded by rows_lock, not by lock: plans read them under neither. */
    pthread_mutex_t rows_lock;
    struct sparcl__tuning_rows *tuning_rows;
};

#endif
