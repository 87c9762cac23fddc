/* Event-driven engine: a discrete-time scheduler over the model graph.
 *
 * Nodes. Each graph op is a node, except that a conv and the LIF right after it form one node
 * (conv -> folded BN -> pool -> LIF). Kinds (sim/stats.h): encode, conv, qk_sum, attn_lif, mask,
 * ssa, add, readout.
 *
 * Order. Node after node in graph order, each node running all T steps (and all samples of the
 * batch) before the next starts. The graph is feed-forward across nodes and recurrent only in
 * time within a node (its membranes), so this computes what a step-by-step schedule computes,
 * while a node's weights and membranes are used T times in a row. Every neuron still steps t = 0,
 * 1, ... in order, and within a step sample after sample (b = 0, 1, ...), which is exactly the
 * official T*B time axis when a layer's membrane is shared across samples (tb_compat SSA
 * proj_lif). A session (one step at a time, T = 1) runs the same code.
 *
 * Data. Spike and count tensors travel as qkf_spike_events (kernels/spike.h), one set per step,
 * grouped by token, sample b's token n at index b*N + n. Currents are token-major floats [B][N][C].
 * Weights are folded with BatchNorm once at creation, W' = W * alpha, b' = b * alpha + shift
 * (qkf_bn_fold), and re-laid per block of 64 output channels as [ky][kx][Cin][64], so one event
 * reads a contiguous row and one kernel position of a block is a slab [Cin][64].
 *
 * Convolutions. A conv computes each output token as the bias plus the weight rows of the events
 * in its receptive field (the gather form of "each event adds its row to its targets": the same
 * adds, accumulators in registers), in the order (ky, kx, then event list). It works on tiles of
 * output tokens: for each kernel position, the rows of the whole tile at every step are gathered
 * against one slab (two rows side by side: qkf_spike_gather_rows), so a slab is read from cache
 * by tile x T rows. Only tokens with events at a kernel position get a row there: the first
 * such position starts the row from the bias, and a row that never had events is the bias (its
 * LIF reads the bias). Blocks are as wide as keeps a slab in cache (block_width). Small convs
 * without pooling run a tile through every block, then the tile's LIF. Convs with many weights
 * run (block, tile) items, block-major so each thread reads its share of the weights, each
 * accumulating its block for its tile in scratch and stepping those channels' LIF. The LIF steps
 * a neuron row through all T steps with its membranes in registers (a forward starts them at
 * zero; nothing sweeps membranes through memory) and writes spike masks, from which the event
 * lists are written once per token (block-major: in a second pass, once every block is done).
 * Convs with a pool, and traced block-major convs, fill shared currents e->pre (block, tile) by
 * (block, tile) instead, one sample at a time; a second pass pools (MaxPool 3x3/2 on currents)
 * and steps the LIF. A tile's rows are laid out once and serve each of its blocks in turn.
 *
 * The encoding conv (a real-valued static image) is dense: the dense engine's own kernels (sgemm,
 * then bias + BatchNorm exactly as dense computes it) run once per sample before the time loop,
 * so its currents, and the first layer's spikes, equal the dense engine's bit for bit.
 *
 * Threads. One OpenMP region spans the whole forward; each node is one worksharing loop over its
 * steps and tokens (or heads, or tiles) and ends with a barrier. Loops over tokens give each
 * thread the same contiguous share of the positions in every node (static, positions outermost),
 * so a thread mostly reads events it wrote: a cache line written by the other core costs ~160 ns
 * on this machine (this alone made a forward 15% faster on 2 threads). Each output is computed by
 * one thread in a fixed order and every counter is an integer, so nothing depends on the thread
 * count or on which thread runs a tile. Producers publish the events and spikes of their output
 * per step for their consumers' statistics. Nothing is allocated after creation. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"
#include "../kernels/kernels.h"
#include "../kernels/spike.h"
#include "../kernels/spike_int.h"
#include "../kernels/spike_node.h"
#include "../models/sink.h"
#include "sched.h"

#define BLOCK 64              /* output channels per weight block (block_width) */
#define BLOCK_MAX 128         /* the widest block */
#define FUSE_BYTES (512 << 10) /* convs with more weights (or a pool) run block-major */
#define TILE_MAX 64            /* output tokens per tile */
#define TILE_FLOATS (32 << 10) /* a fused tile's currents: at most this many floats */

typedef struct {
    qkf_node_kind kind;
    const qkf_op *op;  /* the graph op */
    const qkf_op *lif; /* LIF op whose spikes this node emits (conv: the fused one), or NULL */
    int stat;          /* row in the statistics table */
    int in0, in1, in2; /* input tensors */
    int out;           /* output tensor: the LIF's for conv nodes */
    int cin, cout, k, stride, pad, pool;
    int h, w;   /* input grid */
    int ho, wo; /* conv output grid (before pooling) */
    int C, N;   /* output channels and tokens (LIF / attention nodes) */
    int bw;     /* conv: output channels per weight block (block_width); the
                   weights of block j are contiguous, [k][k][Cin][width of block j], at
                   wt + j*bw*Cin*k*k: one kernel position of a block is a slab that stays in
                   cache while a tile of output tokens reads it */
    int fused;  /* conv: tiles of output tokens run every block, then their LIF (no pool, few
                   weights); otherwise (block, tile) items fill the shared currents e->pre, and
                   pooling and the LIF run in a second pass */
    int heads, d;
    float vth;
    int or_rule; /* attention LIF on integer counts: fires iff count >= 1 */
    int tb;      /* one membrane for all samples (tb_compat) */
    float *wt, *bias;
    float *v;       /* membranes [max_batch][N][C] ([N][C] with tb); a conv's only in a session
                       (a forward steps them in scratch); int32 in integer mode */
    float *enc;     /* encoding: currents [max_batch][N][C] */
    float *kv;      /* SSA: [max_batch][heads][d][d] */
    uint8_t *fired; /* QKCA mask: [max_batch][C] */
    /* integer mode (qkf_sched_create_int; see "The integer mode" below) */
    int i16;        /* conv: int16 accumulators (a wrapping current register of <= 16 bits, no
                       pool); otherwise int32 */
    int m16;        /* conv, not i16: the mantissa gather (int16 mantissas, int32 sums: pools, or
                       a saturating or wide current register), when the weights are small
                       mantissas times a power of two per channel (fold_int) */
    int wmax;       /* m16: the largest |mantissa| */
    int32_t *ishift; /* m16: [cout] each output channel's power of two */
    void *wti;      /* conv: int16 or int32 weights laid out as wt (m16: the int16 mantissas);
                       encode: int32 [k][k][Cin][Cout] */
    qkf_ilif il;    /* the LIF's integer arithmetic (bias: the conv's, or zbias; theta: the LIF's) */
    int32_t *zbias; /* attention LIFs: their bias, zero [C] */
    int32_t in_weight; /* attention LIFs: P = in_weight * count */
} node;

typedef struct {
    qkf_spike_row *rows; /* [k*k][T][tile_cap]: a conv tile's rows (conv_blocks) */
    float *bblk;         /* [BLOCK_MAX]: the bias of a block-major item's block */
    int *giy, *gix;      /* [tile_cap] a conv tile's geometry (conv_tile_geom) */
    uint8_t *touched;    /* [T][tile_cap]: the tile's rows that have been started (conv_rows) */
    const float **lx;    /* [T * max_batch]: the inputs of a LIF sequence (conv_lif_seq) */
    uint16_t **lm;       /* [T * max_batch]: its spike masks */
    int64_t *gtok;
    float **gout;
    int *nrow;     /* [k*k][T] rows of each kernel position and step */
    uint16_t *acc; /* [max add channels, rounded up to 32]: residual counts, zero between uses */
    float *tile; /* currents of a fused conv's tile [T][tile][C], of a block-major item's block
                    [T][tile][bw], or pooled rows [T][B][C] */
    float *vt;           /* membranes of a conv's position, [max_batch][C] */
    int64_t *acs, *spk;  /* [T]: a conv's accumulates and spikes per step */
    float *row;
    qkf_work *hw; /* per-head partial counters [T][heads_max] */
    int *hend;    /* [max channels]: where each head's events end in a list (head_ends) */
    int64_t *hc;  /* per-head event counts [2][T][heads_max] (head_count) */
    /* integer mode */
    const int16_t **lx16; /* [T * max_batch]: lx as the integer LIF reads it */
    const int32_t **lx32;
    uint16_t *imask;      /* [(max channels + 15) / 16]: one row's spike mask */
    int32_t *irow;        /* [max channels]: an attention row's integer input */
    char pad[64];
} scratch;

struct qkf_sched {
    const qkf_model *m;
    const qkf_qmodel *q; /* integer mode: the integer model (m is NULL) */
    int32_t *zrow;       /* integer mode: zeros [max channels], the sum of a row without events */
    int64_t *logits_int; /* integer mode: [max_batch][classes] of the last forward */
    int32_t *enc_x;      /* integer mode: quantised pixels [max_batch][Cin][H][W] */
    int32_t *enc_s;      /* integer mode: encoding sums before pooling [max_batch][P][Cout] */
    qkf_graph g;
    qkf_stats st;
    int max_batch, flags, nthreads, T;
    int n_nodes;
    node *nodes;
    qkf_spike_events *ev; /* [n_tensors][T], N = max_batch * tokens; ch == NULL: not events */
    float **cur;    /* [n_tensors][T]: currents [max_batch][N][C] of qk_sum and ssa outputs */
    int64_t *tev;   /* [n_tensors][T][2]: events, spikes published by producers */
    scratch *scr;
    uint8_t **rec;       /* [n_lif]: [T][B][n] with RECORD */
    int64_t *lif_spikes; /* [n_lif] spikes of the current forward */
    int64_t *ro;         /* readout event counts [max_batch][T][C] */
    float *feat;         /* readout features [C] */
    float *pre; /* conv currents before pooling / LIF [T][1, or max_batch with tb][ho*wo][cout]
                   (one sample at a time), shared by the block-major convs that pool or are
                   traced (each uses it within its run) */
    int64_t pre_n;  /* floats of pre */
    int tile_cap;   /* tokens a conv tile can hold: TILE_MAX, or max_batch if larger (conv_tile) */
    uint16_t *mask; /* conv spike masks [T][max_batch * N][(C + 15) / 16] (kernels/spike_node.h),
                       shared by the convs (each uses it within its run) */
    float *enc_in, *enc_buf, *enc_pool, *enc_col;
    int64_t enc_col_cap;
    int B;
    const float *input;
    int view;      /* 1: a session's state: the graph, the folded weights and the model are the
                      engine's, shared read-only */
    int64_t bytes; /* memory of the run state (what a session holds) */
    /* Trace (qkf_sched_set_trace): per recorded LIF layer, the values of the last forward in
     * per-sample order, [4][T][B][n] (v after reset, h before the spike, x the input, s),
     * handed to the trace after the forward. OR-rule attention layers also keep the exact LIF
     * membrane they stand for ([B][N][C]), so their v and h are the dense engine's. */
    const qkf_lif_sink *trace;
    int64_t trace_base; /* samples handed over so far */
    float **tr_buf;     /* [n_lif], NULL where not recorded */
    float **tr_mem;     /* [n_lif], OR-rule layers only */
    unsigned *tr_want;  /* [n_lif] observables recorded (1u << QKF_TRACE_*) */
    int64_t tr_out_n;   /* floats per observable in tr_out */
    float *tr_out;      /* [threads][4][max n]: one (layer, sample, step) in per-sample order */
    float *tr_tmp;      /* [threads][2 * max C]: a row's membrane before the step, and spikes */
    int tr_tmp_c;
};

/* The events (currents) of a tensor at step t: nodes run one after the other over all steps,
 * so every step of a tensor is kept until its consumers have run. */
static inline qkf_spike_events *ev_at(const qkf_sched *e, int tensor, int t)
{
    return &e->ev[(int64_t)tensor * e->T + t];
}

static inline float *cur_at(const qkf_sched *e, int tensor, int t)
{
    return e->cur[(int64_t)tensor * e->T + t];
}

static void publish(qkf_sched *e, int tensor, int t, int64_t events, int64_t spikes)
{
    int64_t *p = e->tev + ((int64_t)tensor * e->T + t) * 2;
    if (events) {
#pragma omp atomic
        p[0] += events;
    }
    if (spikes) {
#pragma omp atomic
        p[1] += spikes;
    }
}

static void add_work(qkf_work *dst, const qkf_work *src)
{
    if (src->in_events) {
#pragma omp atomic
        dst->in_events += src->in_events;
    }
    for (int k = 0; k < 3; k++)
        if (src->in_spikes[k]) {
#pragma omp atomic
            dst->in_spikes[k] += src->in_spikes[k];
        }
    if (src->out_spikes) {
#pragma omp atomic
        dst->out_spikes += src->out_spikes;
    }
    if (src->acs) {
#pragma omp atomic
        dst->acs += src->acs;
    }
    if (src->macs) {
#pragma omp atomic
        dst->macs += src->macs;
    }
}

/* Input statistics of a node from its producers' published totals (one thread; the fields it
 * writes are written by no other thread). */
static void count_inputs(qkf_sched *e, const node *nd, int t)
{
    qkf_work *w = qkf_stats_at(&e->st, nd->stat, t);
    int ins[3] = {nd->in0, nd->in1, nd->in2};
    for (int k = 0; k < 3; k++)
        if (ins[k] >= 0 && ev_at(e, ins[k], 0)->ch) {
            const int64_t *p = e->tev + ((int64_t)ins[k] * e->T + t) * 2;
            w->in_events += p[0];
            w->in_spikes[k] += p[1];
        }
}

/* Spikes of LIF node nd emitted for sample b, token tok: kept with QKF_SCHED_RECORD. */
static void record(qkf_sched *e, const node *nd, int t, int b, int tok, const uint16_t *ch, int n)
{
    if (!e->rec || n == 0)
        return;
    int64_t nper = (int64_t)nd->C * nd->N;
    uint8_t *r = e->rec[nd->lif->lif_index] + ((int64_t)t * e->B + b) * nper + tok;
    for (int i = 0; i < n; i++)
        r[(int64_t)ch[i] * nd->N] = 1;
}

static void finish_lif(qkf_sched *e, const node *nd, int t, int64_t spikes)
{
    if (spikes) {
#pragma omp atomic
        e->lif_spikes[nd->lif->lif_index] += spikes;
    }
    publish(e, nd->out, t, spikes, spikes);
}

static float *membrane(const node *nd, int b)
{
    return nd->tb ? nd->v : nd->v + (int64_t)b * nd->N * nd->C;
}

static float *trace_tmp(const qkf_sched *e, const node *nd)
{
    if (!e->tr_buf || !nd->lif || !e->tr_buf[nd->lif->lif_index])
        return NULL;
    return e->tr_tmp + (int64_t)omp_get_thread_num() * 2 * e->tr_tmp_c;
}

/* Stores one traced LIF row (sample b, token p, channels 0..C-1) as the engine holds it,
 * token-major [t][b][p][c] (contiguous stores; the hand-over transposes to c*N + p): h is
 * recomputed exactly as the kernel computes it from the membrane before the step. */
static void trace_row(qkf_sched *e, const node *nd, int t, int b, int p, const float *vold,
                      const float *x, const float *vnew, const uint16_t *ch, int ns)
{
    int l = nd->lif->lif_index;
    unsigned w = e->tr_want[l];
    int64_t n = (int64_t)nd->C * nd->N, plane = (int64_t)e->T * e->B * n;
    float *V = e->tr_buf[l] + ((int64_t)t * e->B + b) * n + (int64_t)p * nd->C;
    if (w & (1u << QKF_TRACE_V))
        memcpy(V, vnew, (size_t)nd->C * sizeof(float));
    if (w & (1u << QKF_TRACE_H)) {
        float *H = V + plane;
        for (int c = 0; c < nd->C; c++)
            H[c] = vold[c] + (x[c] - vold[c]) / 2.0f;
    }
    if (w & (1u << QKF_TRACE_INPUT))
        memcpy(V + 2 * plane, x, (size_t)nd->C * sizeof(float));
    if (w & (1u << QKF_TRACE_SPIKES)) {
        float *S = V + 3 * plane;
        memset(S, 0, (size_t)nd->C * sizeof(float));
        for (int k = 0; k < ns; k++)
            S[ch[k]] = 1.0f;
    }
}

