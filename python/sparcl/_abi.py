"""ctypes declarations of the parts of include/sparcl.h the binding uses.

Every struct mirrored here is listed in STRUCTS and every enum value or
macro in CONSTANTS; tests/test_abi.py compiles a C program against the
header and fails when any size, offset or value differs.  Every function
the package calls is declared in _FUNCTIONS with its restype and argtypes.

The library handle is `lib`; `path` is where it was loaded from.
"""

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)

from . import _lib

# ---- Constants (enums and macros of sparcl.h) -----------------------------

SPARCL_VERSION_MAJOR = 0
SPARCL_VERSION_MINOR = 1
SPARCL_VERSION_PATCH = 0
SPARCL_MAX_HEAD_DIM = 256
SPARCL_PARAMS_MAX = 16
SPARCL_PARAM_NAME_MAX = 24
SPARCL_PARAM_CHOICES_MAX = 32
SPARCL_MAX_FEATURES = 4096
SPARCL_LSH_MAX_ROUNDS = 64
SPARCL_LSH_MAX_BUCKETS = 4096

SPARCL_OK = 0
SPARCL_ERR_INVALID_ARGUMENT = -1
SPARCL_ERR_NOT_SUPPORTED = -2
SPARCL_ERR_OPENCL = -3
SPARCL_ERR_BUILD = -4
SPARCL_ERR_OUT_OF_MEMORY = -5
SPARCL_ERR_DATABASE = -6
SPARCL_ERR_INTERNAL = -7
SPARCL_ERR_CONFIG = -8

SPARCL_LOG_DEBUG = 0
SPARCL_LOG_INFO = 1
SPARCL_LOG_WARNING = 2
SPARCL_LOG_ERROR = 3

SPARCL_DTYPE_F32 = 0
SPARCL_DTYPE_F16 = 1
SPARCL_DTYPE_BF16 = 2

SPARCL_PARAMS_DEFAULT = 0
SPARCL_PARAMS_OVERRIDE = 1
SPARCL_PARAMS_DATABASE = 2

SPARCL_NORMALIZATION_SOFTMAX = 0
SPARCL_NORMALIZATION_SPARSEMAX = 1
SPARCL_NORMALIZATION_ENTMAX15 = 2
SPARCL_NORMALIZATION_ENTMAX = 3

SPARCL_ATTENTION_EXACT = 0
SPARCL_ATTENTION_FAVOR = 1
SPARCL_ATTENTION_LINFORMER = 2
SPARCL_ATTENTION_SPAN = 3
SPARCL_ATTENTION_LSH = 4

SPARCL_SELECT_NONE = 0
SPARCL_SELECT_TOPK = 1
SPARCL_SELECT_MASS = 2

SPARCL_TUNING_OK = 0
SPARCL_TUNING_INVALID = 1
SPARCL_TUNING_BUILD_ERROR = 2
SPARCL_TUNING_LAUNCH_ERROR = 3
SPARCL_TUNING_WRONG = 4
SPARCL_TUNING_TIMEOUT = 5
SPARCL_TUNING_CRASH = 6

SPARCL_TUNING_DB_READ = 0
SPARCL_TUNING_DB_WRITE = 1

SPARCL_TUNING_DB_USER = 0
SPARCL_TUNING_DB_SHIPPED = 1

SPARCL_SHARD_HEADS = 0
SPARCL_SHARD_QUERIES = 1
SPARCL_SHARD_KEYS = 2
SPARCL_MULTI_MAX_DEVICES = 64

CONSTANTS = {k: v for k, v in dict(globals()).items() if k.startswith("SPARCL_")}

# ---- Structs --------------------------------------------------------------


class sparcl_strides(Structure):
    _fields_ = [("batch", c_int64), ("head", c_int64), ("seq", c_int64)]


class sparcl_param_item(Structure):
    """The anonymous element struct of sparcl_params.item."""

    _fields_ = [("name", c_char * SPARCL_PARAM_NAME_MAX), ("value", c_int32)]


class sparcl_params(Structure):
    _fields_ = [("count", c_int), ("item", sparcl_param_item * SPARCL_PARAMS_MAX)]


