/* CPU paths of the hand-written kernels, picked once at run time.
 *
 * Every hand-vectorised kernel has three paths: AVX-512 (F, BW, VL, DQ, CD and VBMI2, as on
 * Ice Lake, Sapphire Rapids and Zen 4/5), AVX2 with FMA (Haswell and later, Zen 1-3, Intel
 * client CPUs since 12th gen), and a portable path of plain fixed-width loops that GCC and Clang
 * vectorise for SSE2 and NEON. One binary carries all three: the AVX-512 and AVX2 code lives in
 * files named `*_avx512.c` and `*_avx2.c`, which CMake compiles with that ISA's flags (on x86-64
 * only), whatever the rest of the build's -march. The path in use is the best one the CPU
 * supports, or the one the environment variable QKF_ISA (avx512 | avx2 | portable) forces.
 *
 * Dispatch: a kernel calls its path's function through a switch on qkf__isa, so a test can run
 * every path it supports in one process (qkf_isa_set). Files compiled for an ISA include only
 * `static inline` helpers from shared headers, so no ISA-specific code can leak into a function
 * that the linker shares with the portable build.
 *
 * The convention (kernels/isa_internal.h has the helpers; spike.c is the example):
 *   - the public kernel qkf_<module>_<verb> lives in the plain file <file>.c beside its _ref twin
 *     and its portable path; it starts with QKF__PICK(<name>, (args)) (QKF__PICK_VOID for void
 *     kernels), which returns qkf__<name>_avx512(args) or qkf__<name>_avx2(args) when that path
 *     is in use, and falls through to the portable code otherwise (and always off x86-64, where
 *     the macro is empty and the x86 files are not compiled);
 *   - qkf__<name>_avx512 / _avx2 are defined in <file>_avx512.c / <file>_avx2.c and declared in
 *     isa_internal.h (or the module's own private header) under #if defined(__x86_64__);
 *   - the portable path is written so that GCC and Clang vectorise it for SSE2 and NEON: fixed
 *     4-float vectors (qkf__v4f, GCC vector extensions) with constant trip counts, no intrinsics;
 *   - every path performs the same float operations in the same order per output as the _ref
 *     twin (bit-identical results), and the tests run every kernel on every supported path
 *     (tests/util.h FOR_EACH_ISA);
 *   - left-packing of lists without a compress instruction (AVX2, portable): the table of
 *     lut_internal.h. */
#ifndef QKF_ISA_H
#define QKF_ISA_H

typedef enum {
    QKF_ISA_PORTABLE = 0,
    QKF_ISA_AVX2,
    QKF_ISA_AVX512,
    QKF_ISA_COUNT
} qkf_isa;

/* The path in use. The first call decides it (QKF_ISA, else the best supported path); a forced
 * path the CPU cannot run, or an unknown name, falls back to the best supported path and leaves
 * qkf_isa_init's error for the CLI to report. */
qkf_isa qkf_isa_active(void);
/* Decides the path now: 0, or -1 with the error recorded (QKF_ISA names an unknown path or one
 * this CPU or this build cannot run). The CLI calls it at start-up and stops on error. */
int qkf_isa_init(void);
/* Forces a path (tests, benchmarks): 0, or -1 (error recorded) when unsupported here. */
int qkf_isa_set(qkf_isa isa);
int qkf_isa_supported(qkf_isa isa); /* this CPU and this build can run it */
const char *qkf_isa_name(qkf_isa isa); /* "avx512", "avx2", "portable" */
int qkf_isa_parse(const char *s, qkf_isa *isa); /* 0 or -1 (error recorded) */

/* The path in use, read by the kernels' dispatch switches (set by qkf_isa_active/init/set). */
extern int qkf__isa;
static inline qkf_isa qkf_isa_current(void)
{
    return qkf__isa >= 0 ? (qkf_isa)qkf__isa : qkf_isa_active();
}

#endif