/* [N][C] -> [C][N], in tiles that stay in cache. */
static void transpose_nc(float *dst, const float *src, int64_t N, int C)
{
    const int TB = 32;
    for (int64_t p0 = 0; p0 < N; p0 += TB)
        for (int c0 = 0; c0 < C; c0 += TB) {
            int64_t p1 = p0 + TB < N ? p0 + TB : N;
            int c1 = c0 + TB < C ? c0 + TB : C;
            for (int64_t p = p0; p < p1; p++)
                for (int c = c0; c < c1; c++)
                    dst[(int64_t)c * N + p] = src[p * C + c];
        }
}

/* One LIF row of node nd (sample b, output token p) from currents x, membranes vrow; emits its
 * events. */
static int lif_emit_v(qkf_sched *e, const node *nd, int t, int b, int p, const float *x,
                      float *vrow)
{
    qkf_spike_events *out = ev_at(e, nd->out, t);
    int64_t tok = (int64_t)b * nd->N + p;
    uint16_t *ch = out->ch + tok * nd->C;
    float *old = trace_tmp(e, nd);
    if (old)
        memcpy(old, vrow, (size_t)nd->C * sizeof(float));
    int ns = qkf_spike_lif_row(ch, vrow, x, nd->C, nd->vth);
    if (old)
        trace_row(e, nd, t, b, p, old, x, vrow, ch, ns);
    out->len[tok] = ns;
    record(e, nd, t, b, p, ch, ns);
    return ns;
}

/* lif_emit_v on the node's own membranes. */
static int lif_emit(qkf_sched *e, const node *nd, int t, int b, int p, const float *x)
{
    return lif_emit_v(e, nd, t, b, p, x, membrane(nd, b) + (int64_t)p * nd->C);
}

/* Integer mode, a traced LIF row (sample b, token p) of node nd: the reference step
 * (qkf_spike_ilif_step) channel by channel on the sums x (int16 when x16, else int32) and the
 * membranes v; emits its events and stores what the trace wants in membrane units, as the dense
 * integer engine hands them to its sink: V after the reset, H (compared with the threshold), the
 * input added (A << current_shift) + bias[c], spikes (token-major, as trace_row). */
static int ilif_emit_traced(qkf_sched *e, const node *nd, int t, int b, int p, const void *x,
                            int x16, int32_t *v)
{
    qkf_spike_events *out = ev_at(e, nd->out, t);
    int64_t tok = (int64_t)b * nd->N + p;
    uint16_t *ch = out->ch + tok * nd->C;
    const qkf_ilif *il = &nd->il;
    int l = nd->lif->lif_index, ns = 0;
    unsigned w = e->tr_want[l];
    int64_t n = (int64_t)nd->C * nd->N, plane = (int64_t)e->T * e->B * n;
    float *V = e->tr_buf[l] + ((int64_t)t * e->B + b) * n + (int64_t)p * nd->C;
    for (int c = 0; c < nd->C; c++) {
        int32_t sum = x16 ? ((const int16_t *)x)[c] : ((const int32_t *)x)[c], h;
        int sp = qkf_spike_ilif_step(il, c, sum, &v[c], &h);
        if (sp)
            ch[ns++] = (uint16_t)c;
        if (w & (1u << QKF_TRACE_V))
            V[c] = (float)v[c];
        if (w & (1u << QKF_TRACE_H))
            V[plane + c] = (float)h;
        if (w & (1u << QKF_TRACE_INPUT))
            V[2 * plane + c] = (float)(qkf_int_reduce(sum, il->current_bits, il->current_wrap) *
                                           ((int64_t)1 << il->current_shift) +
                                       il->bias[c]);
        if (w & (1u << QKF_TRACE_SPIKES))
            V[3 * plane + c] = (float)sp;
    }
    out->len[tok] = ns;
    record(e, nd, t, b, p, ch, ns);
    return ns;
}

/* Integer mode: one step of the integer LIF for the row (sample b, token p) of node nd from its
 * sums x, on the node's own membranes; emits its events. */
static int ilif_emit(qkf_sched *e, const node *nd, scratch *s, int t, int b, int p,
                     const int32_t *x)
{
    qkf_spike_events *out = ev_at(e, nd->out, t);
    int64_t tok = (int64_t)b * nd->N + p;
    uint16_t *ch = out->ch + tok * nd->C, *mk = s->imask;
    int32_t *v = (int32_t *)(void *)(membrane(nd, b) + (int64_t)p * nd->C);
    if (trace_tmp(e, nd))
        return ilif_emit_traced(e, nd, t, b, p, x, 0, v);
    qkf_spike_ilif_seq_i32(&mk, &x, 1, nd->C, &nd->il, v);
    int ns = qkf_spike_mask_emit(ch, mk, nd->C);
    out->len[tok] = ns;
    record(e, nd, t, b, p, ch, ns);
    return ns;
}

/* ---- nodes ------------------------------------------------------------------------------------
 */

/* The geometry of output tokens q0..q1 (pre-pool grid) of a conv over the samples b0..b0+B-1,
 * once per tile: token q is sample b0 + q % B at position q / B (so a tile holds the samples of
 * its positions in order, as the LIF steps them). Keeps each token's first input token (top-left
 * of its receptive field, possibly outside the grid), its row and column there, and its output
 * row: out + (q - q0) * pitch (a tile) or, out NULL, its row of the shared currents e->pre, which
 * hold those B samples (at step 0; step t adds t * B * P * cout). */
static void conv_tile_geom(const qkf_sched *e, const node *nd, int b0, int B, int q0, int q1,
                           float *out, int64_t pitch, scratch *s)
{
    int P = nd->ho * nd->wo;
    for (int q = q0; q < q1; q++) {
        int b = q % B, p = q / B, i = q - q0;
        int iy = p / nd->wo * nd->stride - nd->pad, ix = p % nd->wo * nd->stride - nd->pad;
        s->giy[i] = iy, s->gix[i] = ix;
        s->gtok[i] = (int64_t)(b0 + b) * nd->h * nd->w + (int64_t)iy * nd->w + ix;
        s->gout[i] = out ? out + (int64_t)i * pitch : e->pre + ((int64_t)b * P + p) * nd->cout;
    }
}

/* One row of conv_rows: a token's list (l events, the first n1 of them single) into output o,
 * started from binit unless the row was started before (*touched). Returns whether to keep it:
 * the row is always written, kept only if it has events (or every row must start). */
static inline int put_row(qkf_spike_row *r, const uint16_t *ch, const uint16_t *cnt, int l, int n1,
                          float *o, const float *binit, uint8_t *touched, int every)
{
    int keep = l != 0 || every;
    r->out = o;
    r->init = *touched ? o : binit;
    r->seg.ch = ch;
    r->seg.cnt = cnt;
    r->seg.n = l;
    r->n1 = n1;
    *touched |= (uint8_t)keep;
    return keep;
}

/* Rows of kernel position kk at step t for the tile of conv_tile_geom (n tokens), into rows. Only
 * tokens with events at kk get a row: the first position with events starts the row from the
 * bias (binit: the bias at the columns the rows' offset selects), later ones add to it in place.
 * s->touched[t][i] records that row i was started; a row never started holds no current, and
 * its LIF reads the bias instead (the same value: the bias is what the row would hold). With
 * all, the first position starts every row (the shared currents, read whole by pooling). ostep:
 * what step t adds to an output row. Returns the number of rows. */
static int conv_rows(const qkf_sched *e, const node *nd, int t, int n, int kk, int64_t ostep,
                     const float *binit, int all, scratch *s, qkf_spike_row *rows)
{
    const qkf_spike_events *in = ev_at(e, nd->in0, t);
    uint8_t *touched = s->touched + (int64_t)t * e->tile_cap;
    int ky = kk / nd->k, kx = kk % nd->k, nr = 0, every = all && kk == 0, C = in->C;
    int64_t dk = (int64_t)ky * nd->w + kx, to = t * ostep;
    const int32_t *len = in->len, *len1 = in->len1;
    const uint16_t *ch = in->ch, *cnt = in->cnt;
    /* without branches: whether a token has events is as good as random, so every token's row
     * is written at rows[nr] and kept (nr advanced) only if it has events (nr <= i < n); seg.base
     * is 0 in every row (set at creation) */
    if (nd->k == 1 && nd->pad == 0) { /* 1x1: every receptive field is inside */
        for (int i = 0; i < n; i++) {
            int64_t tok = s->gtok[i];
            int l = len[tok];
            nr += put_row(&rows[nr], ch + tok * C, cnt ? cnt + tok * C : NULL, l,
                          l && len1 ? len1[tok] : 0, s->gout[i] + to, binit, &touched[i], every);
        }
        return nr;
    }
    for (int i = 0; i < n; i++) {
        int iy = s->giy[i] + ky, ix = s->gix[i] + kx;
        int inside = (unsigned)iy < (unsigned)nd->h && (unsigned)ix < (unsigned)nd->w;
        int64_t tok = inside ? s->gtok[i] + dk : 0;
        int l = inside ? len[tok] : 0;
        nr += put_row(&rows[nr], ch + tok * C, cnt ? cnt + tok * C : NULL, l,
                      l && len1 ? len1[tok] : 0, s->gout[i] + to, binit, &touched[i], every);
    }
    return nr;
}

/* The rows against the slab at element offset slab of the node's weights (float, or in integer
 * mode int16 / int32 / int16 mantissas: the rows then address integer rows, kernels/spike_int.h);
 * c0: the block's first output channel. */
static inline int64_t gather(const node *nd, const qkf_spike_row *rows, int nrow, int64_t off,
                             int64_t slab, int width, int c0)
{
    if (!nd->wti)
        return qkf_spike_gather_rows(rows, nrow, off, nd->wt + slab, width, width);
    if (nd->m16)
        return qkf_spike_gather_rows_m16(rows, nrow, off, (const int16_t *)nd->wti + slab, width,
                                         width, nd->ishift + c0, nd->wmax);
    if (nd->i16)
        return qkf_spike_gather_rows_i16(rows, nrow, off, (const int16_t *)nd->wti + slab, width,
                                         width);
    return qkf_spike_gather_rows_i32(rows, nrow, off, (const int32_t *)nd->wti + slab, width,
                                     width);
}

/* Floats of the buffers that hold a row of n currents: n, or with int16 sums n / 2 (rounded up;
 * the rows of a tile are then packed twice as densely). */
static inline int64_t row_floats(const node *nd, int64_t n)
{
    return nd->i16 ? (n + 1) / 2 : n;
}

/* Accumulates weight blocks j0..j1-1 over every kernel position and step for the tile of
 * conv_tile_geom (n tokens); adds the accumulates of step t to acs[t]. Kernel positions
 * outermost; a position's rows are laid out once per step and serve every block (the block
 * selects their columns; local: the rows hold block j0 alone, j1 = j0 + 1); each slab
 * [Cin][width] is then read by the whole tile at every step while it is in cache. A row's adds
 * keep the order (ky, kx, then list order) of a gather over its receptive field. (Cutting the
 * slabs further by input channel, so that each stays in L1, was slower: the rows' pieces get
 * short and every piece reloads and stores its accumulators.)
 *
 * The rows of every kernel position and step are kept (s->rows is [k*k][T][tile_cap]), and
 * nothing in them depends on the block: the offset selects a block's columns, and a local
 * block's rows start from s->bblk, which holds that block's bias. So the next item of the same
 * tile passes reuse and skips laying them out again (block-major items of one tile in a row). */
static void conv_blocks(const qkf_sched *e, const node *nd, int n, int j0, int j1, int64_t ostep,
                        int local, int all, int reuse, scratch *s, int64_t *acs)
{
    int kk2 = nd->k * nd->k, T = e->T;
    int64_t cap = e->tile_cap;
    const float *binit = e->q ? NULL : nd->bias; /* integer sums start from 0 (bias: the LIF) */
    if (local && !e->q) {
        int c0 = j0 * nd->bw, width = nd->cout - c0 < nd->bw ? nd->cout - c0 : nd->bw;
        memcpy(s->bblk, nd->bias + c0, (size_t)width * sizeof(float));
        binit = s->bblk;
    }
    if (!reuse)
        memset(s->touched, 0, (size_t)T * cap);
    for (int kk = 0; kk < kk2; kk++) {
        qkf_spike_row *rows = s->rows + (int64_t)kk * T * cap;
        int *nr = s->nrow + kk * T;
        if (!reuse)
            for (int t = 0; t < T; t++)
                nr[t] = conv_rows(e, nd, t, n, kk, ostep, binit, all, s, rows + t * cap);
        for (int j = j0; j < j1; j++) {
            int c0 = j * nd->bw, width = nd->cout - c0 < nd->bw ? nd->cout - c0 : nd->bw;
            int64_t slab = (int64_t)c0 * nd->cin * kk2 + (int64_t)kk * nd->cin * width;
            for (int t = 0; t < T; t++)
                if (nr[t])
                    acs[t] +=
                        gather(nd, rows + t * cap, nr[t], local ? 0 : c0, slab, width, c0) * width;
        }
    }
}

/* Output tokens per tile. Fused: enough tiles for every thread, at most TILE_MAX, the currents
 * of all steps within TILE_FLOATS. Block-major: as large as TILE_MAX (each slab is read from
 * cache by more rows), while there are at least two (block, tile) items per thread. With one
 * membrane for all samples (tb) a tile holds whole positions, so that one thread steps a
 * position's samples in order. */
static int conv_tile(const qkf_sched *e, const node *nd, int B, int nthreads)
{
    int total = B * nd->ho * nd->wo, tt;
    if (!nd->fused) {
        int nblk = (nd->cout + nd->bw - 1) / nd->bw;
        tt = TILE_MAX;
        while (tt > 8 && (int64_t)nblk * ((total + tt - 1) / tt) < 2 * nthreads)
            tt /= 2;
        /* a whole number of tiles per thread where the grid allows (items(): each thread then
         * works on its own positions) */
        int ntile = (total + tt - 1) / tt;
        if (ntile % nthreads && total >= 8 * nthreads) {
            ntile = (ntile + nthreads - 1) / nthreads * nthreads;
            tt = (total + ntile - 1) / ntile;
        }
    } else {
        tt = (total + 2 * nthreads - 1) / (2 * nthreads);
        tt = tt < 8 ? 8 : tt > TILE_MAX ? TILE_MAX : tt;
        int cap = TILE_FLOATS / (e->T * nd->cout);
        tt = tt < cap ? tt : cap;
    }
    if (nd->tb)
        tt = tt / B * B;
    if (tt < (nd->tb ? B : 1))
        tt = nd->tb ? B : 1;
    return tt;
}

/* Where a conv's LIF finds the current of (t, b) at one output position, for samples b0..: at
 * base + t * ts + (b - b0) * bs, or the bias where tile row row0 + b - b0 of step t was never
 * started (touched NULL: every row was). */
typedef struct {
    const float *base, *bias;
    int64_t ts, bs;
    const uint8_t *touched;
    int row0, pitch; /* pitch: the touched flags of step t start at t * pitch */
} cur_src;

static const float *cur_of(const cur_src *c, int t, int db)
{
    if (c->touched && !c->touched[(int64_t)t * c->pitch + c->row0 + db])
        return c->bias;
    return c->base + t * c->ts + db * c->bs;
}

/* The spike mask of a conv's output token tok (sample b's position p at b * N + p), step t. */
static uint16_t *mask_at(const qkf_sched *e, const node *nd, int t, int64_t tok)
{
    return e->mask + ((int64_t)t * e->B * nd->N + tok) * ((nd->C + 15) / 16);
}

/* The LIF sequence of s->lx / s->lm (R steps, channels c0..c0+width-1, membranes v or NULL): the
 * float LIF, or in integer mode the integer LIF on the int16 or int32 sums the rows hold. */