class sparcl_plan_desc(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("batch", c_int),
        ("q_heads", c_int),
        ("kv_heads", c_int),
        ("q_len", c_int),
        ("kv_len", c_int),
        ("head_dim", c_int),
        ("scale", c_float),
        ("causal", c_int),
        ("layout", c_void_p),
        ("q_strides", sparcl_strides),
        ("k_strides", sparcl_strides),
        ("v_strides", sparcl_strides),
        ("o_strides", sparcl_strides),
        ("params", POINTER(sparcl_params)),
        ("unchecked_params", c_int),
        ("normalization", c_int),
        ("alpha", c_float),
        ("attention", c_int),
        ("features", c_int),
        ("proj_len", c_int),
        ("seed", c_uint64),
        ("proj_e", POINTER(c_float)),
        ("proj_f", POINTER(c_float)),
        ("page_size", c_int),
        ("dtype", c_int),
        ("select", c_int),
        ("select_k", c_int),
        ("select_tau", c_float),
        ("select_block", c_int),
        ("spans", POINTER(c_float)),
        ("span_ramp", c_float),
        ("lsh_rounds", c_int),
        ("lsh_buckets", c_int),
        ("lsh_chunk", c_int),
        ("previous", c_void_p),
    ]


class sparcl_program_stats(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("memory_hits", c_int64),
        ("disk_hits", c_int64),
        ("builds", c_int64),
        ("disk_writes", c_int64),
        ("disk_rejected", c_int64),
    ]


class sparcl_fixed_desc(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("stride", c_int),
        ("summary", c_int),
        ("patterns", c_int),
        ("horizontal", c_int),
        ("causal", c_int),
    ]


class sparcl_bigbird_desc(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("window", c_int),
        ("global_first", c_int),
        ("global_last", c_int),
        ("random", c_int),
        ("seed", c_uint64),
        ("per_head", c_int),
        ("causal", c_int),
    ]


class sparcl_longformer_desc(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("left", c_int),
        ("right", c_int),
        ("dilation", POINTER(c_int)),
        ("global", POINTER(c_int)),
        ("n_global", c_int),
        ("causal", c_int),
    ]


class sparcl_vertical_slash_desc(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("columns", POINTER(c_int)),
        ("column_counts", POINTER(c_int)),
        ("n_columns", c_int),
        ("offsets", POINTER(c_int)),
        ("offset_counts", POINTER(c_int)),
        ("n_offsets", c_int),
        ("causal", c_int),
    ]


class sparcl_layout_stats(Structure):
    _fields_ = [
        ("heads", c_int),
        ("q_len", c_int),
        ("kv_len", c_int),
        ("block", c_int),
        ("block_rows", c_int),
        ("block_cols", c_int),
        ("nnz_blocks", c_int64),
        ("full_blocks", c_int64),
        ("partial_blocks", c_int64),
        ("pairs", c_int64),
        ("density", c_double),
        ("row_blocks_min", c_int64),
        ("row_blocks_max", c_int64),
        ("row_blocks_mean", c_double),
        ("bytes", c_size_t),
    ]


class sparcl_layout_bsr(Structure):
    _fields_ = [
        ("heads", c_int),
        ("block", c_int),
        ("block_rows", c_int),
        ("block_cols", c_int),
        ("words_per_mask", c_int),
        ("nnz", c_int64),
        ("n_masks", c_int64),
        ("row_ptr", POINTER(c_int64)),
        ("col", POINTER(c_int32)),
        ("mask", POINTER(c_int64)),
        ("bits", POINTER(c_uint64)),
    ]


class sparcl_device_info(Structure):
    _fields_ = [
        ("platform", c_char * 128),
        ("vendor", c_char * 128),
        ("name", c_char * 128),
        ("driver", c_char * 128),
        ("version", c_char * 128),
        ("type", c_char * 16),
        ("compute_units", c_uint32),
        ("global_mem", c_uint64),
        ("local_mem", c_uint64),
        ("max_alloc", c_uint64),
    ]


class sparcl_tuning_problem(Structure):
    _fields_ = [
        ("kernel", c_char * 32),
        ("kernel_hash", c_char * 17),
        ("dtype", c_char * 8),
        ("batch", c_int),
        ("q_heads", c_int),
        ("kv_heads", c_int),
        ("q_len", c_int),
        ("kv_len", c_int),
        ("head_dim", c_int),
        ("causal", c_int),
        ("pattern", c_char * 32),
        ("block", c_int),
        ("density", c_double),
    ]


