/* Run-time choice of the kernels' CPU path (isa.h). */
#include "isa.h"

#include <stdlib.h>
#include <string.h>

#include "base.h"

int qkf__isa = -1;

static const char *const names[QKF_ISA_COUNT] = {"portable", "avx2", "avx512"};

const char *qkf_isa_name(qkf_isa isa)
{
    return (unsigned)isa < QKF_ISA_COUNT ? names[isa] : "?";
}

int qkf_isa_parse(const char *s, qkf_isa *isa)
{
    for (int i = 0; i < QKF_ISA_COUNT; i++)
        if (s && !strcmp(s, names[i])) {
            *isa = (qkf_isa)i;
            return 0;
        }
    return qkf_set_error("QKF_ISA=%s: unknown kernel path (avx512, avx2 or portable)",
                         s ? s : "");
}

int qkf_isa_supported(qkf_isa isa)
{
    switch (isa) {
    case QKF_ISA_PORTABLE:
        return 1;
#if defined(__x86_64__) && defined(__GNUC__)
    case QKF_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
    case QKF_ISA_AVX512:
        __builtin_cpu_init();
        return qkf_isa_supported(QKF_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd") &&
               __builtin_cpu_supports("avx512vbmi2");
#endif
    default:
        return 0;
    }
}

static qkf_isa best(void)
{
    for (int i = QKF_ISA_COUNT - 1; i > 0; i--)
        if (qkf_isa_supported((qkf_isa)i))
            return (qkf_isa)i;
    return QKF_ISA_PORTABLE;
}

int qkf_isa_set(qkf_isa isa)
{
    if ((unsigned)isa >= QKF_ISA_COUNT || !qkf_isa_supported(isa))
        return qkf_set_error("kernel path %s: not supported by this CPU or build (best: %s)",
                             qkf_isa_name(isa), qkf_isa_name(best()));
    qkf__isa = (int)isa;
    return 0;
}

int qkf_isa_init(void)
{
    const char *s = getenv("QKF_ISA");
    qkf_isa isa = best();
    int rc = 0;
    if (s && *s) {
        qkf_isa want = QKF_ISA_PORTABLE;
        if (qkf_isa_parse(s, &want) < 0)
            rc = -1;
        else if (!qkf_isa_supported(want))
            rc = qkf_set_error("QKF_ISA=%s: this CPU or build cannot run it (best: %s)", s,
                               qkf_isa_name(isa));
        else
            isa = want;
    }
    qkf__isa = (int)isa;
    return rc;
}

qkf_isa qkf_isa_active(void)
{
    if (qkf__isa < 0)
        (void)qkf_isa_init();
    return (qkf_isa)qkf__isa;
}