static void lif_seq(const qkf_sched *e, const node *nd, scratch *s, int R, int c0, int width,
                    float *v)
{
    if (!e->q) {
        qkf_spike_lif_seq(s->lm, s->lx, R, width, nd->vth, v);
        return;
    }
    qkf_ilif il = nd->il;
    il.bias += c0, il.theta += c0;
    int32_t *vi = v ? (int32_t *)(void *)v : NULL;
    if (nd->i16) {
        for (int r = 0; r < R; r++)
            s->lx16[r] = (const int16_t *)(const void *)s->lx[r];
        qkf_spike_ilif_seq_i16(s->lm, s->lx16, R, width, &il, vi);
    } else {
        for (int r = 0; r < R; r++)
            s->lx32[r] = (const int32_t *)(const void *)s->lx[r];
        qkf_spike_ilif_seq_i32(s->lm, s->lx32, R, width, &il, vi);
    }
}

/* The LIF of output position p for the samples b0..b1-1, channels c0..c0+width-1 (c0 a multiple
 * of 16; src finds their currents), over every step, into the spike masks: one
 * qkf_spike_lif_seq per membrane, which a forward starts at zero and drops (a session passes the
 * node's own, kept across steps). With tb one membrane serves every sample, stepped (t, b) in
 * the official T*B order. */
static void conv_lif_seq(qkf_sched *e, const node *nd, int p, int b0, int b1, int c0, int width,
                         const cur_src *src, scratch *s)
{
    int T = e->T, nb = b1 - b0, C = nd->C;
    if (nd->tb) {
        for (int t = 0; t < T; t++)
            for (int b = b0; b < b1; b++) {
                s->lx[t * nb + b - b0] = cur_of(src, t, b - b0);
                s->lm[t * nb + b - b0] = mask_at(e, nd, t, (int64_t)b * nd->N + p) + c0 / 16;
            }
        lif_seq(e, nd, s, T * nb, c0, width, e->view ? membrane(nd, 0) + (int64_t)p * C + c0 : NULL);
        return;
    }
    for (int b = b0; b < b1; b++) {
        for (int t = 0; t < T; t++) {
            s->lx[t] = cur_of(src, t, b - b0);
            s->lm[t] = mask_at(e, nd, t, (int64_t)b * nd->N + p) + c0 / 16;
        }
        lif_seq(e, nd, s, T, c0, width, e->view ? membrane(nd, b) + (int64_t)p * C + c0 : NULL);
    }
}

/* The event list of a conv's output token (sample b, position p) at step t from its mask. */
static int conv_emit(qkf_sched *e, const node *nd, int t, int b, int p)
{
    qkf_spike_events *out = ev_at(e, nd->out, t);
    int64_t tok = (int64_t)b * nd->N + p;
    uint16_t *ch = out->ch + tok * nd->C;
    int ns = qkf_spike_mask_emit(ch, mask_at(e, nd, t, tok), nd->C);
    out->len[tok] = ns;
    record(e, nd, t, b, p, ch, ns);
    return ns;
}

/* The LIF of output position p for the samples b0..b1-1 over every step, and its events. A
 * traced layer steps row by row through lif_emit_v (integer mode: ilif_emit_traced), which
 * stores what the trace wants (its membranes from zero in scratch, or a session's own). */
static void conv_lif(qkf_sched *e, const node *nd, int p, int b0, int b1, const cur_src *src,
                     int traced, scratch *s)
{
    int C = nd->C;
    if (!traced) {
        conv_lif_seq(e, nd, p, b0, b1, 0, C, src, s);
        for (int t = 0; t < e->T; t++)
            for (int b = b0; b < b1; b++)
                s->spk[t] += conv_emit(e, nd, t, b, p);
        return;
    }
    if (!e->view) {
        size_t n = (size_t)(nd->tb ? 1 : b1 - b0) * C;
        memset(s->vt, 0, n * sizeof(float));
    }
    for (int t = 0; t < e->T; t++)
        for (int b = b0; b < b1; b++) {
            float *v = e->view ? membrane(nd, b) + (int64_t)p * C
                               : s->vt + (int64_t)(nd->tb ? 0 : b - b0) * C;
            s->spk[t] += e->q ? ilif_emit_traced(e, nd, t, b, p, cur_of(src, t, b - b0),
                                                 nd->i16, (int32_t *)(void *)v)
                              : lif_emit_v(e, nd, t, b, p, cur_of(src, t, b - b0), v);
        }
}

/* This thread's share of a node's N positions (per sample): the same contiguous range in every
 * node (see Threads above). Loops over it run steps, then samples, then positions, so that within
 * a step memory is read in order. */
typedef struct {
    int p0, n;
} share;
static share my_positions(int N)
{
    int nth = omp_get_num_threads(), me = omp_get_thread_num();
    int p0 = (int)((int64_t)N * me / nth), p1 = (int)((int64_t)N * (me + 1) / nth);
    share sh = {p0, p1 - p0};
    return sh;
}

/* Loops over a share sh of the N positions of every step t and sample b, in that order (see
 * my_positions); tok is sample b's position p as a token index, b * N + p. (Nested loops:
 * recovering t, b and p from one flat index costs three integer divisions per token.) */
#define FOR_SHARE(sh, T, B, N, t, b, tok)                                                        \
    for (int t = 0; t < (T); t++)                                                                \
        for (int b = 0; b < (B); b++)                                                            \
            for (int64_t tok = (int64_t)b * (N) + (sh).p0, tok##_end = tok + (sh).n;             \
                 tok < tok##_end; tok++)

/* This thread's share of a block-major conv's (block, tile) items. Tiles are output positions,
 * and every node gives a thread the same share of the positions (contiguous ranges, static), so
 * a thread mostly reads the events it wrote itself: on this machine a cache line written by the
 * other core costs ~160 ns to fetch. So when the tiles divide evenly among the threads, a thread
 * takes its range of tiles, every block of each in turn (by_tile: item = tile * nblk + block;
 * blocks outermost within the range measured the same at batch 1, slower at 8); otherwise (a
 * small grid: stage 3 has one tile) a contiguous range of block-major items, its share of the
 * weights. */
typedef struct {
    int i0, i1, by_tile;
} item_range;
static item_range items(int nblk, int ntile)
{
    int nth = omp_get_num_threads(), me = omp_get_thread_num(), by_tile = ntile % nth == 0;
    int64_t n = (int64_t)nblk * ntile;
    item_range r = {(int)(n * me / nth), (int)(n * (me + 1) / nth), by_tile};
    return r;
}

/* The block *j and tile *tl of item it of r; returns whether the thread's previous item had the
 * same tile, so that its rows can be reused (conv_blocks). */
static int item_at(const item_range *r, int it, int nblk, int ntile, int *j, int *tl)
{
    *j = r->by_tile ? it % nblk : it / ntile;
    *tl = r->by_tile ? it / nblk : it % ntile;
    return it > r->i0 && (r->by_tile ? (it - 1) / nblk : (it - 1) % ntile) == *tl;
}

/* A conv node over all T steps, in one of three ways. Fused (few weights, no pool): tiles of
 * output tokens through every block, then their LIF while cached. Block-major (many weights, no
 * pool): (block, tile) items, each accumulating its block for its tile in scratch and stepping
 * the LIF of those channels into the spike masks; a second pass writes the event lists. Shared
 * currents (a pool, or a traced layer: the trace wants whole rows): (block, tile) items fill
 * e->pre, a second pass pools (MaxPool 3x3/2 on currents) and steps the LIF. */
static void conv_run(qkf_sched *e, node *nd, scratch *s)
{
    int T = e->T, B = e->B, C = nd->cout, P = nd->ho * nd->wo;
    int nblk = (C + nd->bw - 1) / nd->bw, tt = conv_tile(e, nd, B, omp_get_num_threads());
    int ntile = (B * P + tt - 1) / tt, traced = trace_tmp(e, nd) != NULL;
    int64_t *acs = s->acs;
    memset(s->acs, 0, (size_t)T * sizeof(int64_t));
    memset(s->spk, 0, (size_t)T * sizeof(int64_t));
#pragma omp master
    for (int t = 0; t < T; t++)
        count_inputs(e, nd, t);
    /* a row never started holds no events: its current is the bias (float), or 0 (integer) */
    const float *none = e->q ? (const float *)(const void *)e->zrow : nd->bias;
    if (nd->fused) {
        int64_t pc = row_floats(nd, C), tstride = (int64_t)tt * pc;
        /* this thread's share of the positions (my_positions: the same in every node, so a
         * thread mostly reads the events it wrote) in tiles of equal size at most tt (tiles over
         * all positions, dealt out statically, left 4 of stage 2's 7 tiles to one thread and 3
         * to the other); no result depends on the tiling or on which thread computes a tile */
        share sh = my_positions(P);
        int qa = sh.p0 * B, qb = (sh.p0 + sh.n) * B, nt = (qb - qa + tt - 1) / tt;
        int tsz = nt ? (qb - qa + nt - 1) / nt : tt;
        if (nd->tb) /* whole positions (conv_tile) */
            tsz = (tsz + B - 1) / B * B;
        for (int q0 = qa; q0 < qb; q0 += tsz) {
            int q1 = q0 + tsz < qb ? q0 + tsz : qb;
            conv_tile_geom(e, nd, 0, B, q0, q1, s->tile, pc, s);
            conv_blocks(e, nd, q1 - q0, 0, nblk, tstride, 0, 0, 0, s, acs);
            for (int q = q0; q < q1;) { /* the tile's samples of each position */
                int p = q / B, qe = (p + 1) * B < q1 ? (p + 1) * B : q1;
                cur_src src = {s->tile + (int64_t)(q - q0) * pc, none, tstride, pc, s->touched,
                               q - q0, e->tile_cap};
                conv_lif(e, nd, p, q % B, q % B + (qe - q), &src, traced, s);
                q = qe;
            }
        }
    } else if (!nd->pool && !traced) {
        /* a thread's share of the (block, tile) items (items()); a block's currents stay in
         * scratch, and the lists are written once every block of a position is done */
        int bw = nd->bw;
        int64_t pb = row_floats(nd, bw), tstride = (int64_t)tt * pb;
        item_range ir = items(nblk, ntile);
        for (int it = ir.i0; it < ir.i1; it++) {
            int j, tl, reuse = item_at(&ir, it, nblk, ntile, &j, &tl);
            int q0 = tl * tt, q1 = q0 + tt < B * P ? q0 + tt : B * P;
            int c0 = j * bw, width = C - c0 < bw ? C - c0 : bw;
            if (!reuse)
                conv_tile_geom(e, nd, 0, B, q0, q1, s->tile, pb, s);
            conv_blocks(e, nd, q1 - q0, j, j + 1, tstride, 1, 0, reuse, s, acs);
            for (int q = q0; q < q1;) {
                int p = q / B, qe = (p + 1) * B < q1 ? (p + 1) * B : q1;
                cur_src src = {s->tile + (int64_t)(q - q0) * pb, e->q ? none : nd->bias + c0,
                               tstride, pb, s->touched, q - q0, e->tile_cap};
                conv_lif_seq(e, nd, p, q % B, q % B + (qe - q), c0, width, &src, s);
                q = qe;
            }
        }
#pragma omp barrier
        share sh = my_positions(nd->N);
        FOR_SHARE(sh, T, B, nd->N, t, b, n)
            s->spk[t] += conv_emit(e, nd, t, b, (int)(n - (int64_t)b * nd->N));
    } else {
        /* one sample at a time, so that e->pre holds [T][bc][P][C] for bc = 1 (at batch 8
         * stage 2's proj4 would otherwise stream 25 MB of currents through memory twice), or
         * every sample where one membrane serves them all (tb: stepped (t, b) in order) */
        int bc = nd->tb ? B : 1, tc = conv_tile(e, nd, bc, omp_get_num_threads());
        int nt = (bc * P + tc - 1) / tc;
        int64_t ct = (int64_t)bc * P * C, cb = (int64_t)P * C;
        for (int b0 = 0; b0 < B; b0 += bc) {
            /* currents of every (block, tile) into e->pre, a thread's share of them (items) */
            item_range ir = items(nblk, nt);
            for (int it = ir.i0; it < ir.i1; it++) {
                int j, tl, reuse = item_at(&ir, it, nblk, nt, &j, &tl);
                int q0 = tl * tc, q1 = q0 + tc < bc * P ? q0 + tc : bc * P;
                if (!reuse)
                    conv_tile_geom(e, nd, b0, bc, q0, q1, NULL, 0, s);
                conv_blocks(e, nd, q1 - q0, j, j + 1, ct, 0, 1, reuse, s, acs);
            }
#pragma omp barrier
#pragma omp for schedule(static) nowait
            for (int q = 0; q < nd->N; q++) {
                if (!nd->pool) {
                    cur_src src = {e->pre + (int64_t)q * C, nd->bias, ct, cb, NULL, 0, 0};
                    conv_lif(e, nd, q, b0, b0 + bc, &src, traced, s);
                    continue;
                }
                /* MaxPool 3x3 / 2, padding 1 (-inf), on the currents before the LIF */
                int pw = (nd->wo - 1) / 2 + 1, qy = q / pw, qx = q % pw;
                if (e->q) { /* on the int32 sums S, before the current register's reduction */
                    for (int t = 0; t < T; t++)
                        for (int b = 0; b < bc; b++) {
                            const int32_t *win[9];
                            int nw = 0;
                            const int32_t *cur =
                                (const int32_t *)(const void *)e->pre + ((int64_t)t * bc + b) * P * C;
                            for (int iy = 2 * qy - 1; iy <= 2 * qy + 1; iy++)
                                for (int ix = 2 * qx - 1; ix <= 2 * qx + 1; ix++)
                                    if (iy >= 0 && iy < nd->ho && ix >= 0 && ix < nd->wo)
                                        win[nw++] = cur + ((int64_t)iy * nd->wo + ix) * C;
                            qkf_spike_max_i32((int32_t *)(void *)(s->tile + ((int64_t)t * bc + b) * C),
                                              win, nw, C);
                        }
                    cur_src src = {s->tile, none, (int64_t)bc * C, C, NULL, 0, 0};
                    conv_lif(e, nd, q, b0, b0 + bc, &src, traced, s);
                    continue;
                }
                for (int t = 0; t < T; t++)
                    for (int b = 0; b < bc; b++) {
                        float *row = s->tile + ((int64_t)t * bc + b) * C;
                        const float *cur = e->pre + ((int64_t)t * bc + b) * P * C;
                        for (int c = 0; c < C; c++)
                            row[c] = -INFINITY;
                        for (int dy = -1; dy <= 1; dy++) {
                            int iy = 2 * qy + dy;
                            if (iy < 0 || iy >= nd->ho)
                                continue;
                            for (int dx = -1; dx <= 1; dx++) {
                                int ix = 2 * qx + dx;
                                if (ix < 0 || ix >= nd->wo)
                                    continue;
                                const float *src = cur + ((int64_t)iy * nd->wo + ix) * C;
                                for (int c = 0; c < C; c++) /* the dense pool's comparison */
                                    row[c] = src[c] > row[c] ? src[c] : row[c];
                            }
                        }
                    }
                cur_src src = {s->tile, nd->bias, (int64_t)bc * C, C, NULL, 0, 0};
                conv_lif(e, nd, q, b0, b0 + bc, &src, traced, s);
            }
            if (b0 + bc < B) { /* the next sample reuses e->pre */
#pragma omp barrier
            }
        }
    }
    for (int t = 0; t < T; t++) {
        qkf_work w = {0, {0, 0, 0}, s->spk[t], acs[t], 0};
        add_work(qkf_stats_at(&e->st, nd->stat, t), &w);
        finish_lif(e, nd, t, s->spk[t]);
    }
#pragma omp barrier
}

/* Every node below runs all T steps in one worksharing loop (one barrier per node, not per
 * step). Counters of step t gather in the thread's s->acs[t] / s->spk[t] and per-head
 * s->hw[t * heads_max + h], flushed once at the end. */

/* The encoding layer: LIF on the currents computed once per sample before the time loop. Each
 * neuron is stepped over t in order. */
static void encode_run(qkf_sched *e, node *nd, scratch *s)
{
    int B = e->B, C = nd->C, T = e->T;
    memset(s->spk, 0, (size_t)T * sizeof(int64_t));
#pragma omp for schedule(static) nowait
    for (int p = 0; p < nd->N; p++)
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++) {
                const float *x = nd->enc + ((int64_t)b * nd->N + p) * C;
                s->spk[t] += e->q ? ilif_emit(e, nd, s, t, b, p, (const int32_t *)(const void *)x)
                                  : lif_emit(e, nd, t, b, p, x);
            }
    for (int t = 0; t < T; t++) {
        qkf_work w = {0, {0, 0, 0}, s->spk[t], 0, 0};
        if (t == 0 && omp_get_thread_num() == 0) /* the MACs ran once, before step 0 */
            w.macs = e->st.node[nd->stat].macs_once * B;
        add_work(qkf_stats_at(&e->st, nd->stat, t), &w);
        finish_lif(e, nd, t, s->spk[t]);
    }
#pragma omp barrier
}

