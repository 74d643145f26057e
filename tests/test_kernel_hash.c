/*
 * test_kernel_hash.c -- the kernel hash that keys tuning rows covers every
 * source file a family builds: editing cl/attn_dense_softmax.cl (the dense
 * path of attn_fwd, ALGO=1) retires the attn_fwd rows and no other family's;
 * editing cl/common.clh retires them all.  The sources are read from a
 * modified copy of cl/ through SPARCL_KERNEL_DIR.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scratch.h"
#include "sparcl.h"

TestSuite(kernel_hash, .fini = scratch_remove);

enum { N_FAMILIES = 3 };
static const char *const families[N_FAMILIES] = {"attn_fwd", "attn_bwd", "attn_entmax"};

/* Copies every file of the source tree's cl/ into the scratch folder. */
static void copy_kernels(void)
{
    DIR *dir = opendir(SPARCL_TEST_CL_DIR);
    cr_assert_not_null(dir, "cannot open %s", SPARCL_TEST_CL_DIR);
    int copied = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        if (e->d_name[0] == '.')
            continue;
        char from[512], to[512];
        snprintf(from, sizeof from, "%s/%s", SPARCL_TEST_CL_DIR, e->d_name);
        scratch_path(to, sizeof to, e->d_name);
        char *text = scratch_read(from);
        cr_assert_not_null(text, "cannot read %s", from);
        FILE *f = fopen(to, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        free(text);
        ++copied;
    }
    closedir(dir);
    cr_assert_geq(copied, 5);
}

static void append(const char *file, const char *text)
{
    char path[512];
    scratch_path(path, sizeof path, file);
    FILE *f = fopen(path, "a");
    cr_assert_not_null(f, "cannot open %s", path);
    fputs(text, f);
    fclose(f);
}

/* The hashes of every family, reading the sources from `dir` (NULL: the
 * ones embedded in the library). */
static void hashes(const char *dir, char out[N_FAMILIES][17])
{
    if (dir)
        cr_assert_eq(setenv("SPARCL_KERNEL_DIR", dir, 1), 0);
    else
        cr_assert_eq(unsetenv("SPARCL_KERNEL_DIR"), 0);
    sparcl_ctx *ctx = NULL;
    cr_assert_eq(sparcl_ctx_init(&ctx), SPARCL_OK);
    for (int i = 0; i < N_FAMILIES; ++i)
        cr_assert_eq(sparcl_kernel_hash(ctx, families[i], out[i], 17), SPARCL_OK, "%s: %s",
                     families[i], sparcl_ctx_errmsg(ctx));
    sparcl_ctx_free(ctx);
}

Test(kernel_hash, covers_every_source_file_of_a_family)
{
    cr_assert_eq(scratch_make("sparcl-hash"), 0);
    copy_kernels();
    char embedded[N_FAMILIES][17], copy[N_FAMILIES][17], edited[N_FAMILIES][17];
    hashes(NULL, embedded);
    hashes(scratch_dir, copy);
    for (int i = 0; i < N_FAMILIES; ++i)
        cr_assert_str_eq(copy[i], embedded[i], "%s: the copy of cl/ hashes differently",
                         families[i]);

    /* The dense path's softmax belongs to attn_fwd only. */
    append("attn_dense_softmax.cl", "\n/* edited */\n");
    hashes(scratch_dir, edited);
    cr_assert_str_neq(edited[0], copy[0], "editing attn_dense_softmax.cl kept attn_fwd's hash");
    cr_assert_str_eq(edited[1], copy[1], "attn_bwd does not build attn_dense_softmax.cl");
    cr_assert_str_eq(edited[2], copy[2], "attn_entmax does not build attn_dense_softmax.cl");

    /* Every program starts with the common header. */
    append("common.clh", "\n/* edited */\n");
    char common[N_FAMILIES][17];
    hashes(scratch_dir, common);
    for (int i = 0; i < N_FAMILIES; ++i)
        cr_assert_str_neq(common[i], edited[i], "editing common.clh kept %s's hash",
                          families[i]);
    cr_assert_eq(unsetenv("SPARCL_KERNEL_DIR"), 0);
}
