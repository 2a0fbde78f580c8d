/* machine.c: the cache-sized work of the CPU kernels, and what the backend chose (for the
 * benchmarks).
 *
 * The convolutions size their work by a core's L2 cache (conv_winograd.c's work items, the
 * direct weight gradient's image groups in conv.c). The sizes were tuned on a machine with
 * 2 MiB of L2 per core. Scaling them to this machine's L2 (1 MiB on the AMD EPYC) was measured
 * and gained nothing there (docs/UNET.md section 11: 1.02x and 1.01x the tuned sizes' time), so
 * by default they stay at the tuned sizes; the environment variable MSD_CPU_L2 (bytes, 64 KiB ..
 * 64 MiB) scales them to another L2, for measuring. The detected L2 (sysconf, else sysfs) is
 * reported. Which algorithm a convolution uses (Winograd, direct, or im2col + OpenBLAS) depends
 * on its shape and the vector width the build targets, never on timing, so that a run computes
 * the same numbers whenever it runs on the same machine (the exact-resume guarantee).
 *
 * The project's own 3x3 kernels (Winograd, direct, direct dw) hold 16-float vectors in registers:
 * one AVX-512 register each. A build without AVX-512 (AVX2 has 16 registers of 8 floats)
 * compiles the same blocking into spills: on an AMD EPYC (Zen 3, AVX2) they ran 2x (forward) to
 * 12x (dw) slower than im2col + OpenBLAS sgemm, whose kernels are written for each processor.
 * So builds without AVX-512 send 3x3 convolutions to im2col + OpenBLAS as well (docs/UNET.md
 * section 11); MSD_CPU_CONV=own|gemm overrides the choice (tests, measurements). The two paths
 * round differently: a run resumes with the same choice it started with. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "log.h"
#include "parallel.h"
#include "cpu_ops.h"

#define REF_L2 (2 * 1024 * 1024) /* the L2 the constants below were tuned with */

static struct {
    int64_t l2, sized_for; /* detected L2; the L2 the sizes are for */
    const char *from;
    int64_t wino_tiles, dw_pairs_max, dw_group_floats;
    int conv_gemm;         /* 3x3 convolutions by im2col + OpenBLAS instead of the own kernels */
    const char *conv_from; /* why */
} mc;
static pthread_once_t mc_once = PTHREAD_ONCE_INIT;

static int64_t l2_sysfs(void) {
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r");
    if (!f) return 0;
    char b[32] = {0};
    int64_t v = 0;
    if (fgets(b, sizeof b, f)) {
        char *end;
        v = strtoll(b, &end, 10);
        if (*end == 'K') v *= 1024;
        else if (*end == 'M') v *= 1024 * 1024;
    }
    fclose(f);
    return v;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

static void mc_init(void) {
    const char *cv = getenv("MSD_CPU_CONV");
    if (cv && *cv) {
        if (strcmp(cv, "own") && strcmp(cv, "gemm"))
            msd_die("MSD_CPU_CONV=%s: expected own (the project's 3x3 kernels) or gemm (im2col + OpenBLAS)", cv);
        mc.conv_gemm = !strcmp(cv, "gemm");
        mc.conv_from = "MSD_CPU_CONV";
    } else {
#if defined(__AVX512F__)
        mc.conv_gemm = 0;
        mc.conv_from = "AVX-512 build";
#else
        mc.conv_gemm = 1;
        mc.conv_from = "build without AVX-512";
#endif
    }
    const char *e = getenv("MSD_CPU_L2");
    if (e && *e) {
        char *end;
        long long v = strtoll(e, &end, 10);
        if (*end || v < 64 * 1024 || v > 64LL * 1024 * 1024)
            msd_die("MSD_CPU_L2=%s: expected the L2 cache size in bytes, 65536 .. 67108864", e);
        mc.l2 = mc.sized_for = v;
        mc.from = "MSD_CPU_L2";
    } else {
        mc.sized_for = REF_L2;
        long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
        if (v >= 64 * 1024) {
            mc.l2 = v;
            mc.from = "sysconf";
        } else if ((mc.l2 = l2_sysfs()) >= 64 * 1024) {
            mc.from = "sysfs";
        } else {
            mc.l2 = 1024 * 1024;
            mc.from = "not found, assumed";
        }
    }
    /* Winograd: about 112 tiles per work item at 2 MiB (its transformed input and output, 16 x
     * (C + O) floats a tile, stay in L2 for C = O = 64); dw: every image's padded copy at once
     * while they total at most the L2 (in floats: a quarter of its bytes), else groups of about
     * 3/8 of it */
    mc.wino_tiles = clamp64(112 * mc.sized_for / REF_L2, 32, 448);
    mc.dw_pairs_max = clamp64(mc.sized_for / 4, 64 * 1024, 16 * 1024 * 1024);
    mc.dw_group_floats = clamp64(mc.sized_for * 3 / 32, 24 * 1024, 6 * 1024 * 1024);
}

int cpu_conv_gemm(void) {
    pthread_once(&mc_once, mc_init);
    return mc.conv_gemm;
}

void cpu_conv_set_gemm(int gemm) {
    pthread_once(&mc_once, mc_init);
    mc.conv_gemm = gemm != 0;
    mc.conv_from = "set by a test";
}

int64_t cpu_wino_tiles(void) {
    pthread_once(&mc_once, mc_init);
    return mc.wino_tiles;
}

int64_t cpu_dw_pairs_max(void) {
    pthread_once(&mc_once, mc_init);
    return mc.dw_pairs_max;
}

int64_t cpu_dw_group_floats(void) {
    pthread_once(&mc_once, mc_init);
    return mc.dw_group_floats;
}

void cpu_machine_describe(char *buf, int cap) {
    pthread_once(&mc_once, mc_init);
#if defined(__AVX512F__)
    const char *kernels = "AVX-512";
#else
    const char *kernels = "portable (no AVX-512)";
#endif
    if (mc.conv_gemm) {
        snprintf(buf, (size_t)cap, "%s kernels; 3x3 convolutions: im2col + OpenBLAS sgemm per image (%s)", kernels,
                 mc.conv_from);
        return;
    }
    snprintf(buf, (size_t)cap,
             "%s kernels; L2 %lld KiB (%s), work sized for %lld KiB; 3x3 stride-1 convolutions (%s): Winograd F(2x2,3x3) on maps at least %d wide "
             "(work items of about %lld tiles), direct below; dw of 3x3: all images at once up to %lld KiB of padded "
             "copies, else groups of %lld KiB",
             kernels, (long long)(mc.l2 / 1024), mc.from, (long long)(mc.sized_for / 1024), mc.conv_from, CPU_WINO_MIN_W, (long long)mc.wino_tiles,
             (long long)(mc.dw_pairs_max * 4 / 1024), (long long)(mc.dw_group_floats * 4 / 1024));
}

void backend_cpu_describe(char *buf, int cap) {
    char a[512], b[256];
    cpu_machine_describe(a, sizeof a);
    parallel_describe(b, sizeof b);
    snprintf(buf, (size_t)cap, "%s; pool: %s", a, b);
}