/* Frames of a DVS input: every non-zero value is an event whose count is the value. */
static void frames_run(qkf_sched *e, scratch *s)
{
    const qkf_tensor *x = &e->g.tensors[e->g.input];
    int C = x->c, N = x->h * x->w, B = e->B, T = e->T;
    memset(s->acs, 0, (size_t)T * sizeof(int64_t));
    memset(s->spk, 0, (size_t)T * sizeof(int64_t));
    share sh = my_positions(N);
    FOR_SHARE(sh, T, B, N, t, b, q)
    {
        qkf_spike_events *ev = ev_at(e, e->g.input, t);
        const float *src = e->input + ((int64_t)b * e->T + t) * C * N + (q - (int64_t)b * N);
        uint16_t *ch = ev->ch + q * C, *cnt = ev->cnt + q * C;
        int k = 0;
        for (int c = 0; c < C; c++) /* single events first (qkf_spike_events), then the others */
            if (src[(int64_t)c * N] == 1.0f)
                ch[k] = (uint16_t)c, cnt[k++] = 1;
        ev->len1[q] = k;
        s->spk[t] += k;
        for (int c = 0; c < C; c++) {
            float val = src[(int64_t)c * N];
            if (val != 0.0f && val != 1.0f) {
                ch[k] = (uint16_t)c, cnt[k++] = (uint16_t)val;
                s->spk[t] += (int64_t)val;
            }
        }
        ev->len[q] = k;
        s->acs[t] += k;
    }
    for (int t = 0; t < T; t++)
        publish(e, e->g.input, t, s->acs[t], s->spk[t]);
#pragma omp barrier
}

static qkf_work *head_work(qkf_sched *e, scratch *s, int t, int h)
{
    return &s->hw[(int64_t)t * e->st.heads_max + h];
}

/* Per-head event counts k = 0, 1 of step t, for counters that several fields share: one add per
 * head and token instead of one per field (the node folds them into its head counters). */
static int64_t *head_count(qkf_sched *e, scratch *s, int k, int t)
{
    return s->hc + ((int64_t)k * e->T + t) * e->st.heads_max;
}

/* Adds the events per head of an ascending channel list ch[0..n) to cnt[0..H) (head h: channels
 * [h * d, (h + 1) * d)); end [H] is scratch. A few events (low rates) go one by one, a longer
 * list through the runs of qkf_spike_head_ends. */
#define FEW_EVENTS 4
static void head_counts(int64_t *cnt, int *end, const uint16_t *ch, int n, int d, int H)
{
    if (n < FEW_EVENTS) {
        for (int i = 0; i < n; i++)
            cnt[ch[i] / d]++;
        return;
    }
    qkf_spike_head_ends(end, ch, n, d, H);
    for (int h = 0, i0 = 0; h < H; i0 = end[h++])
        cnt[h] += end[h] - i0;
}

static void clear_all_heads(qkf_sched *e, scratch *s)
{
    memset(s->hw, 0, (size_t)e->T * e->st.heads_max * sizeof *s->hw);
    memset(s->hc, 0, (size_t)2 * e->T * e->st.heads_max * sizeof *s->hc);
}

static void flush_all_heads(qkf_sched *e, const node *nd, scratch *s)
{
    for (int t = 0; t < e->T; t++)
        for (int h = 0; h < nd->heads; h++)
            add_work(qkf_stats_head(&e->st, nd->stat, h, t), head_work(e, s, t, h));
}

/* Attention LIF: QK counts through the OR neuron, SSA currents through the general LIF. Each
 * neuron is stepped over t in order (with tb: (t, b) in the official T*B order). */
static void attn_run(qkf_sched *e, node *nd, scratch *s)
{
    int B = e->B, C = nd->C, hd = e->st.node[nd->stat].head_dim, T = e->T;
    int H = (C + hd - 1) / hd; /* heads of the channels (per-head counters) */
    float *tmp = trace_tmp(e, nd); /* this thread's, if the layer is traced */
    memset(s->spk, 0, (size_t)T * sizeof(int64_t));
    clear_all_heads(e, s);
#pragma omp for schedule(static) nowait
    for (int p = 0; p < nd->N; p++)
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++) {
                qkf_spike_events *out = ev_at(e, nd->out, t);
                int64_t tok = (int64_t)b * nd->N + p;
                const float *x = cur_at(e, nd->in0, t) + tok * C;
                uint16_t *ch = out->ch + tok * C;
                float *old = tmp, *vrow;
                int ns;
                if (e->q) { /* P = in_weight * count, then the integer LIF */
                    for (int c = 0; c < C; c++) {
                        int64_t P = (int64_t)nd->in_weight * (int64_t)x[c];
                        /* int32 as the register sees it: wrap keeps the low bits, saturation
                         * clamps (both reduce to current_bits <= 32 alike afterwards) */
                        s->irow[c] = nd->il.current_wrap ? (int32_t)(uint32_t)(uint64_t)P
                                     : P > INT32_MAX   ? INT32_MAX
                                     : P < -INT32_MAX  ? -INT32_MAX
                                                       : (int32_t)P;
                    }
                    ns = ilif_emit(e, nd, s, t, b, p, s->irow);
                    vrow = NULL;
                } else if (nd->or_rule) {
                    ns = qkf_spike_attn_row(ch, x, C);
                    if (old) { /* the exact LIF the OR rule stands for: same spikes, membrane */
                        vrow = e->tr_mem[nd->lif->lif_index] + tok * C;
                        memcpy(old, vrow, (size_t)C * sizeof(float));
                        qkf_spike_lif_row_ref((uint16_t *)(old + e->tr_tmp_c), vrow, x, C,
                                              nd->vth);
                    }
                } else {
                    vrow = membrane(nd, b) + (int64_t)p * C;
                    if (old)
                        memcpy(old, vrow, (size_t)C * sizeof(float));
                    ns = qkf_spike_lif_row(ch, vrow, x, C, nd->vth);
                }
                if (old && !e->q) /* (ilif_emit traces integer rows itself) */
                    trace_row(e, nd, t, b, p, old, x, vrow, ch, ns);
                if (!e->q) /* (ilif_emit wrote the list and recorded it) */
                    out->len[tok] = ns;
                s->spk[t] += ns;
                if (hd == 1) { /* QK attention: a channel is a head */
                    for (int i = 0; i < ns; i++)
                        head_work(e, s, t, ch[i])->out_spikes++;
                } else {
                    qkf_spike_head_ends(s->hend, ch, ns, hd, H);
                    for (int h = 0, i0 = 0; h < H; i0 = s->hend[h++])
                        head_work(e, s, t, h)->out_spikes += s->hend[h] - i0;
                }
                if (!e->q)
                    record(e, nd, t, b, p, ch, ns);
            }
    for (int t = 0; t < T; t++) {
        qkf_work w = {0, {0, 0, 0}, s->spk[t], 0, 0};
        add_work(qkf_stats_at(&e->st, nd->stat, t), &w);
        finish_lif(e, nd, t, s->spk[t]);
    }
    flush_all_heads(e, nd, s);
#pragma omp barrier
}

/* Q-K attention, the sum: QKTA counts q events per (token, head) -> [N][heads]; QKCA counts
 * them per channel over all tokens -> [1][C]. One accumulate per q event. */
static void qk_sum_run(qkf_sched *e, node *nd, scratch *s)
{
    int d = nd->d, B = e->B, T = e->T;
    memset(s->acs, 0, (size_t)T * sizeof(int64_t));
    clear_all_heads(e, s);
#pragma omp master
    for (int t = 0; t < T; t++)
        count_inputs(e, nd, t);
    if (nd->op->qk == QKF_QK_TOKEN) {
        int64_t BN = (int64_t)B * (ev_at(e, nd->in0, 0)->N / e->max_batch);
        share sh = my_positions((int)(BN / B));
        FOR_SHARE(sh, T, B, BN / B, t, b, n)
        {
            const qkf_spike_events *q = ev_at(e, nd->in0, t);
            float *row = cur_at(e, nd->out, t) + n * nd->heads;
            const uint16_t *ch = q->ch + n * q->C;
            /* a head's sum of ones is its count of events (exact in float) */
            int64_t *hc = head_count(e, s, 0, t);
            int len = q->len[n];
            if (len < FEW_EVENTS) {
                memset(row, 0, (size_t)nd->heads * sizeof(float));
                for (int i = 0; i < len; i++)
                    row[ch[i] / d] += 1.0f, hc[ch[i] / d]++;
            } else {
                qkf_spike_head_ends(s->hend, ch, len, d, nd->heads);
                for (int h = 0, i0 = 0; h < nd->heads; i0 = s->hend[h++]) {
                    row[h] = (float)(s->hend[h] - i0);
                    hc[h] += s->hend[h] - i0;
                }
            }
            s->acs[t] += len;
        }
    } else {
#pragma omp for schedule(static) nowait
        for (int r = 0; r < T * B; r++) {
            int t = r / B, b = r % B;
            const qkf_spike_events *q = ev_at(e, nd->in0, t);
            int Nq = q->N / e->max_batch;
            float *row = cur_at(e, nd->out, t) + (int64_t)b * q->C;
            memset(row, 0, (size_t)q->C * sizeof(float));
            int H = (q->C + d - 1) / d;
            for (int64_t n = (int64_t)b * Nq; n < (int64_t)(b + 1) * Nq; n++) {
                const uint16_t *ch = q->ch + n * q->C;
                for (int i = 0; i < q->len[n]; i++)
                    row[ch[i]] += 1.0f;
                head_counts(head_count(e, s, 0, t), s->hend, ch, q->len[n], d, H);
                s->acs[t] += q->len[n];
            }
        }
    }
    for (int t = 0; t < T; t++) {
        qkf_work w = {0, {0, 0, 0}, 0, s->acs[t], 0};
        add_work(qkf_stats_at(&e->st, nd->stat, t), &w);
        const int64_t *hc = head_count(e, s, 0, t); /* q events: one accumulate each */
        for (int h = 0; h < e->st.heads_max; h++) {
            qkf_work *hw = head_work(e, s, t, h);
            hw->in_events += hc[h], hw->in_spikes[0] += hc[h], hw->acs += hc[h];
        }
    }
    flush_all_heads(e, nd, s);
#pragma omp barrier
}

/* Q-K attention, the mask: forward the k events whose attention neuron fired. */
static void mask_run(qkf_sched *e, node *nd, scratch *s)
{
    int d = nd->d, B = e->B, T = e->T;
    int token = nd->op->qk == QKF_QK_TOKEN;
    const qkf_spike_events *k0 = ev_at(e, nd->in1, 0);
    int C = k0->C, N = k0->N / e->max_batch, H = (C + d - 1) / d;
    memset(s->acs, 0, (size_t)T * sizeof(int64_t));
    clear_all_heads(e, s);
#pragma omp master
    for (int t = 0; t < T; t++)
        count_inputs(e, nd, t);
    if (!token) { /* the attention tensor is [C] per sample: one token */
#pragma omp for schedule(static)
        for (int r = 0; r < T * B; r++) {
            int t = r / B, b = r % B;
            const qkf_spike_events *a = ev_at(e, nd->in0, t);
            uint8_t *f = nd->fired + (int64_t)r * C;
            memset(f, 0, (size_t)C);
            const uint16_t *ac = a->ch + (int64_t)b * a->C;
            for (int i = 0; i < a->len[b]; i++) {
                f[ac[i]] = 1;
                qkf_work *hw = head_work(e, s, t, ac[i] / d);
                hw->in_events++, hw->in_spikes[0]++;
            }
        }
    }
    share sh = my_positions(N);
    FOR_SHARE(sh, T, B, N, t, b, n)
    {
        const qkf_spike_events *a = ev_at(e, nd->in0, t), *k = ev_at(e, nd->in1, t);
        qkf_spike_events *out = ev_at(e, nd->out, t);
        const uint16_t *kc = k->ch + n * C;
        uint16_t *oc = out->ch + n * C;
        int nk = k->len[n], no = 0, *end = s->hend;
        qkf_work *hw = head_work(e, s, t, 0);
        int64_t *hk = head_count(e, s, 0, t);
        if (token && nk < FEW_EVENTS) { /* both lists ascending: walk the fired heads alongside */
            const uint16_t *ac = a->ch + n * a->C;
            int na = a->len[n], ia = 0;
            for (int i = 0; i < na; i++)
                hw[ac[i]].in_events++, hw[ac[i]].in_spikes[0]++;
            for (int i = 0; i < nk; i++) {
                int h = kc[i] / d;
                while (ia < na && ac[ia] < h)
                    ia++;
                hk[h]++;
                if (ia < na && ac[ia] == h)
                    oc[no++] = kc[i], hw[h].out_spikes++;
            }
        } else if (token) { /* k is ascending: the runs of the heads that fired (ac ascending) */
            const uint16_t *ac = a->ch + n * a->C;
            int na = a->len[n];
            qkf_spike_head_ends(end, kc, nk, d, H);
            for (int h = 0, i0 = 0; h < H; i0 = end[h++])
                hk[h] += end[h] - i0;
            for (int i = 0; i < na; i++) {
                int h = ac[i], i0 = h ? end[h - 1] : 0;
                hw[h].in_events++, hw[h].in_spikes[0]++;
                memcpy(oc + no, kc + i0, (size_t)(end[h] - i0) * sizeof *oc);
                no += end[h] - i0;
                hw[h].out_spikes += end[h] - i0;
            }
        } else {
            const uint8_t *f = nd->fired + ((int64_t)t * B + b) * C;
            for (int i = 0; i < nk; i++) { /* branch-free: a slot is kept if its channel fired */
                oc[no] = kc[i];
                no += f[kc[i]];
            }
            head_counts(hk, end, kc, nk, d, H);
            head_counts(head_count(e, s, 1, t), end, oc, no, d, H);
        }
        out->len[n] = no;
        s->acs[t] += no;
    }
    for (int t = 0; t < T; t++) {
        qkf_work w = {0, {0, 0, 0}, s->acs[t], 0, 0};
        add_work(qkf_stats_at(&e->st, nd->stat, t), &w);
        publish(e, nd->out, t, s->acs[t], s->acs[t]);
        const int64_t *hk = head_count(e, s, 0, t), *ho = head_count(e, s, 1, t);
        for (int h = 0; h < e->st.heads_max; h++) {
            qkf_work *hw = head_work(e, s, t, h);
            hw->in_events += hk[h], hw->in_spikes[1] += hk[h], hw->out_spikes += ho[h];
        }
    }
    flush_all_heads(e, nd, s);
#pragma omp barrier
}

/* SSA: per step, sample and head kv = K^T V from the co-active (k, v) events of each token (one
 * accumulate per pair), then out[n] = 0.125 x the sum of the kv rows of token n's q events
 * (head_dim accumulates per q event). Every value is an integer times 0.125: exact, as in
 * dense. */
