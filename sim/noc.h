/* SANA-FE's detailed (contention) latency model of one time step (SLAM-Lab/SANA-FE,
 * src/schedule.cpp, schedule_messages_timestep_detailed; docs/hardware.md "What a step costs"),
 * written from its description:
 *
 * Every core sends its messages in order; a message leaves generation_delay after the one before
 * it (the soma work of the neurons processed since, plus axon out), a placeholder carries the
 * soma work after the last message. Messages are taken in the order they are sent (a priority
 * queue on the send time; ties: the lower core). The mesh keeps, per link, a density of the
 * messages in flight (a message adds 1 / (hops + 2) to each of the hops + 1 links of its XY route:
 * its tile's injection port, then each tile it enters by the direction it enters from) and the
 * mean processing delay of the messages in flight; a message leaves the mesh once received. A
 * message whose route holds more than (hops + 1) x link_buffer_size is blocked for the excess x
 * that mean (its core's later sends move with it); its network delay is max(its hops' latency,
 * density along the route x mean / (hops + 1)); the destination core takes messages one after
 * the other: received at max(core free, sent + network delay), free again processing_delay
 * later. The step ends at the latest send, receive-processing end or core's own work. A core's
 * work that no mesh message brings (input from outside the mesh, the encoding and head MACs, the
 * pooled windows, SSA's K^T V look-ups) runs on its receiving side from time 0. */
#ifndef QKF_NOC_H
#define QKF_NOC_H

#include <stdint.h>

/* The mesh: n_cores physical cores, core i at tile (x[i], y[i]) in slot[i] of the tile. */
typedef struct {
    int n_cores;
    const int *x, *y, *slot;
    int width, height, cores_per_tile; /* tiles (all chips side by side along x) */
    double t_hop[4];                   /* per hop travelling north (y - 1), east, south, west */
    int buffer;                        /* link_buffer_size (messages) */
} qkf_noc;

/* One message of a core (a placeholder when dst < 0: soma work after the last message). */
typedef struct {
    int dst;
    double gen;  /* generation delay: since the core's previous message was sent */
    double proc; /* processing delay at the destination (axon in + synapse look-ups) */
} qkf_noc_msg;

/* Working memory, reused across steps (zeroed before first use; freed by qkf_noc_free). */
typedef struct {
    int n_links, cap_heap, cap_fly;
    double *density;    /* [n_links] */
    uint8_t *touched;   /* [n_links] */
    int *touch, n_touch;
    double *cfr;        /* [n_cores] when each core is free to receive */
    void *heap, *fly;
} qkf_noc_ws;

/* Schedules one step: core i's messages are msg[off[i] .. off[i + 1]) in send order; local[i]
 * (may be NULL) is core i's own receiving-side work. Returns the step's latency without the
 * sync; *blocking and *n_blocked (may be NULL) get the sum of the blocking delays over the
 * messages and how many were blocked. Deterministic. */
double qkf_noc_schedule(const qkf_noc *noc, const qkf_noc_msg *msg, const int64_t *off,
                        const double *local, qkf_noc_ws *ws, double *blocking,
                        int64_t *n_blocked);
void qkf_noc_free(qkf_noc_ws *ws);

#endif