class sparcl_tuning_result(Structure):
    _fields_ = [
        ("params", sparcl_params),
        ("status", c_int),
        ("median_ms", c_double),
        ("min_ms", c_double),
        ("max_ms", c_double),
        ("runs", c_int),
        ("max_err", c_double),
        ("message", c_char * 256),
    ]


class sparcl_tuning_finalist(Structure):
    _fields_ = [
        ("params", sparcl_params),
        ("rounds", c_int),
        ("round_ms", c_double),
        ("round_lo_ms", c_double),
        ("round_hi_ms", c_double),
        ("cpu_ms", c_double),
        ("speedup", c_double),
        ("speedup_lo", c_double),
        ("speedup_hi", c_double),
    ]


class sparcl_param_space_item(Structure):
    """The anonymous element struct of sparcl_param_space.item."""

    _fields_ = [
        ("name", c_char * SPARCL_PARAM_NAME_MAX),
        ("n_choices", c_int),
        ("choices", c_int32 * SPARCL_PARAM_CHOICES_MAX),
        ("doc", c_char_p),
    ]


class sparcl_param_space(Structure):
    _fields_ = [("count", c_int), ("item", sparcl_param_space_item * SPARCL_PARAMS_MAX)]


class sparcl_shard_info(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("context", c_int),
        ("head0", c_int),
        ("heads", c_int),
        ("kv_head0", c_int),
        ("kv_heads", c_int),
        ("row0", c_int),
        ("rows", c_int),
        ("key0", c_int),
        ("keys", c_int),
        ("pairs", c_int64),
        ("device_bytes", c_size_t),
    ]


# C name -> mirror, for the ABI test.  The anonymous element structs are
# checked through their parents' fields (item[0].value, ...).
STRUCTS = {
    "sparcl_strides": sparcl_strides,
    "sparcl_params": sparcl_params,
    "sparcl_plan_desc": sparcl_plan_desc,
    "sparcl_program_stats": sparcl_program_stats,
    "sparcl_fixed_desc": sparcl_fixed_desc,
    "sparcl_bigbird_desc": sparcl_bigbird_desc,
    "sparcl_longformer_desc": sparcl_longformer_desc,
    "sparcl_vertical_slash_desc": sparcl_vertical_slash_desc,
    "sparcl_layout_stats": sparcl_layout_stats,
    "sparcl_layout_bsr": sparcl_layout_bsr,
    "sparcl_device_info": sparcl_device_info,
    "sparcl_tuning_problem": sparcl_tuning_problem,
    "sparcl_tuning_result": sparcl_tuning_result,
    "sparcl_tuning_finalist": sparcl_tuning_finalist,
    "sparcl_param_space": sparcl_param_space,
    "sparcl_shard_info": sparcl_shard_info,
}

# ---- Callback types -------------------------------------------------------

LOG_FN = CFUNCTYPE(None, c_void_p, c_int, c_char_p)
PREDICATE_FN = CFUNCTYPE(c_int, c_void_p, c_int, c_int, c_int)
EVAL_FN = CFUNCTYPE(
    c_int,
    c_void_p,
    POINTER(sparcl_device_info),
    POINTER(sparcl_tuning_problem),
    POINTER(sparcl_tuning_result),
)

# ---- Functions ------------------------------------------------------------

_st = c_int  # sparcl_status
_h = c_void_p  # any opaque handle
_ph = POINTER(c_void_p)  # T **out
_pi = POINTER(c_int)
_pi32 = POINTER(c_int32)
_pi64 = POINTER(c_int64)
_pf = POINTER(c_float)
_pd = POINTER(c_double)
_v = c_void_p  # host array of any element type