static void ssa_run(qkf_sched *e, node *nd, scratch *s)
{
    const qkf_spike_events *q0 = ev_at(e, nd->in0, 0);
    int d = nd->d, C = q0->C, B = e->B, H = nd->heads, N = q0->N / e->max_batch, T = e->T;
    memset(s->acs, 0, (size_t)T * sizeof(int64_t));
    clear_all_heads(e, s);
#pragma omp master
    for (int t = 0; t < T; t++)
        count_inputs(e, nd, t);
#pragma omp for schedule(static)
    for (int r = 0; r < T * B * H; r++) {
        int t = r / (B * H), bh = r % (B * H), b = bh / H, h = bh % H, lo = h * d, hi = lo + d;
        const qkf_spike_events *k = ev_at(e, nd->in1, t), *v = ev_at(e, nd->in2, t);
        float *kv = nd->kv + (int64_t)r * d * d;
        memset(kv, 0, (size_t)d * d * sizeof(float));
        int64_t pairs = 0, nks = 0, nvs = 0;
        for (int64_t n = (int64_t)b * N; n < (int64_t)(b + 1) * N; n++) {
            const uint16_t *kc = k->ch + n * C, *vc = v->ch + n * C;
            int k0 = qkf_spike_count_below(kc, k->len[n], lo);
            int k1 = k0 + qkf_spike_count_below(kc + k0, k->len[n] - k0, hi);
            int v0 = qkf_spike_count_below(vc, v->len[n], lo);
            int v1 = v0 + qkf_spike_count_below(vc + v0, v->len[n] - v0, hi);
            nks += k1 - k0, nvs += v1 - v0;
            if (k1 == k0 || v1 == v0)
                continue;
            if (v1 - v0 <= 2) { /* few v events: one add per pair */
                for (int i = k0; i < k1; i++) {
                    float *row = kv + (int64_t)(kc[i] - lo) * d;
                    for (int j = v0; j < v1; j++)
                        row[vc[j] - lo] += 1.0f;
                }
            } else { /* the token's v events as a 0/1 row, added to the row of each k event
                        (vectorised; adding 0 to a count changes nothing, counts are exact) */
                float *u = s->row;
                memset(u, 0, (size_t)d * sizeof(float));
                for (int j = v0; j < v1; j++)
                    u[vc[j] - lo] = 1.0f;
                for (int i = k0; i < k1; i++) {
                    float *row = kv + (int64_t)(kc[i] - lo) * d;
                    for (int c = 0; c < d; c++)
                        row[c] += u[c];
                }
            }
            pairs += (int64_t)(k1 - k0) * (v1 - v0);
        }
        qkf_work *hw = head_work(e, s, t, h);
        hw->acs += pairs;
        hw->in_events += nks + nvs;
        hw->in_spikes[1] += nks, hw->in_spikes[2] += nvs;
        s->acs[t] += pairs;
    }
    share sh = my_positions(N);
    FOR_SHARE(sh, T, B, N, t, b, n)
    {
        const qkf_spike_events *q = ev_at(e, nd->in0, t);
        const uint16_t *qc = q->ch + n * C;
        float *row = cur_at(e, nd->out, t) + n * C;
        const float *kvb = nd->kv + ((int64_t)t * B + b) * H * d * d;
        int i = 0, nq = q->len[n];
        for (int h = 0; h < H; h++) {
            int lo = h * d, i0 = i;
            while (i < nq && qc[i] < lo + d)
                i++;
            qkf_spike_seg sg = {qc + i0, NULL, i - i0, -lo * d};
            qkf_spike_gather(row + lo, NULL, kvb + (int64_t)h * d * d, d, &sg, 1, d);
            if (!e->q) /* integer mode: P = q (k^T v) as it is (the LIF's in_weight) */
                for (int j = 0; j < d; j++)
                    row[lo + j] *= 0.125f;
            qkf_work *hw = head_work(e, s, t, h);
            hw->acs += (int64_t)(i - i0) * d;
            hw->in_events += i - i0, hw->in_spikes[0] += i - i0;
            s->acs[t] += (int64_t)(i - i0) * d;
        }
    }
    for (int t = 0; t < T; t++) {
        qkf_work w = {0, {0, 0, 0}, 0, s->acs[t], 0};
        add_work(qkf_stats_at(&e->st, nd->stat, t), &w);
    }
    flush_all_heads(e, nd, s);
#pragma omp barrier
}

/* Residual: merge the two event lists of every token, adding counts (through a dense count row
 * per thread). The sum carries every spike of both inputs: its spikes are theirs. */
static void add_run(qkf_sched *e, node *nd, scratch *s)
{
    int T = e->T;
    const qkf_spike_events *o0 = ev_at(e, nd->out, 0);
    int C = o0->C, N = o0->N / e->max_batch;
    memset(s->acs, 0, (size_t)T * sizeof(int64_t));
#pragma omp master
    for (int t = 0; t < T; t++) {
        count_inputs(e, nd, t);
        const int64_t *px = e->tev + ((int64_t)nd->in0 * e->T + t) * 2;
        const int64_t *py = e->tev + ((int64_t)nd->in1 * e->T + t) * 2;
        qkf_work w = {0, {0, 0, 0}, px[1] + py[1], 0, 0};
        add_work(qkf_stats_at(&e->st, nd->stat, t), &w);
        publish(e, nd->out, t, 0, px[1] + py[1]);
    }
    share sh = my_positions(N);
    FOR_SHARE(sh, T, e->B, N, t, b, n)
    {
        int64_t o = n * C;
        const qkf_spike_events *x = ev_at(e, nd->in0, t), *y = ev_at(e, nd->in1, t);
        qkf_spike_events *out = ev_at(e, nd->out, t);
        int ones;
        int k = qkf_spike_merge_dense(out->ch + o, out->cnt + o, &ones, s->acc, C, x->ch + o,
                                      x->cnt ? x->cnt + o : NULL, x->len[n], y->ch + o,
                                      y->cnt ? y->cnt + o : NULL, y->len[n]);
        out->len[n] = k;
        out->len1[n] = ones;
        s->acs[t] += k;
    }
    for (int t = 0; t < T; t++)
        publish(e, nd->out, t, s->acs[t], 0);
#pragma omp barrier
}

/* Readout: event counts per channel, summed over tokens (one accumulate per spike). */
static void readout_run(qkf_sched *e, node *nd)
{
#pragma omp single
    for (int t = 0; t < e->T; t++) {
        const qkf_spike_events *x = ev_at(e, nd->in0, t);
        int N = x->N / e->max_batch;
        int64_t spikes = 0;
        for (int b = 0; b < e->B; b++) {
            int64_t *rc = e->ro + ((int64_t)b * e->T + t) * x->C;
            for (int64_t n = (int64_t)b * N; n < (int64_t)(b + 1) * N; n++) {
                const uint16_t *ch = x->ch + n * x->C;
                const uint16_t *cnt = x->cnt ? x->cnt + n * x->C : NULL;
                for (int i = 0; i < x->len[n]; i++) {
                    int c = cnt ? cnt[i] : 1;
                    rc[ch[i]] += c;
                    spikes += c;
                }
            }
        }
        count_inputs(e, nd, t);
        qkf_work *w = qkf_stats_at(&e->st, nd->stat, t);
        w->acs += spikes;
        if (t == e->T - 1)
            w->macs += e->st.node[nd->stat].macs_once * e->B;
    }
}

static void node_run(qkf_sched *e, node *nd, scratch *s)
{
    switch (nd->kind) {
    case QKF_NODE_ENCODE:
        encode_run(e, nd, s);
        break;
    case QKF_NODE_CONV:
        conv_run(e, nd, s);
        break;
    case QKF_NODE_QK_SUM:
        qk_sum_run(e, nd, s);
        break;
    case QKF_NODE_ATTN:
        attn_run(e, nd, s);
        break;
    case QKF_NODE_MASK:
        mask_run(e, nd, s);
        break;
    case QKF_NODE_SSA:
        ssa_run(e, nd, s);
        break;
    case QKF_NODE_ADD:
        add_run(e, nd, s);
        break;
    case QKF_NODE_READOUT:
        readout_run(e, nd);
        break;
    case QKF_NODE_KIND_COUNT:
        break;
    }
}

/* ---- creation ----------------------------------------------------------------------------------
 */

/* Run-state allocation, counted in e->bytes (a session reports what it holds). */
static void *st_malloc(qkf_sched *e, size_t n)
{
    e->bytes += (int64_t)n;
    return qkf_malloc(n);
}

static void *st_calloc(qkf_sched *e, size_t n, size_t size)
{
    e->bytes += (int64_t)(n * size);
    return qkf_calloc(n, size);
}

/* Events of a tensor of N tokens per sample, for max_batch samples. */
static void events_alloc(qkf_sched *e, qkf_spike_events *ev, int N, int C, int counts)
{
    ev->N = N, ev->C = C;
    ev->len = st_calloc(e, (size_t)N, sizeof(int32_t));
    ev->ch = st_malloc(e, (size_t)N * C * sizeof(uint16_t));
    ev->cnt = counts ? st_malloc(e, (size_t)N * C * sizeof(uint16_t)) : NULL;
    ev->len1 = counts ? st_calloc(e, (size_t)N, sizeof(int32_t)) : NULL;
}

/* Output channels per weight block of a conv. The gather walks each row's events once per block,
 * so wider blocks walk less, but a tile reads a block's slab [Cin][width] from cache, and the
 * widest the gather keeps in registers is 128 (spike.h). Measured (qkf bench event, cifar10, 10%
 * and 1%): a conv of at most 128 output channels is one block (96: one walk instead of 64 + 32);
 * with at most 96 input channels, blocks of 96 (a slab of 36 KB stays in L1; 128 was no
 * better); with very many input channels the slabs live in L2 whatever their width and blocks
 * of 128 walk the long lists half as often; otherwise 64 (128 or 96 was slower: the slab
 * leaves L1). Blocks have equal widths, multiples of 16 (a spike mask word). */
static int block_width(int cin, int cout)
{
    if (cout <= BLOCK_MAX)
        return cout;
    if (cin <= 96 && cout % 96 == 0)
        return 96;
    if (cin >= 1024 && cout % BLOCK_MAX == 0)
        return BLOCK_MAX;
    return BLOCK;
}

/* int16 sums (integer mode): blocks of twice block_width's channels, whose slab [Cin][width] has
 * the same bytes as the float one, so each row walks its event list half as often; at most
 * 2 * BLOCK_MAX (the int16 gather keeps up to 8 vectors of 32 lanes per row). */
static int block_width_i16(int cin, int cout)
{
    int bw = block_width(cin, cout);
    if (cout <= 2 * BLOCK_MAX)
        return cout;
    return cout % (2 * bw) == 0 ? 2 * bw : bw;
}

/* W' = W * alpha per output channel, re-laid per block of bw output channels as
 * [k][k][Cin][width]; b' = b * alpha + shift. */
static void fold(node *nd, const qkf_model *m)
{
    const float *P = m->params.data;
    const qkf_param *pp = m->params.p;
    const qkf_op *op = nd->op;
    int cin = nd->cin, cout = nd->cout, k = nd->k;
    float *alpha = qkf_malloc((size_t)cout * sizeof(float));
    float *shift = qkf_malloc((size_t)cout * sizeof(float));
    qkf_bn_fold(cout, P + pp[op->p_bn_w].offset, P + pp[op->p_bn_b].offset,
                P + pp[op->p_bn_mean].offset, P + pp[op->p_bn_var].offset, alpha, shift);
    const float *W = P + pp[op->p_w].offset;
    const float *bias = op->p_b >= 0 ? P + pp[op->p_b].offset : NULL;
    nd->wt = qkf_malloc((size_t)cin * k * k * cout * sizeof(float));
    nd->bias = qkf_malloc((size_t)cout * sizeof(float));
    for (int co = 0; co < cout; co++) {
        int j0 = co / nd->bw * nd->bw, width = cout - j0 < nd->bw ? cout - j0 : nd->bw;
        float *blk = nd->wt + (int64_t)j0 * cin * k * k;
        for (int ci = 0; ci < cin; ci++)
            for (int kk = 0; kk < k * k; kk++)
                blk[((int64_t)kk * cin + ci) * width + (co - j0)] =
                    W[((int64_t)co * cin + ci) * k * k + kk] * alpha[co];
        nd->bias[co] = (bias ? bias[co] : 0.0f) * alpha[co] + shift[co];
    }
    qkf_free(alpha);
    qkf_free(shift);
}

/* The mantissa gather's bound: convs whose mantissas exceed it sum in int32 (a row's mantissa sum
 * must stay within int16, kernels/spike_int.h: at least 64 events of count 1 per row then fit). */
#define M16_WMAX 511

/* Integer mode, a conv that does not sum in int16: whether its weights W are int16 mantissas
 * times a power of two per output channel, W = m << s with |m| <= M16_WMAX (the largest s that
 * divides the channel's weights: exact, whatever the quantiser's exponents). Sets nd->m16,
 * nd->wmax and nd->ishift. */
static void m16_plan(node *nd, const int32_t *W)
{
    int cout = nd->cout;
    int64_t per = (int64_t)nd->cin * nd->k * nd->k;
    int32_t *sh = qkf_malloc((size_t)cout * sizeof(int32_t));
    int64_t wmax = 1;
    for (int co = 0; co < cout; co++) {
        uint32_t any = 0;
        for (int64_t i = 0; i < per; i++)
            any |= (uint32_t)W[co * per + i];
        int s = any ? __builtin_ctz(any) : 0;
        sh[co] = s;
        for (int64_t i = 0; i < per; i++) {
            int64_t m = (int64_t)W[co * per + i] / ((int64_t)1 << s), am = m < 0 ? -m : m;
            wmax = am > wmax ? am : wmax;
        }
    }
    if (wmax > M16_WMAX) {
        qkf_free(sh);
        return;
    }
    nd->m16 = 1, nd->wmax = (int)wmax, nd->ishift = sh;
}

/* Integer mode: the integer weights W[cout][cin][k][k] of conv op i, laid out as fold lays the
 * float ones (blocks [k][k][Cin][width]), as int16 (their low 16 bits: a wrapping register of
 * <= 16 bits sees only those, kernels/spike_int.h), as int16 mantissas W >> ishift (m16), or
 * int32. */
static void fold_int(node *nd, const qkf_qop *qo)
{
    int cin = nd->cin, cout = nd->cout, k = nd->k;
    int64_t n = (int64_t)cin * k * k * cout;
    int narrow = nd->i16 || nd->m16;
    nd->wti = qkf_malloc((size_t)n * (narrow ? sizeof(int16_t) : sizeof(int32_t)));
    for (int co = 0; co < cout; co++) {
        int j0 = co / nd->bw * nd->bw, width = cout - j0 < nd->bw ? cout - j0 : nd->bw;
        int64_t blk = (int64_t)j0 * cin * k * k;
        for (int ci = 0; ci < cin; ci++)
            for (int kk = 0; kk < k * k; kk++) {
                int64_t at = blk + ((int64_t)kk * cin + ci) * width + (co - j0);
                int32_t wv = qo->w[((int64_t)co * cin + ci) * k * k + kk];
                if (nd->i16)
                    ((int16_t *)nd->wti)[at] = (int16_t)(uint16_t)(uint32_t)wv;
                else if (nd->m16) /* exact: ishift divides the channel's weights */
                    ((int16_t *)nd->wti)[at] = (int16_t)(wv >> nd->ishift[co]);
                else
                    ((int32_t *)nd->wti)[at] = wv;
            }
    }
}

/* Integer mode: the LIF arithmetic of a node from the profile (tau = 2: decay(V) = trunc(V / 2),
 * or none for an integrate-and-fire chip, models/quant.h), its bias and thresholds. */
static void ilif_init(node *nd, const qkf_hw_arith *a, const int32_t *bias, const int32_t *theta)
{
    qkf_ilif *il = &nd->il;
    memset(il, 0, sizeof *il);
    il->bias = bias, il->theta = theta;
    il->current_bits = a->current_bits, il->current_wrap = a->current_wrap;
    il->current_shift = a->current_shift;
    il->membrane_bits = a->membrane_bits, il->membrane_wrap = a->membrane_wrap;
    /* leak DECAY: (|V| * 1) >> 1 with V's sign, trunc(V / 2); NONE (integrate-and-fire): V */
    il->decay_bits = a->leak == QKF_HW_LEAK_NONE ? 0 : 1, il->decay_keep = 1;
    il->threshold_ge = a->threshold_ge, il->reset_subtract = a->reset_subtract;
    qkf_spike_ilif_prepare(il, nd->C);
}

