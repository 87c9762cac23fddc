/* SANA-FE's detailed latency model of a step (sim/noc.h): two binary heaps, the messages to send
 * (on their send time) and the messages in flight (on their receive time), and the density of
 * the messages in flight on every link of the mesh. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"
#include "noc.h"

typedef struct {
    double t;
    int core;
    int64_t k; /* its message */
} send_ev;

typedef struct {
    double recv;
    int64_t seq;
    int src, dst;
    double proc;
} fly_ev;

static int send_less(const send_ev *a, const send_ev *b)
{
    return a->t < b->t || (a->t == b->t && a->core < b->core);
}

static int fly_less(const fly_ev *a, const fly_ev *b)
{
    return a->recv < b->recv || (a->recv == b->recv && a->seq < b->seq);
}

/* The two heaps, written out (C has no templates): push sifts up, pop sifts down. */
#define HEAP_FUNCS(T, LESS)                                                                        \
    static void T##_push(T *h, int *n, T v)                                                        \
    {                                                                                              \
        int i = (*n)++;                                                                            \
        while (i > 0) {                                                                            \
            int p = (i - 1) / 2;                                                                   \
            if (!LESS(&v, &h[p]))                                                                  \
                break;                                                                             \
            h[i] = h[p], i = p;                                                                    \
        }                                                                                          \
        h[i] = v;                                                                                  \
    }                                                                                              \
    static T T##_pop(T *h, int *n)                                                                 \
    {                                                                                              \
        T top = h[0], v = h[--(*n)];                                                               \
        int i = 0;                                                                                 \
        for (;;) {                                                                                 \
            int l = 2 * i + 1, r = l + 1, s = i;                                                   \
            const T *best = &v;                                                                    \
            if (l < *n && LESS(&h[l], best))                                                       \
                s = l, best = &h[l];                                                               \
            if (r < *n && LESS(&h[r], best))                                                       \
                s = r, best = &h[r];                                                               \
            if (s == i)                                                                            \
                break;                                                                             \
            h[i] = h[s], i = s;                                                                    \
        }                                                                                          \
        h[i] = v;                                                                                  \
        return top;                                                                                \
    }
HEAP_FUNCS(send_ev, send_less)
HEAP_FUNCS(fly_ev, fly_less)

static int64_t link_id(const qkf_noc *n, int x, int y, int port)
{
    return ((int64_t)x * n->height + y) * (4 + n->cores_per_tile) + port;
}

/* Adds delta to the density of every link of the XY route from core s to core d (sum: 0), or
 * returns the sum of their densities (sum: 1). */
static double route(const qkf_noc *n, qkf_noc_ws *ws, int s, int d, double delta, int sum)
{
    int sx = n->x[s], sy = n->y[s], dx = n->x[d], dy = n->y[d];
    int stepx = dx > sx ? 1 : -1, stepy = dy > sy ? 1 : -1;
    int ex = dx > sx ? 1 : 3, ey = dy > sy ? 2 : 0; /* east / west, south / north */
    double acc = 0;
    int64_t l = link_id(n, sx, sy, 4 + n->slot[s]); /* its tile's injection port */
    for (int x = sx, y = sy, first = 1;; first = 0) {
        if (!first) {
            if (x != dx)
                x += stepx, l = link_id(n, x, y, ex);
            else
                y += stepy, l = link_id(n, x, y, ey);
        }
        if (sum)
            acc += ws->density[l];
        else {
            ws->density[l] += delta;
            if (!ws->touched[l])
                ws->touched[l] = 1, ws->touch[ws->n_touch++] = (int)l;
        }
        if (x == dx && y == dy)
            break;
    }
    return acc;
}

static void grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap)
        return;
    int nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *q = qkf_malloc((size_t)nc * size);
    if (*cap)
        memcpy(q, *p, (size_t)*cap * size);
    qkf_free(*p);
    *p = q, *cap = nc;
}