_FUNCTIONS = {
    "sparcl_status_string": (c_char_p, [c_int]),
    "sparcl_version": (c_char_p, []),
    "sparcl_version_number": (c_int, []),
    # context
    "sparcl_ctx_init": (_st, [_ph]),
    "sparcl_ctx_init_device": (_st, [_ph, c_char_p]),
    "sparcl_ctx_free": (None, [_h]),
    "sparcl_ctx_errmsg": (c_char_p, [_h]),
    "sparcl_ctx_cl_error": (c_int32, [_h]),
    "sparcl_ctx_build_log": (c_char_p, [_h]),
    "sparcl_ctx_set_log": (None, [_h, LOG_FN, c_void_p]),
    "sparcl_ctx_set_memory_limit": (_st, [_h, c_uint64, c_uint64]),
    "sparcl_ctx_memory_limit": (_st, [_h, POINTER(c_uint64), POINTER(c_uint64)]),
    "sparcl_ctx_device_string": (c_char_p, [_h]),
    "sparcl_device_list": (_st, [c_char_p, c_size_t, _pi]),
    "sparcl_ctx_set_program_cache": (_st, [_h, c_char_p]),
    "sparcl_ctx_set_offline": (_st, [_h, c_char_p]),
    "sparcl_ctx_program_stats": (_st, [_h, POINTER(sparcl_program_stats)]),
    "sparcl_ctx_device_info": (_st, [_h, POINTER(sparcl_device_info)]),
    "sparcl_ctx_set_tuning_db": (_st, [_h, c_int, c_char_p]),
    "sparcl_ctx_tuning_db_path": (_st, [_h, c_int, c_char_p, c_size_t]),
    # layouts
    "sparcl_layout_init_dense": (_st, [_h, _ph, c_int, c_int, c_int, c_int]),
    "sparcl_layout_init_causal": (_st, [_h, _ph, c_int, c_int, c_int, c_int]),
    "sparcl_layout_init_window": (_st, [_h, _ph, c_int, c_int, c_int, c_int, c_int, c_int]),
    "sparcl_layout_init_block_mask": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, POINTER(ctypes.c_uint8)],
    ),
    "sparcl_layout_init_dilated_window": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, c_int, c_int, _pi],
    ),
    "sparcl_layout_init_global": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, _pi, c_int, c_int],
    ),
    "sparcl_layout_init_global_blocks": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, c_int, c_int, c_int],
    ),
    "sparcl_layout_init_strided": (_st, [_h, _ph, c_int, c_int, c_int, c_int, c_int, c_int]),
    "sparcl_fixed_desc_init_sized": (_st, [POINTER(sparcl_fixed_desc), c_size_t]),
    "sparcl_layout_init_fixed": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, POINTER(sparcl_fixed_desc)],
    ),
    "sparcl_bigbird_desc_init_sized": (_st, [POINTER(sparcl_bigbird_desc), c_size_t]),
    "sparcl_layout_init_bigbird": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, POINTER(sparcl_bigbird_desc)],
    ),
    "sparcl_longformer_desc_init_sized": (_st, [POINTER(sparcl_longformer_desc), c_size_t]),
    "sparcl_layout_init_longformer": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, POINTER(sparcl_longformer_desc)],
    ),
    "sparcl_layout_init_streaming": (_st, [_h, _ph, c_int, c_int, c_int, c_int, c_int, c_int]),
    "sparcl_vertical_slash_desc_init_sized": (
        _st,
        [POINTER(sparcl_vertical_slash_desc), c_size_t],
    ),
    "sparcl_layout_init_vertical_slash": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, POINTER(sparcl_vertical_slash_desc)],
    ),
    "sparcl_layout_init_bsr": (_st, [_h, _ph, c_int, c_int, c_int, c_int, _pi64, _pi32]),
    "sparcl_layout_init_csr": (_st, [_h, _ph, c_int, c_int, c_int, c_int, _pi64, _pi32]),
    "sparcl_layout_init_predicate": (
        _st,
        [_h, _ph, c_int, c_int, c_int, c_int, PREDICATE_FN, c_void_p],
    ),
    "sparcl_layout_init_union": (_st, [_h, _ph, POINTER(c_void_p), c_int]),
    "sparcl_layout_init_intersection": (_st, [_h, _ph, POINTER(c_void_p), c_int]),
    "sparcl_layout_init_per_head": (_st, [_h, _ph, POINTER(c_void_p), c_int]),
    "sparcl_layout_init_slice": (_st, [_h, _ph, _h, c_int, c_int, c_int, c_int, c_int, c_int]),
    "sparcl_layout_init_varlen": (_st, [_h, _ph, c_int, _pi32, _pi32, POINTER(c_void_p), c_int]),
    "sparcl_layout_free": (None, [_h]),
    "sparcl_layout_heads": (c_int, [_h]),
    "sparcl_layout_q_len": (c_int, [_h]),
    "sparcl_layout_kv_len": (c_int, [_h]),
    "sparcl_layout_block": (c_int, [_h]),
    "sparcl_layout_attends": (c_int, [_h, c_int, c_int, c_int]),
    "sparcl_layout_pairs": (c_int64, [_h]),
    "sparcl_layout_density": (c_double, [_h]),
    "sparcl_layout_nnz_blocks": (c_int64, [_h]),
    "sparcl_layout_get_stats": (_st, [_h, POINTER(sparcl_layout_stats)]),
    "sparcl_layout_get_bsr": (_st, [_h, POINTER(sparcl_layout_bsr)]),
    # parameter maps
    "sparcl_params_clear": (None, [POINTER(sparcl_params)]),
    "sparcl_params_set": (_st, [POINTER(sparcl_params), c_char_p, c_int32]),
    "sparcl_params_get": (c_int, [POINTER(sparcl_params), c_char_p, _pi32]),
    "sparcl_params_format": (None, [POINTER(sparcl_params), c_char_p, c_size_t]),
    # dtypes
    "sparcl_dtype_name": (c_char_p, [c_int]),
    "sparcl_dtype_size": (c_size_t, [c_int]),
    "sparcl_convert_f32_to_f16": (_st, [_pf, POINTER(c_uint16), c_size_t]),
    "sparcl_convert_f16_to_f32": (_st, [POINTER(c_uint16), _pf, c_size_t]),
    "sparcl_convert_f32_to_bf16": (_st, [_pf, POINTER(c_uint16), c_size_t]),
    "sparcl_convert_bf16_to_f32": (_st, [POINTER(c_uint16), _pf, c_size_t]),
    # plans
    "sparcl_plan_desc_init_sized": (_st, [POINTER(sparcl_plan_desc), c_size_t]),
    "sparcl_plan_init": (_st, [_h, _ph, POINTER(sparcl_plan_desc)]),
    "sparcl_plan_free": (None, [_h]),
    "sparcl_plan_forward_host": (_st, [_h, _v, _v, _v, _v, _pf]),
    "sparcl_plan_backward_host": (_st, [_h, _v, _v, _v, _v, _pf, _v, _v, _v, _v]),
    "sparcl_plan_params": (None, [_h, POINTER(sparcl_params), _pi]),
    "sparcl_plan_params_origin": (c_char_p, [_h]),
    "sparcl_plan_device_bytes": (c_size_t, [_h]),
    "sparcl_plan_prepare_backward": (_st, [_h, POINTER(sparcl_params)]),
    "sparcl_plan_backward_params": (_st, [_h, POINTER(sparcl_params), _pi]),
    # multi-device plans
    "sparcl_multi_plan_init": (
        _st,
        [POINTER(c_void_p), c_int, _ph, POINTER(sparcl_plan_desc), c_int],
    ),
    "sparcl_multi_plan_free": (None, [_h]),
    "sparcl_multi_plan_forward_host": (_st, [_h, _pf, _pf, _pf, _pf, _pf]),
    "sparcl_multi_plan_prepare_backward": (_st, [_h]),
    "sparcl_multi_plan_backward_host": (_st, [_h, _pf, _pf, _pf, _pf, _pf, _pf, _pf, _pf, _pf]),
    "sparcl_multi_plan_shard_count": (c_int, [_h]),
    "sparcl_multi_plan_shard": (_st, [_h, c_int, POINTER(sparcl_shard_info)]),
    # references
    "sparcl_reference_forward": (_st, [_h, POINTER(sparcl_plan_desc), _pf, _pf, _pf, _pd, _pd]),
    "sparcl_reference_backward": (
        _st,
        [_h, POINTER(sparcl_plan_desc), _pf, _pf, _pf, _pf, _pd, _pd, _pd],
    ),
    # kernels and tuning
    "sparcl_kernel_count": (c_int, []),
    "sparcl_kernel_name": (c_char_p, [c_int]),
    "sparcl_kernel_space": (_st, [_h, c_char_p, POINTER(sparcl_param_space)]),
    "sparcl_kernel_default_params": (
        _st,
        [_h, c_char_p, POINTER(sparcl_plan_desc), POINTER(sparcl_params)],
    ),
    "sparcl_kernel_check_params": (
        _st,
        [_h, c_char_p, POINTER(sparcl_plan_desc), POINTER(sparcl_params)],
    ),
    "sparcl_kernel_hash": (_st, [_h, c_char_p, c_char_p, c_size_t]),
    "sparcl_tuning_problem_init": (
        _st,
        [_h, POINTER(sparcl_tuning_problem), c_char_p, POINTER(sparcl_plan_desc), c_char_p],
    ),
    "sparcl_tuning_status_string": (c_char_p, [c_int]),
    "sparcl_tuning_db_default_path": (_st, [c_char_p, c_size_t]),
    "sparcl_tuning_db_init": (_st, [_h, _ph, c_char_p, c_int]),
    "sparcl_tuning_db_free": (None, [_h]),
    "sparcl_tuning_db_record": (
        _st,
        [
            _h,
            POINTER(sparcl_device_info),
            POINTER(sparcl_tuning_problem),
            POINTER(sparcl_tuning_result),
        ],
    ),
    "sparcl_tuning_db_find": (
        _st,
        [
            _h,
            POINTER(sparcl_device_info),
            POINTER(sparcl_tuning_problem),
            POINTER(sparcl_params),
            POINTER(sparcl_tuning_result),
            _pi,
        ],
    ),
    "sparcl_tuning_db_best": (
        _st,
        [
            _h,
            POINTER(sparcl_device_info),
            POINTER(sparcl_tuning_problem),
            POINTER(sparcl_tuning_result),
            _pi,
        ],
    ),
    "sparcl_tuning_db_count": (
        _st,
        [_h, POINTER(sparcl_device_info), POINTER(sparcl_tuning_problem), _pi64],
    ),
    "sparcl_tuning_db_fastest": (
        _st,
        [
            _h,
            POINTER(sparcl_device_info),
            POINTER(sparcl_tuning_problem),
            c_int,
            POINTER(sparcl_tuning_result),
            _pi,
        ],
    ),
    "sparcl_tuning_db_decide": (
        _st,
        [
            _h,
            POINTER(sparcl_device_info),
            POINTER(sparcl_tuning_problem),
            POINTER(sparcl_tuning_finalist),
            c_int,
            c_int,
        ],
    ),
    "sparcl_tuning_db_export": (_st, [_h, c_char_p]),
    "sparcl_tuning_db_import": (_st, [_h, c_char_p, _pi64]),
    "sparcl_tuning_db_each_row": (_st, [_h, c_char_p, EVAL_FN, c_void_p]),
}