static int producer(const qkf_graph *g, int tensor)
{
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].out == tensor)
            return i;
    return -1;
}

/* The nodes: what each one computes and its folded weights (read-only once built; sessions
 * share them). */
static int nodes_build(qkf_sched *e)
{
    const qkf_graph *g = &e->g;
    e->n_nodes = e->st.n_nodes;
    e->nodes = qkf_calloc((size_t)e->n_nodes, sizeof *e->nodes);
    for (int i = 0; i < e->n_nodes; i++) {
        const qkf_node_info *info = &e->st.node[i];
        node *nd = &e->nodes[i];
        const qkf_op *op = &g->ops[info->op];
        nd->kind = info->kind;
        nd->op = op;
        nd->stat = i;
        nd->lif = info->lif_op >= 0 ? &g->ops[info->lif_op] : NULL;
        nd->in0 = op->in0, nd->in1 = op->in1, nd->in2 = op->in2;
        nd->out = nd->lif ? nd->lif->out : op->out;
        nd->heads = op->heads;
        const qkf_tensor *x = op->in0 >= 0 ? &g->tensors[op->in0] : NULL;
        if (nd->lif) {
            const qkf_tensor *y = &g->tensors[nd->lif->out];
            nd->C = y->c, nd->N = y->h * y->w;
            nd->vth = nd->lif->vth;
            nd->tb = nd->lif->tb_compat;
        }
        switch (nd->kind) {
        case QKF_NODE_ENCODE:
        case QKF_NODE_CONV: {
            nd->cin = op->cin, nd->cout = op->cout, nd->k = op->k, nd->stride = op->stride;
            nd->pad = op->pad, nd->pool = op->pool;
            nd->h = x->h, nd->w = x->w;
            nd->ho = (x->h + 2 * op->pad - op->k) / op->stride + 1;
            nd->wo = (x->w + 2 * op->pad - op->k) / op->stride + 1;
            if ((int64_t)nd->cin * nd->k * nd->k * nd->cout >= INT32_MAX)
                return qkf_set_error("event engine: conv '%s' has too many weights", op->name);
            if (nd->kind == QKF_NODE_CONV) {
                int64_t bytes =
                    (int64_t)nd->cin * nd->k * nd->k * nd->cout * (int64_t)sizeof(float);
                nd->bw = block_width(nd->cin, nd->cout);
                nd->fused = !nd->pool && bytes <= FUSE_BYTES;
                if (e->q) {
                    const qkf_hw_arith *a = &e->q->arith;
                    nd->i16 = !nd->pool && a->current_wrap && a->current_bits <= 16;
                    if (!nd->i16)
                        m16_plan(nd, e->q->ops[info->op].w);
                    if (nd->i16 || nd->m16) /* a slab of twice the channels in the same bytes */
                        nd->bw = block_width_i16(nd->cin, nd->cout);
                    fold_int(nd, &e->q->ops[info->op]);
                } else {
                    fold(nd, e->m);
                }
            } else if (e->q) { /* encode: int32 [k][k][Cin][Cout] for the direct conv */
                const int32_t *W = e->q->ops[info->op].w;
                int kk2 = nd->k * nd->k;
                int32_t *wi = qkf_malloc((size_t)kk2 * nd->cin * nd->cout * sizeof(int32_t));
                for (int co = 0; co < nd->cout; co++)
                    for (int ci = 0; ci < nd->cin; ci++)
                        for (int kk = 0; kk < kk2; kk++)
                            wi[((int64_t)kk * nd->cin + ci) * nd->cout + co] =
                                W[((int64_t)co * nd->cin + ci) * kk2 + kk];
                nd->wti = wi;
            }
            if (e->q)
                ilif_init(nd, &e->q->arith, e->q->ops[info->op].bias,
                          e->q->ops[info->lif_op].theta);
            break;
        }
        case QKF_NODE_ATTN: {
            int p = producer(g, op->in0);
            nd->or_rule = p >= 0 && g->ops[p].kind == QKF_OP_QK_SUM && nd->vth == 0.5f;
            nd->heads = info->heads;
            if (e->q) { /* the integer LIF on P = in_weight * count, whatever the producer */
                const qkf_qop *lo = &e->q->ops[info->lif_op];
                nd->or_rule = 0;
                nd->in_weight = lo->in_weight;
                nd->zbias = qkf_calloc((size_t)nd->C, sizeof(int32_t));
                ilif_init(nd, &e->q->arith, nd->zbias, lo->theta);
            }
            break;
        }
        case QKF_NODE_QK_SUM:
        case QKF_NODE_MASK:
        case QKF_NODE_SSA:
            nd->d = info->head_dim;
            break;
        default:
            break;
        }
    }
    return 0;
}

/* Everything a run writes, for max_batch samples and T steps: membranes, per-step buffers,
 * event lists, statistics of producers, scratch for nthreads threads, readout counts. */
static void state_alloc(qkf_sched *e)
{
    const qkf_graph *g = &e->g;
    int T = e->T, nt = g->n_tensors, max_batch = e->max_batch;
    e->ev = st_calloc(e, (size_t)nt * T, sizeof *e->ev);
    e->cur = st_calloc(e, (size_t)nt * T, sizeof *e->cur);
    e->tev = st_calloc(e, (size_t)nt * T * 2, sizeof(int64_t));
    /* event tensors: the frame input, LIF, add and mask outputs; currents: qk sums, ssa */
    const qkf_tensor *xin = &g->tensors[g->input];
    for (int t = 0; t < T; t++) {
        if (!xin->static_t)
            events_alloc(e, ev_at(e, g->input, t), max_batch * xin->h * xin->w, xin->c, 1);
        for (int i = 0; i < g->n_ops; i++) {
            const qkf_op *op = &g->ops[i];
            const qkf_tensor *y = &g->tensors[op->out];
            int N = y->h * y->w;
            if (op->kind == QKF_OP_LIF || op->kind == QKF_OP_ADD || op->kind == QKF_OP_QK_MASK)
                events_alloc(e, ev_at(e, op->out, t), max_batch * N, y->c,
                             op->kind == QKF_OP_ADD);
            else if (op->kind == QKF_OP_QK_SUM || op->kind == QKF_OP_SSA)
                e->cur[(int64_t)op->out * T + t] =
                    st_calloc(e, (size_t)max_batch * N * y->c, sizeof(float));
        }
    }

    int max_row = 1, max_add = 1, max_c = 1, kk_max = 1;
    for (int i = 0; i < e->n_nodes; i++)
        if (e->nodes[i].kind == QKF_NODE_CONV && e->nodes[i].k * e->nodes[i].k > kk_max)
            kk_max = e->nodes[i].k * e->nodes[i].k;
    for (int i = 0; i < g->n_tensors; i++)
        max_c = g->tensors[i].c > max_c ? g->tensors[i].c : max_c;
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].kind == QKF_OP_ADD && g->tensors[g->ops[i].out].c > max_add)
            max_add = g->tensors[g->ops[i].out].c;
    int64_t pre = 0, mask = 0, enc_in = 0, enc_buf = 0, enc_pool = 0, col_frame = 0;
    for (int i = 0; i < e->n_nodes; i++) {
        node *nd = &e->nodes[i];
        const qkf_op *op = nd->op;
        switch (nd->kind) {
        case QKF_NODE_ENCODE:
        case QKF_NODE_CONV:
            if (nd->kind == QKF_NODE_ENCODE) {
                const qkf_tensor *x = &g->tensors[op->in0];
                int64_t np = (int64_t)nd->ho * nd->wo, xin_n = (int64_t)x->c * x->h * x->w;
                enc_in = enc_in > xin_n * max_batch ? enc_in : xin_n * max_batch;
                enc_buf = enc_buf > nd->cout * max_batch * np ? enc_buf : nd->cout * max_batch * np;
                if (op->pool)
                    enc_pool = enc_pool > (int64_t)nd->C * max_batch * nd->N
                                   ? enc_pool
                                   : (int64_t)nd->C * max_batch * nd->N;
                int64_t cf = qkf_conv_col_floats(nd->cin, x->h, x->w, nd->k, nd->stride, nd->pad);
                col_frame = cf * max_batch > col_frame ? cf * max_batch : col_frame;
                nd->enc = st_malloc(e, (size_t)max_batch * nd->N * nd->C * sizeof(float));
                if (e->q) {
                    e->enc_x = st_malloc(e, (size_t)(xin_n * max_batch) * sizeof(int32_t));
                    e->enc_s = st_malloc(e, (size_t)(nd->cout * max_batch * np) * sizeof(int32_t));
                }
            } else {
                if (nd->pool) { /* traced block-major convs get theirs in qkf_sched_set_trace */
                    /* one sample's currents (conv_run), all with one shared membrane (tb) */
                    int64_t n = (int64_t)T * (nd->tb ? max_batch : 1) * nd->ho * nd->wo * nd->cout;
                    pre = n > pre ? n : pre;
                }
                int64_t n = (int64_t)T * max_batch * nd->N * ((nd->C + 15) / 16);
                mask = n > mask ? n : mask;
            }
            max_row = nd->cout > max_row ? nd->cout : max_row;
            break;
        case QKF_NODE_MASK:
            nd->fired = st_calloc(e, (size_t)T * max_batch * g->tensors[op->in1].c, 1);
            break;
        case QKF_NODE_SSA:
            nd->kv =
                st_malloc(e, (size_t)T * max_batch * nd->heads * nd->d * nd->d * sizeof(float));
            break;
        default:
            break;
        }
        /* membranes kept across calls: a forward steps its convs' membranes in scratch */
        if (nd->lif && !nd->or_rule && (nd->kind != QKF_NODE_CONV || e->view)) {
            int64_t per = (int64_t)nd->N * nd->C;
            nd->v = st_calloc(e, (size_t)(nd->tb ? per : per * max_batch), sizeof(float));
        }
    }
    if (enc_in && !e->q) {
        e->enc_in = st_malloc(e, (size_t)enc_in * sizeof(float));
        e->enc_buf = st_malloc(e, (size_t)enc_buf * sizeof(float));
        e->enc_pool = enc_pool ? st_malloc(e, (size_t)enc_pool * sizeof(float)) : NULL;
        const int64_t budget = 8 << 20; /* as the dense engine: at most 32 MB of im2col */
        e->enc_col_cap = col_frame < budget ? col_frame : budget;
        int64_t one = col_frame / max_batch;
        if (e->enc_col_cap < one)
            e->enc_col_cap = one;
        e->enc_col = st_malloc(e, (size_t)(e->enc_col_cap + 1) * sizeof(float));
    }
    e->pre = pre ? st_malloc(e, (size_t)pre * sizeof(float)) : NULL;
    e->pre_n = pre;
    e->mask = mask ? st_malloc(e, (size_t)mask * sizeof(uint16_t)) : NULL;
    e->scr = st_calloc(e, (size_t)e->nthreads, sizeof *e->scr);
    /* a tile holds up to TILE_MAX tokens, or with tb all the samples of a position */
    e->tile_cap = max_batch > TILE_MAX ? max_batch : TILE_MAX;
    /* a fused tile, a block-major item's block, or pooled rows */
    int64_t tile = (int64_t)T * max_row * max_batch;
    tile = tile > TILE_FLOATS ? tile : TILE_FLOATS;
    tile = tile > (int64_t)T * TILE_MAX * BLOCK_MAX ? tile : (int64_t)T * TILE_MAX * BLOCK_MAX;
    for (int i = 0; i < e->nthreads; i++) {
        /* zeroed: conv_rows never writes seg.base, which is 0 for every row */
        e->scr[i].rows = st_calloc(e, (size_t)kk_max * T * e->tile_cap, sizeof(qkf_spike_row));
        e->scr[i].bblk = st_malloc(e, BLOCK_MAX * sizeof(float));
        e->scr[i].giy = st_malloc(e, (size_t)e->tile_cap * sizeof(int));
        e->scr[i].gix = st_malloc(e, (size_t)e->tile_cap * sizeof(int));
        e->scr[i].touched = st_malloc(e, (size_t)T * e->tile_cap);
        e->scr[i].lx = st_malloc(e, (size_t)T * max_batch * sizeof(float *));
        e->scr[i].lm = st_malloc(e, (size_t)T * max_batch * sizeof(uint16_t *));
        e->scr[i].gtok = st_malloc(e, (size_t)e->tile_cap * sizeof(int64_t));
        e->scr[i].gout = st_malloc(e, (size_t)e->tile_cap * sizeof(float *));
        e->scr[i].nrow = st_malloc(e, (size_t)kk_max * T * sizeof(int));
        e->scr[i].acc = st_calloc(e, (size_t)(max_add + 31) / 32 * 32, sizeof(uint16_t));
        e->scr[i].tile = st_malloc(e, (size_t)tile * sizeof(float));
        e->scr[i].row = st_malloc(e, (size_t)max_row * sizeof(float));
        e->scr[i].vt = st_malloc(e, (size_t)max_row * max_batch * sizeof(float));
        e->scr[i].acs = st_malloc(e, (size_t)T * sizeof(int64_t));
        e->scr[i].spk = st_malloc(e, (size_t)T * sizeof(int64_t));
        e->scr[i].hw = st_calloc(e, (size_t)T * e->st.heads_max, sizeof(qkf_work));
        e->scr[i].hend = st_malloc(e, (size_t)max_c * sizeof(int));
        e->scr[i].hc = st_calloc(e, (size_t)2 * T * e->st.heads_max, sizeof(int64_t));
        if (e->q) {
            e->scr[i].lx16 = st_malloc(e, (size_t)T * max_batch * sizeof(int16_t *));
            e->scr[i].lx32 = st_malloc(e, (size_t)T * max_batch * sizeof(int32_t *));
            e->scr[i].imask = st_malloc(e, (size_t)(max_c + 15) / 16 * sizeof(uint16_t));
            e->scr[i].irow = st_malloc(e, (size_t)max_c * sizeof(int32_t));
        }
    }
    if (e->q) {
        e->zrow = st_calloc(e, (size_t)max_c + 32, sizeof(int32_t));
        e->logits_int =
            st_calloc(e, (size_t)max_batch * g->cfg.num_classes, sizeof(int64_t));
    }
    e->lif_spikes = st_calloc(e, (size_t)g->n_lif, sizeof(int64_t));
    const qkf_op *ro = &g->ops[g->n_ops - 1];
    e->ro = st_calloc(e, (size_t)max_batch * T * g->tensors[ro->in0].c, sizeof(int64_t));
    e->feat = st_malloc(e, (size_t)g->tensors[ro->in0].c * sizeof(float));
    if (e->flags & QKF_SCHED_RECORD) {
        e->rec = st_calloc(e, (size_t)g->n_lif, sizeof(uint8_t *));
        for (int l = 0; l < g->n_lif; l++)
            e->rec[l] = st_malloc(e, (size_t)(qkf_graph_lif_neurons(g, l) * T * max_batch));
    }
}