double qkf_noc_schedule(const qkf_noc *n, const qkf_noc_msg *msg, const int64_t *off,
                        const double *local, qkf_noc_ws *ws, double *blocking,
                        int64_t *n_blocked)
{
    int64_t links = (int64_t)n->width * n->height * (4 + n->cores_per_tile);
    if (links > ws->n_links) {
        qkf_free(ws->density), qkf_free(ws->touched), qkf_free(ws->touch), qkf_free(ws->cfr);
        ws->n_links = (int)links;
        ws->density = qkf_calloc((size_t)links, sizeof(double));
        ws->touched = qkf_calloc((size_t)links, 1);
        ws->touch = qkf_malloc((size_t)links * sizeof(int));
        ws->cfr = NULL;
        ws->n_touch = 0;
    }
    qkf_free(ws->cfr);
    ws->cfr = qkf_malloc((size_t)(n->n_cores + 1) * sizeof(double));
    grow(&ws->heap, &ws->cap_heap, n->n_cores + 1, sizeof(send_ev));
    send_ev *sh = ws->heap;
    int ns = 0, nf = 0;
    double last = 0, blk = 0, sum_proc = 0;
    int64_t seq = 0, nb = 0;
    for (int i = 0; i < n->n_cores; i++) {
        ws->cfr[i] = local ? local[i] : 0;
        last = ws->cfr[i] > last ? ws->cfr[i] : last;
        if (off[i] < off[i + 1])
            send_ev_push(sh, &ns, (send_ev){msg[off[i]].gen, i, off[i]});
    }
    while (ns > 0) {
        send_ev e = send_ev_pop(sh, &ns);
        last = e.t > last ? e.t : last;
        /* the messages received by now leave the mesh */
        fly_ev *fh = ws->fly;
        while (nf > 0 && fh[0].recv <= e.t) {
            fly_ev f = fly_ev_pop(fh, &nf);
            int hops = abs(n->x[f.dst] - n->x[f.src]) + abs(n->y[f.dst] - n->y[f.src]);
            route(n, ws, f.src, f.dst, -1.0 / (hops + 2), 0);
            sum_proc -= f.proc;
            if (nf == 0)
                sum_proc = 0;
        }
        const qkf_noc_msg *m = &msg[e.k];
        double sent = e.t;
        if (m->dst >= 0) {
            int s = e.core, d = m->dst;
            int ax = n->x[d] - n->x[s], ay = n->y[d] - n->y[s];
            int hops = abs(ax) + abs(ay);
            double along = route(n, ws, s, d, 0, 1);
            double cap = (double)(hops + 1) * n->buffer, mean = nf ? sum_proc / nf : 0;
            if (along > cap) { /* the route is full: the core waits */
                double b = (along - cap) * mean;
                sent += b, blk += b, nb++;
            }
            double min_hop =
                abs(ax) * n->t_hop[ax > 0 ? 1 : 3] + abs(ay) * n->t_hop[ay > 0 ? 2 : 0];
            double congestion = along * mean / (hops + 1);
            double earliest = sent + (min_hop > congestion ? min_hop : congestion);
            double recv = ws->cfr[d] > earliest ? ws->cfr[d] : earliest;
            ws->cfr[d] = recv + m->proc;
            last = ws->cfr[d] > last ? ws->cfr[d] : last;
            grow(&ws->fly, &ws->cap_fly, nf + 1, sizeof(fly_ev));
            fly_ev_push(ws->fly, &nf, (fly_ev){recv, seq++, s, d, m->proc});
            route(n, ws, s, d, 1.0 / (hops + 2), 0);
            sum_proc += m->proc;
        }
        if (e.k + 1 < off[e.core + 1]) { /* the core's next message */
            double t = sent + msg[e.k + 1].gen;
            last = t > last ? t : last;
            send_ev_push(sh, &ns, (send_ev){t, e.core, e.k + 1});
        }
    }
    for (int i = 0; i < ws->n_touch; i++) /* an empty mesh for the next step */
        ws->density[ws->touch[i]] = 0, ws->touched[ws->touch[i]] = 0;
    ws->n_touch = 0;
    if (blocking)
        *blocking = blk;
    if (n_blocked)
        *n_blocked = nb;
    return last;
}

void qkf_noc_free(qkf_noc_ws *ws)
{
    qkf_free(ws->density), qkf_free(ws->touched), qkf_free(ws->touch), qkf_free(ws->cfr);
    qkf_free(ws->heap), qkf_free(ws->fly);
    memset(ws, 0, sizeof *ws);
}