def _declare(library):
    missing = []
    for name, (restype, argtypes) in _FUNCTIONS.items():
        try:
            fn = getattr(library, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError(
            "sparcl: the library at %s lacks %s; it is older than this binding"
            % (path, ", ".join(missing))
        )


lib, path = _lib.load()
_declare(lib)


# ---- Small helpers used across the package -------------------------------


def text(raw):
    """bytes (or None) from C -> str."""
    return raw.decode("utf-8", "replace") if raw else ""


def status_string(status):
    return text(lib.sparcl_status_string(int(status)))


def errmsg(handle):
    """The last message on a context handle (None: this thread's slot)."""
    return text(lib.sparcl_ctx_errmsg(handle))


def params_to_dict(params):
    """A sparcl_params -> {name: value}."""
    n = max(0, min(params.count, SPARCL_PARAMS_MAX))
    return {text(params.item[i].name): int(params.item[i].value) for i in range(n)}


def params_from_dict(mapping):
    """{name: value} -> sparcl_params, through sparcl_params_set (its checks)."""
    from .errors import check  # errors imports this module

    params = sparcl_params()
    lib.sparcl_params_clear(ctypes.byref(params))
    for name, value in mapping.items():
        if not isinstance(name, str):
            raise TypeError("params: names must be str, got %r" % (name,))
        check(lib.sparcl_params_set(ctypes.byref(params), name.encode(), int(value)), None)
    return params