/* The engine of a float model m or, in integer mode, of an integer model q. */
static qkf_sched *create(const qkf_model *m, const qkf_qmodel *q, int max_batch, int flags)
{
    if (max_batch < 1)
        max_batch = 1;
    qkf_sched *e = qkf_calloc(1, sizeof *e);
    e->m = m;
    e->q = q;
    e->max_batch = max_batch;
    e->flags = flags;
    int tb = (flags & QKF_SCHED_TB_COMPAT) != 0;
    if (m ? qkf_graph_build(&m->cfg, &m->params, tb, &e->g) : qkf_graph_walk(&q->cfg, tb, &e->g)) {
        qkf_free(e);
        return NULL;
    }
    if (q && (e->g.n_ops != q->g.n_ops || e->g.n_tensors != q->g.n_tensors)) {
        qkf_set_error("event engine: the integer model's graph (%d ops) is not its configuration's "
                      "(%d ops)",
                      q->g.n_ops, e->g.n_ops);
        qkf_graph_free(&e->g);
        qkf_free(e);
        return NULL;
    }
    if (qkf_stats_init(&e->st, &e->g)) {
        qkf_graph_free(&e->g);
        qkf_free(e);
        return NULL;
    }
    const qkf_graph *g = &e->g;
    e->T = g->cfg.T;
    for (int i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].c > 65535) {
            qkf_set_error("event engine: tensor '%s' has %d channels (at most 65535)",
                          g->tensors[i].name, g->tensors[i].c);
            qkf_sched_free(e);
            return NULL;
        }
    if (nodes_build(e)) {
        qkf_sched_free(e);
        return NULL;
    }
    int threads = omp_get_max_threads(), procs = omp_get_num_procs();
    e->nthreads = threads > procs ? threads : procs;
    state_alloc(e);
    return e;
}

qkf_sched *qkf_sched_create(const qkf_model *m, int max_batch, int flags)
{
    return create(m, NULL, max_batch, flags);
}

qkf_sched *qkf_sched_create_int(const qkf_qmodel *q, int max_batch, int flags)
{
    if (q->arith.is_float) {
        qkf_set_error("event engine: the model for '%s' is float, not integer", q->hw_name);
        return NULL;
    }
    if (qkf_quant_check_arith(&q->arith))
        return NULL;
    return create(NULL, q, max_batch, flags);
}

int qkf_sched_is_int(const qkf_sched *e) { return e->q != NULL; }

const int64_t *qkf_sched_logits_int(const qkf_sched *e) { return e->logits_int; }

/* Frees what state_alloc allocated. */
static void state_free(qkf_sched *e)
{
    for (int i = 0; i < e->n_nodes; i++) {
        node *nd = &e->nodes[i];
        qkf_free(nd->v);
        qkf_free(nd->enc);
        qkf_free(nd->kv);
        qkf_free(nd->fired);
    }
    if (e->ev)
        for (int i = 0; i < e->g.n_tensors * e->T; i++) {
            qkf_free(e->ev[i].len);
            qkf_free(e->ev[i].ch);
            qkf_free(e->ev[i].cnt);
            qkf_free(e->ev[i].len1);
            qkf_free(e->cur[i]);
        }
    qkf_free(e->ev);
    qkf_free(e->cur);
    qkf_free(e->tev);
    if (e->scr)
        for (int i = 0; i < e->nthreads; i++) {
            qkf_free(e->scr[i].rows);
            qkf_free(e->scr[i].giy);
            qkf_free(e->scr[i].gix);
            qkf_free(e->scr[i].touched);
            qkf_free(e->scr[i].lx);
            qkf_free(e->scr[i].lm);
            qkf_free(e->scr[i].gtok);
            qkf_free(e->scr[i].gout);
            qkf_free(e->scr[i].nrow);
            qkf_free(e->scr[i].bblk);
            qkf_free(e->scr[i].acc);
            qkf_free(e->scr[i].tile);
            qkf_free(e->scr[i].row);
            qkf_free(e->scr[i].vt);
            qkf_free(e->scr[i].acs);
            qkf_free(e->scr[i].spk);
            qkf_free(e->scr[i].hw);
            qkf_free(e->scr[i].hend);
            qkf_free(e->scr[i].hc);
            qkf_free(e->scr[i].lx16);
            qkf_free(e->scr[i].lx32);
            qkf_free(e->scr[i].imask);
            qkf_free(e->scr[i].irow);
        }
    qkf_free(e->scr);
    if (e->rec)
        for (int l = 0; l < e->g.n_lif; l++)
            qkf_free(e->rec[l]);
    qkf_free(e->rec);
    qkf_free(e->lif_spikes);
    qkf_free(e->ro);
    qkf_free(e->feat);
    qkf_free(e->pre);
    qkf_free(e->mask);
    qkf_free(e->enc_in);
    qkf_free(e->enc_buf);
    qkf_free(e->enc_pool);
    qkf_free(e->enc_col);
    qkf_free(e->zrow);
    qkf_free(e->logits_int);
    qkf_free(e->enc_x);
    qkf_free(e->enc_s);
}

void qkf_sched_free(qkf_sched *e)
{
    if (!e)
        return;
    if (e->nodes)
        state_free(e);
    if (!e->view && e->nodes)
        for (int i = 0; i < e->n_nodes; i++) {
            qkf_free(e->nodes[i].wt);
            qkf_free(e->nodes[i].bias);
            qkf_free(e->nodes[i].wti);
            qkf_free(e->nodes[i].ishift);
            qkf_free(e->nodes[i].zbias);
        }
    if (e->tr_buf)
        for (int l = 0; l < e->g.n_lif; l++) {
            qkf_free(e->tr_buf[l]);
            qkf_free(e->tr_mem[l]);
        }
    qkf_free(e->tr_buf);
    qkf_free(e->tr_mem);
    qkf_free(e->tr_want);
    qkf_free(e->tr_out);
    qkf_free(e->tr_tmp);
    qkf_free(e->nodes);
    qkf_stats_free(&e->st);
    if (!e->view)
        qkf_graph_free(&e->g);
    qkf_free(e);
}

const qkf_graph *qkf_sched_graph(const qkf_sched *e) { return &e->g; }
qkf_stats *qkf_sched_stats(qkf_sched *e) { return &e->st; }

const uint8_t *qkf_sched_spikes(const qkf_sched *e, int lif_index)
{
    if (!e->rec || lif_index < 0 || lif_index >= e->g.n_lif)
        return NULL;
    return e->rec[lif_index];
}

/* ---- forward -----------------------------------------------------------------------------------
 */

/* Integer mode: the encoding conv of every sample on the quantised pixels X (models/quant.h,
 * qkf_q_input): S = W * X summed in int32 (wrapping, so exact in any order), MaxPool on S when the
 * conv pools, into token-major sums [B][N][Cout] (int32, in nd->enc). A direct convolution: each
 * non-zero pixel of a receptive field adds its weight row times the pixel. */
static void encode_all_int(qkf_sched *e, node *nd, const float *input, int B)
{
    const qkf_qmodel *q = e->q;
    int cin = nd->cin, cout = nd->cout, k = nd->k, ho = nd->ho, wo = nd->wo;
    int64_t Nin = (int64_t)nd->h * nd->w, per = (int64_t)cin * Nin, P = (int64_t)ho * wo;
    const int32_t *W = nd->wti;
    int32_t *X = e->enc_x;
    for (int64_t i = 0; i < (int64_t)B * per; i++)
        X[i] = qkf_q_input(input[i], q->in_scale, q->in_max);
    int32_t *S = nd->pool ? e->enc_s : (int32_t *)(void *)nd->enc;
    int nt = e->nthreads < omp_get_max_threads() ? e->nthreads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < (int64_t)B * ho; r++) {
        int b = (int)(r / ho), oy = (int)(r % ho);
        for (int ox = 0; ox < wo; ox++) {
            uint32_t *acc = (uint32_t *)(void *)(S + ((int64_t)b * P + (int64_t)oy * wo + ox) * cout);
            memset(acc, 0, (size_t)cout * sizeof *acc);
            for (int ky = 0; ky < k; ky++) {
                int iy = oy * nd->stride - nd->pad + ky;
                if (iy < 0 || iy >= nd->h)
                    continue;
                for (int kx = 0; kx < k; kx++) {
                    int ix = ox * nd->stride - nd->pad + kx;
                    if (ix < 0 || ix >= nd->w)
                        continue;
                    for (int ci = 0; ci < cin; ci++) {
                        uint32_t x = (uint32_t)X[b * per + (int64_t)ci * Nin + (int64_t)iy * nd->w + ix];
                        if (!x)
                            continue;
                        const int32_t *wr = W + ((int64_t)(ky * k + kx) * cin + ci) * cout;
                        for (int co = 0; co < cout; co++)
                            acc[co] += x * (uint32_t)wr[co];
                    }
                }
            }
        }
    }
    if (!nd->pool)
        return;
    int32_t *out = (int32_t *)(void *)nd->enc;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < (int64_t)B * nd->N; r++) {
        int b = (int)(r / nd->N), p = (int)(r % nd->N), pw = (wo - 1) / 2 + 1;
        int qy = p / pw, qx = p % pw, nw = 0;
        const int32_t *win[9];
        for (int iy = 2 * qy - 1; iy <= 2 * qy + 1; iy++)
            for (int ix = 2 * qx - 1; ix <= 2 * qx + 1; ix++)
                if (iy >= 0 && iy < ho && ix >= 0 && ix < wo)
                    win[nw++] = S + ((int64_t)b * P + (int64_t)iy * wo + ix) * cout;
        qkf_spike_max_i32(out + r * cout, win, nw, cout);
    }
}

/* The encoding conv of every sample, with the dense engine's kernels: [Cin][B][H][W] -> sgemm ->
 * bias + BN (-> pool) -> token-major currents [B][N][Cout]. */
static void encode_all(qkf_sched *e, node *nd, const float *input, int B)
{
    if (e->q) {
        encode_all_int(e, nd, input, B);
        return;
    }
    const float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    const qkf_op *op = nd->op;
    int64_t Nin = (int64_t)nd->h * nd->w, np = (int64_t)nd->ho * nd->wo;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < nd->cin; c++)
            memcpy(e->enc_in + ((int64_t)c * B + b) * Nin, input + ((int64_t)b * nd->cin + c) * Nin,
                   (size_t)Nin * sizeof(float));
    qkf_conv_forward(e->enc_buf, e->enc_in, P + pp[op->p_w].offset, B, nd->cin, nd->h, nd->w,
                     nd->cout, nd->k, nd->stride, nd->pad, e->enc_col, e->enc_col_cap);
    qkf_bias_bn_forward(e->enc_buf, nd->cout, B * np, op->p_b >= 0 ? P + pp[op->p_b].offset : NULL,
                        P + pp[op->p_bn_w].offset, P + pp[op->p_bn_b].offset,
                        P + pp[op->p_bn_mean].offset, P + pp[op->p_bn_var].offset);
    const float *src = e->enc_buf;
    if (nd->pool) {
        qkf_maxpool3s2_forward(e->enc_pool, e->enc_buf, (int64_t)nd->cout * B, nd->ho, nd->wo);
        src = e->enc_pool;
    }
    int64_t N = nd->N;
    for (int b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++)
            for (int c = 0; c < nd->C; c++)
                nd->enc[((int64_t)b * N + n) * nd->C + c] = src[((int64_t)c * B + b) * N + n];
}

/* Frames must hold event counts: non-negative integers that fit an event's count. */
static int check_frames(const qkf_sched *e, const float *input, int B)
{
    const qkf_tensor *x = &e->g.tensors[e->g.input];
    int64_t per = (int64_t)x->c * x->h * x->w, n = (int64_t)B * e->T * per;
    for (int64_t i = 0; i < n; i++) {
        float v = input[i];
        if (!(v >= 0.0f && v <= 65535.0f) || v != (float)(int32_t)v) {
            int64_t s = i / (e->T * per), r = i % (e->T * per);
            int64_t t = r / per, c = (r % per) / ((int64_t)x->h * x->w),
                    p = r % ((int64_t)x->h * x->w);
            return qkf_set_error("input frame [%lld,%lld,%lld,%lld,%lld] is %g: the event engine "
                                 "takes event counts (integers 0..65535)",
                                 (long long)s, (long long)t, (long long)c, (long long)(p / x->w),
                                 (long long)(p % x->w), (double)v);
        }
    }
    return 0;
}

/* Every node over every time step, node after node (inside the forward's parallel region, or
 * serially: every worksharing construct then runs on the calling thread alone). The graph is
 * feed-forward across nodes and recurrent only within a node (its membranes over time), so a
 * node can run all T steps before its consumers start: its weights and membranes are then used
 * T times while they are cached. */
static void run_nodes(qkf_sched *e, int frames, scratch *s)
{
    if (frames)
        frames_run(e, s);
    double t0 = qkf_now();
    for (int i = 0; i < e->n_nodes; i++) {
        node_run(e, &e->nodes[i], s);
        if (omp_get_thread_num() == 0) { /* every node ends with a barrier */
            double t1 = qkf_now();
            e->st.node_seconds[i] += t1 - t0;
            t0 = t1;
        }
    }
}

/* The linear head on readout features feat [C]: logits [classes]. */
static void readout_head(const qkf_sched *e, const float *feat, float *logits)
{
    const qkf_graph *g = &e->g;
    const qkf_op *ro = &g->ops[g->n_ops - 1];
    const float *P = e->m->params.data;
    const qkf_param *pp = e->m->params.p;
    int Cr = g->tensors[ro->in0].c, K = g->cfg.num_classes;
    const float *W = P + pp[ro->p_head_w].offset, *bias = P + pp[ro->p_head_b].offset;
    for (int j = 0; j < K; j++) {
        const float *wj = W + (int64_t)j * Cr;
        float sum = 0.0f;
        for (int c = 0; c < Cr; c++)
            sum += feat[c] * wj[c];
        logits[j] = sum + bias[j];
    }
}

int qkf_sched_forward(qkf_sched *e, const float *input, int B, float *logits, int64_t *spike_count)
{
    if (B < 1 || B > e->max_batch)
        return qkf_set_error("batch %d outside 1..%d", B, e->max_batch);
    const qkf_graph *g = &e->g;
    int T = e->T, frames = !g->tensors[g->input].static_t;
    if (frames && check_frames(e, input, B))
        return -1;
    e->B = B;
    e->input = input;
    memset(e->tev, 0, (size_t)g->n_tensors * T * 2 * sizeof(int64_t));
    memset(e->lif_spikes, 0, (size_t)g->n_lif * sizeof(int64_t));
    const qkf_op *ro = &g->ops[g->n_ops - 1];
    int Cr = g->tensors[ro->in0].c;
    memset(e->ro, 0, (size_t)B * T * Cr * sizeof(int64_t));
    for (int i = 0; i < e->n_nodes; i++) {
        node *nd = &e->nodes[i];
        if (nd->v && nd->kind != QKF_NODE_CONV) { /* convs start from zero in scratch */
            int64_t per = (int64_t)nd->N * nd->C;
            memset(nd->v, 0, (size_t)(nd->tb ? per : per * B) * sizeof(float));
        }
        if (nd->kind == QKF_NODE_ENCODE)
            encode_all(e, nd, input, B);
    }
    if (e->rec)
        for (int l = 0; l < g->n_lif; l++)
            memset(e->rec[l], 0, (size_t)(qkf_graph_lif_neurons(g, l) * T * B));
    if (e->tr_mem)
        for (int l = 0; l < g->n_lif; l++)
            if (e->tr_mem[l])
                memset(e->tr_mem[l], 0, (size_t)(qkf_graph_lif_neurons(g, l) * B) * sizeof(float));

    int nt = omp_get_max_threads();
    if (nt > e->nthreads)
        nt = e->nthreads;
#pragma omp parallel num_threads(nt)
    {
        run_nodes(e, frames, &e->scr[omp_get_thread_num()]);
    }

    /* logits exactly as the dense readout computes them from the same spikes */
    const qkf_tensor *xr = &g->tensors[ro->in0];
    int N = xr->h * xr->w, K = g->cfg.num_classes;
    float *feat = e->feat;
    for (int b = 0; b < B && e->q; b++) { /* integer: F = counts over t and tokens (int64) */
        const qkf_qop *qo = &e->q->ops[g->n_ops - 1];
        for (int k = 0; k < K; k++) {
            int64_t sum = qo->head_b[k];
            for (int c = 0; c < Cr; c++) {
                int64_t F = 0;
                for (int t = 0; t < T; t++)
                    F += e->ro[((int64_t)b * T + t) * Cr + c];
                sum += (int64_t)qo->head_w[(int64_t)k * Cr + c] * F;
            }
            e->logits_int[(int64_t)b * K + k] = sum;
            logits[(int64_t)b * K + k] = (float)((double)sum * qo->head_scale);
        }
    }
    for (int b = 0; b < B && !e->q; b++) {
        for (int c = 0; c < Cr; c++) {
            float st = 0.0f;
            for (int t = 0; t < T; t++) {
                float sn = (float)e->ro[((int64_t)b * T + t) * Cr + c];
                st += sn / (float)N;
            }
            feat[c] = st / (float)T;
        }
        readout_head(e, feat, logits + (int64_t)b * K);
    }
    if (spike_count)
        for (int l = 0; l < g->n_lif; l++)
            spike_count[l] += e->lif_spikes[l];
    e->st.samples += B;
    e->st.batches++;
    if (e->trace) {
        /* one (layer, sample) per task, its steps in order, transposed to c*N + token */
        int fail = 0, nl = g->n_lif;
#pragma omp parallel for schedule(dynamic) num_threads(nt)
        for (int q = 0; q < nl * B; q++) {
            int l = q / B, b = q % B;
            if (!e->tr_buf[l] || fail)
                continue;
            unsigned w = e->tr_want[l];
            const qkf_tensor *y = &g->tensors[g->ops[g->lif_ops[l]].out];
            int64_t Nl = (int64_t)y->h * y->w, n = Nl * y->c, plane = (int64_t)T * B * n,
                    mx = e->tr_out_n;
            float *out = e->tr_out + (int64_t)omp_get_thread_num() * 4 * mx;
            for (int t = 0; t < T; t++) {
                const float *V = e->tr_buf[l] + ((int64_t)t * B + b) * n;
                const float *o[4] = {NULL, NULL, NULL, NULL};
                for (int k = 0; k < 4; k++)
                    if (w & (1u << k)) {
                        transpose_nc(out + k * mx, V + k * plane, Nl, y->c);
                        o[k] = out + k * mx;
                    }
                if (e->trace->put(e->trace->ctx, l, e->trace_base + b, t, o[QKF_TRACE_V],
                                  o[QKF_TRACE_H], o[QKF_TRACE_INPUT], o[QKF_TRACE_SPIKES], n)) {
#pragma omp atomic write
                    fail = 1;
                    break;
                }
            }
        }
        if (fail)
            return -1;
        e->trace_base += B;
    }
    return 0;
}

int qkf_sched_set_trace(qkf_sched *e, const qkf_lif_sink *tr)
{
    const qkf_graph *g = &e->g;
    if (e->view)
        return qkf_set_error("a session cannot record a trace");
    e->trace = tr;
    e->trace_base = 0;
    if (!tr || e->tr_buf)
        return 0;
    e->tr_buf = qkf_calloc((size_t)g->n_lif, sizeof(float *));
    e->tr_mem = qkf_calloc((size_t)g->n_lif, sizeof(float *));
    e->tr_want = qkf_calloc((size_t)g->n_lif, sizeof(unsigned));
    int maxc = 1;
    int64_t maxn = 1;
    for (int i = 0; i < e->n_nodes; i++) {
        const node *nd = &e->nodes[i];
        if (!nd->lif || !tr->wants(tr->ctx, nd->lif->lif_index))
            continue;
        int l = nd->lif->lif_index;
        int64_t n = qkf_graph_lif_neurons(g, l);
        e->tr_want[l] = tr->wants(tr->ctx, l);
        e->tr_buf[l] = qkf_malloc((size_t)(4 * (int64_t)e->T * e->max_batch * n) * sizeof(float));
        maxn = n > maxn ? n : maxn;
        if (nd->or_rule)
            e->tr_mem[l] = qkf_malloc((size_t)(e->max_batch * n) * sizeof(float));
        maxc = nd->C > maxc ? nd->C : maxc;
        if (nd->kind == QKF_NODE_CONV && !nd->fused) { /* it runs through shared currents */
            int64_t pn = (int64_t)e->T * (nd->tb ? e->max_batch : 1) * nd->ho * nd->wo * nd->cout;
            if (pn > e->pre_n) {
                qkf_free(e->pre);
                e->pre = qkf_malloc((size_t)pn * sizeof(float));
                e->bytes += (pn - e->pre_n) * (int64_t)sizeof(float);
                e->pre_n = pn;
            }
        }
    }
    e->tr_tmp_c = maxc;
    e->tr_out_n = maxn;
    e->tr_out = qkf_malloc((size_t)(omp_get_max_threads() * 4 * maxn) * sizeof(float));
    e->tr_tmp = qkf_malloc((size_t)omp_get_max_threads() * 2 * maxc * sizeof(float));
    return 0;
}

int qkf_sched_compare(const qkf_sched *e, const qkf_dense *d, int B, qkf_xcheck *r)
{
    memset(r, 0, sizeof *r);
    r->layer = -1;
    if (!e->rec)
        return qkf_set_error("cross-check needs an event engine created with QKF_SCHED_RECORD");
    if (B != e->B)
        return qkf_set_error("cross-check: the event engine last ran %d samples, not %d", e->B, B);
    const qkf_graph *g = &e->g;
    int T = e->T;
    for (int l = 0; l < g->n_lif; l++)
        if (!qkf_dense_tensor(d, g->ops[g->lif_ops[l]].out))
            return qkf_set_error("cross-check needs a dense engine that keeps its tensors");
    /* causal order: step, then layer, so the first difference is where the runs part */
    for (int t = 0; t < T; t++)
        for (int l = 0; l < g->n_lif; l++) {
            const qkf_op *op = &g->ops[g->lif_ops[l]];
            const qkf_tensor *y = &g->tensors[op->out];
            const float *x = qkf_dense_tensor(d, op->out), *h = qkf_dense_lif_h(d, l);
            int64_t N = (int64_t)y->h * y->w, nper = (int64_t)y->c * N, F = (int64_t)T * B;
            const uint8_t *rec = e->rec[l];
            for (int b = 0; b < B; b++)
                for (int c = 0; c < y->c; c++) {
                    int64_t di = ((int64_t)c * F + (int64_t)t * B + b) * N;
                    const uint8_t *es = rec + ((int64_t)t * B + b) * nper + (int64_t)c * N;
                    for (int64_t n = 0; n < N; n++) {
                        int ds = x[di + n] != 0.0f;
                        r->spikes += ds;
                        if (ds != es[n] && r->mismatches++ == 0) {
                            r->layer = l, r->t = t, r->b = b;
                            r->neuron = (int64_t)c * N + n;
                            r->dense_spike = ds;
                            r->vth = op->vth;
                            r->h = h ? h[di + n] : 0.0f;
                            r->has_h = h != NULL;
                        }
                    }
                }
        }
    return 0;
}

int qkf_sched_compare_int(const qkf_sched *e, const qkf_dense_int *d, int B, qkf_xcheck *r)
{
    memset(r, 0, sizeof *r);
    r->layer = -1;
    if (!e->q)
        return qkf_set_error("integer cross-check needs an event engine in integer mode");
    if (!e->rec)
        return qkf_set_error("cross-check needs an event engine created with QKF_SCHED_RECORD");
    if (B != e->B)
        return qkf_set_error("cross-check: the event engine last ran %d samples, not %d", e->B, B);
    const qkf_graph *g = &e->g;
    int T = e->T;
    int64_t maxn = 1;
    for (int l = 0; l < g->n_lif; l++)
        maxn = qkf_graph_lif_neurons(g, l) > maxn ? qkf_graph_lif_neurons(g, l) : maxn;
    uint8_t *ds = qkf_malloc((size_t)(maxn * T * B));
    /* causal order: step, then layer, so the first difference is where the runs part */
    for (int l = 0; l < g->n_lif; l++) {
        int64_t n = qkf_graph_lif_neurons(g, l);
        qkf_dense_int_lif_spikes(d, l, ds);
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++) {
                const uint8_t *x = ds + ((int64_t)t * B + b) * n, *y = e->rec[l] + ((int64_t)t * B + b) * n;
                for (int64_t i = 0; i < n; i++) {
                    r->spikes += x[i];
                    if (x[i] == y[i])
                        continue;
                    if (r->mismatches++ == 0 || t < r->t || (t == r->t && l < r->layer)) {
                        r->layer = l, r->t = t, r->b = b, r->neuron = i;
                        r->dense_spike = x[i];
                        r->vth = g->ops[g->lif_ops[l]].vth;
                    }
                }
            }
    }
    qkf_free(ds);
    return 0;
}

/* ---- sessions ----------------------------------------------------------------------------------
 *
 * A session is a run state of its own for one sample and one step slot (T = 1, max_batch = 1):
 * membranes, event lists, scratch and statistics. It reuses the engine's graph, nodes and folded
 * weights read-only, so any number of sessions can step at the same time on different threads.
 * A step runs exactly the code of one forward time step; the readout keeps the running sum the
 * forward accumulates over t (count / N per channel, in step order), so after T steps the scores
 * equal the forward's logits bit for bit. */

struct qkf_sched_session {
    qkf_sched e; /* the state; e.view = 1 */
    const qkf_sched *engine;
    int threads;
    int frames;    /* dvs variants: frames of event counts; otherwise an image per step */
    int64_t steps; /* since creation or reset */
    float *acc;    /* [Cr] readout: sum over steps of count / N */
    int64_t *iacc; /* integer mode: [Cr] readout counts over steps and tokens (F) */
    int64_t bytes;
};

qkf_sched_session *qkf_sched_session_new(const qkf_sched *engine, int threads)
{
    qkf_sched_session *s = qkf_calloc(1, sizeof *s);
    qkf_sched *e = &s->e;
    s->engine = engine;
    s->threads = threads < 1 ? 1 : threads;
    s->frames = !engine->g.tensors[engine->g.input].static_t;
    e->view = 1;
    e->m = engine->m;
    e->q = engine->q;
    e->g = engine->g; /* shares ops and tensors */
    e->max_batch = e->B = 1;
    e->T = 1;
    e->flags = engine->flags & ~QKF_SCHED_RECORD;
    qkf_graph one = engine->g; /* statistics of one step slot */
    one.cfg.T = 1;
    if (qkf_stats_init(&e->st, &one)) {
        qkf_free(s);
        return NULL;
    }
    e->n_nodes = engine->n_nodes;
    e->nodes = qkf_malloc((size_t)e->n_nodes * sizeof *e->nodes);
    memcpy(e->nodes, engine->nodes, (size_t)e->n_nodes * sizeof *e->nodes);
    for (int i = 0; i < e->n_nodes; i++) { /* keep the weights, not the engine's state */
        node *nd = &e->nodes[i];
        nd->v = nd->enc = nd->kv = NULL;
        nd->fired = NULL;
    }
    e->nthreads = s->threads;
    state_alloc(e);
    const qkf_op *ro = &e->g.ops[e->g.n_ops - 1];
    int Cr = e->g.tensors[ro->in0].c;
    s->acc = qkf_calloc((size_t)Cr, sizeof(float));
    s->iacc = qkf_calloc((size_t)Cr, sizeof(int64_t));
    s->bytes = e->bytes + (int64_t)sizeof *s + (int64_t)e->n_nodes * (int64_t)sizeof *e->nodes +
               (int64_t)Cr * (int64_t)(sizeof(float) + sizeof(int64_t)) +
               (int64_t)e->st.n_nodes *
                   (int64_t)(sizeof(qkf_node_info) + sizeof(qkf_work) + sizeof(double)) +
               (int64_t)e->st.n_nodes * e->st.heads_max * (int64_t)sizeof(qkf_work);
    return s;
}

void qkf_sched_session_free(qkf_sched_session *s)
{
    if (!s)
        return;
    state_free(&s->e);
    qkf_free(s->e.nodes); /* the copy; the weights are the engine's */
    qkf_stats_free(&s->e.st);
    qkf_free(s->acc);
    qkf_free(s->iacc);
    qkf_free(s);
}

void qkf_sched_session_reset(qkf_sched_session *s)
{
    qkf_sched *e = &s->e;
    for (int i = 0; i < e->n_nodes; i++) {
        node *nd = &e->nodes[i];
        if (nd->v)
            memset(nd->v, 0, (size_t)nd->N * nd->C * sizeof(float));
    }
    const qkf_op *ro = &e->g.ops[e->g.n_ops - 1];
    memset(s->acc, 0, (size_t)e->g.tensors[ro->in0].c * sizeof(float));
    memset(s->iacc, 0, (size_t)e->g.tensors[ro->in0].c * sizeof(int64_t));
    s->steps = 0;
}

/* A frame must hold event counts, as qkf_sched_forward requires. */
static int check_frame(const qkf_sched *e, const float *frame)
{
    const qkf_tensor *x = &e->g.tensors[e->g.input];
    int64_t N = (int64_t)x->h * x->w, n = (int64_t)x->c * N;
    for (int64_t i = 0; i < n; i++) {
        float v = frame[i];
        if (!(v >= 0.0f && v <= 65535.0f) || v != (float)(int32_t)v)
            return qkf_set_error("frame [%lld,%lld,%lld] is %g: the event engine takes event "
                                 "counts (integers 0..65535)",
                                 (long long)(i / N), (long long)(i % N / x->w),
                                 (long long)(i % x->w), (double)v);
    }
    return 0;
}

int qkf_sched_session_step(qkf_sched_session *s, const float *frame, int64_t *spike_count)
{
    qkf_sched *e = &s->e;
    const qkf_graph *g = &e->g;
    if (s->frames && check_frame(e, frame))
        return -1;
    e->input = frame;
    memset(e->tev, 0, (size_t)g->n_tensors * 2 * sizeof(int64_t));
    memset(e->lif_spikes, 0, (size_t)g->n_lif * sizeof(int64_t));
    const qkf_op *ro = &g->ops[g->n_ops - 1];
    const qkf_tensor *xr = &g->tensors[ro->in0];
    int Cr = xr->c, N = xr->h * xr->w;
    memset(e->ro, 0, (size_t)Cr * sizeof(int64_t));
    for (int i = 0; i < e->n_nodes; i++) /* a static image: encode this step's image */
        if (e->nodes[i].kind == QKF_NODE_ENCODE)
            encode_all(e, &e->nodes[i], frame, 1);
    if (s->threads > 1) {
#pragma omp parallel num_threads(s->threads)
        run_nodes(e, s->frames, &e->scr[omp_get_thread_num()]);
    } else {
        run_nodes(e, s->frames, &e->scr[0]);
    }
    for (int c = 0; c < Cr; c++) { /* as the forward's time sum, one step at a time */
        float sn = (float)e->ro[c];
        s->acc[c] += sn / (float)N;
        s->iacc[c] += e->ro[c];
    }
    if (s->steps++ == 0)
        e->st.samples++;
    e->st.batches++;
    if (spike_count)
        memcpy(spike_count, e->lif_spikes, (size_t)g->n_lif * sizeof(int64_t));
    return 0;
}

void qkf_sched_session_scores(qkf_sched_session *s, float *scores)
{
    qkf_sched *e = &s->e;
    const qkf_op *ro = &e->g.ops[e->g.n_ops - 1];
    int Cr = e->g.tensors[ro->in0].c;
    if (e->q) { /* the integer head on F; its scale is for T steps, so rescaled to the steps */
        const qkf_qop *qo = &e->q->ops[e->g.n_ops - 1];
        int K = e->g.cfg.num_classes, T = s->engine->T;
        for (int k = 0; k < K; k++) {
            int64_t sum = qo->head_b[k];
            for (int c = 0; c < Cr; c++)
                sum += (int64_t)qo->head_w[(int64_t)k * Cr + c] * s->iacc[c];
            double sc = qo->head_scale;
            if (s->steps > 0 && s->steps != T)
                sc *= (double)T / (double)s->steps;
            scores[k] = (float)((double)sum * sc);
        }
        return;
    }
    for (int c = 0; c < Cr; c++)
        e->feat[c] = s->steps > 0 ? s->acc[c] / (float)s->steps : 0.0f;
    readout_head(e, e->feat, scores);
}

int64_t qkf_sched_session_steps(const qkf_sched_session *s) { return s->steps; }
int64_t qkf_sched_session_bytes(const qkf_sched_session *s) { return s->bytes; }
qkf_stats *qkf_sched_session_stats(qkf_sched_session *s) { return &s->e.st; }
