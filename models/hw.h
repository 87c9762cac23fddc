/* A neuromorphic chip as qkf models it: its arithmetic (what part 1 of the chip work computes
 * with), its cores and their limits, and its per-activity costs (SANA-FE's architecture
 * description, docs/hardware.md). Profiles are YAML files in SANA-FE's architecture format plus
 * keys of our own for the arithmetic (io/hw_profile.c loads them; models/hw/NAME.yaml are bundled).
 *
 * The integer form of every QKFormer operation on a profile's arithmetic is written down in
 * docs/hardware.md; models/quant.h turns a float checkpoint into it. */
#ifndef QKF_HW_H
#define QKF_HW_H

#include <stdint.h>

#define QKF_HW_NAME 64

/* Arithmetic of a chip. ideal (float) profiles set is_float and nothing else matters. */
typedef struct {
    int is_float;         /* 1: the ideal float machine (today's engines) */
    int weight_bits;      /* signed weight mantissa bits, sign included (Loihi 8, Speck 8) */
    int weight_exp_min;   /* weight exponent range: W = mantissa << exp (>> for exp < 0) */
    int weight_exp_max;   /* (Speck: 0..0, one shared scale) */
    int per_channel;      /* 1: a scale (exponent, threshold) per output channel; 0: per layer */
    int current_bits;     /* synaptic input register (Lava a_in: int16) */
    int current_wrap;     /* 1: wrap to current_bits (two's complement); 0: saturate */
    int current_shift;    /* input enters the membrane as A << current_shift (Loihi: 6) */
    int membrane_bits;    /* membrane register (Loihi 24, Speck 16) */
    int membrane_wrap;    /* 1: wrap; 0: saturate to +-(2^(bits-1) - 1) (Loihi clips) */
    int decay_bits;       /* decay constants are fractions of 2^decay_bits (Loihi 12) */
    int threshold_bits;   /* unsigned threshold mantissa bits (Loihi 17) */
    int threshold_shift;  /* threshold = mantissa << threshold_shift (Loihi 6) */
    int threshold_ge;     /* 1: spike when v >= threshold (SpikingJelly, Speck); 0: v > (Loihi) */
    int reset_subtract;   /* 1: v -= threshold on a spike; 0: v = 0 (hard reset, QKFormer) */
    int bias_bits;        /* signed bias mantissa bits (Loihi 13) */
    int bias_exp_max;     /* bias = mantissa << exp, 0 <= exp <= bias_exp_max (Loihi 7) */
    int graded_bits;      /* payload bits of a graded spike (0: binary spikes only) */
    int input_bits;       /* unsigned bits of the encoding layer's input pixels */
    /* Added with the loader (io/hw_profile.c); 0 keeps the meaning the fields above had. */
    int leak;             /* QKF_HW_LEAK_DECAY (0): v decays by (2^decay_bits - dv) / 2^decay_bits
                           * (Loihi); QKF_HW_LEAK_NONE: integrate-and-fire, no decay at all
                           * (Speck's IAF); QKF_HW_LEAK_LINEAR: a constant is subtracted each
                           * step (TrueNorth). Only DECAY represents QKFormer's tau = 2 LIF. */
    int weight_codebook;  /* distinct weight values a neuron can hold (TrueNorth: 4, one per axon
                           * type); 0: any weight mantissa */
} qkf_hw_arith;

enum { QKF_HW_LEAK_DECAY = 0, QKF_HW_LEAK_NONE = 1, QKF_HW_LEAK_LINEAR = 2 };

/* Per-activity energy (J) and latency (s) of a core's pipeline units, as SANA-FE names them. */
typedef struct {
    double e_message_in, t_message_in;       /* axon_in */
    double e_process_spike, t_process_spike; /* synapse, per synapse looked up */
    double e_dendrite_update, t_dendrite_update;
    double e_access_neuron, t_access_neuron; /* soma, every neuron every step */
    double e_update_neuron, t_update_neuron;
    double e_spike_out, t_spike_out;
    double e_message_out, t_message_out; /* axon_out, per destination core */
} qkf_hw_core_cost;

/* A core entry of the tile (one YAML `core` item, all the cores of its range): its limits.
 * Cores of one chip share their pipeline and costs but may differ in memory (Speck). */
typedef struct {
    char name[QKF_HW_NAME]; /* as written, range included ("speck_core[0..2]") */
    int count;              /* cores per tile in this entry */
    int64_t max_neurons;    /* max_neurons_supported */
    int64_t synapse_bytes, max_fan_in, max_fan_out; /* 0: unlimited */
    int max_layers_per_core, max_destinations;      /* 0: unlimited */
} qkf_hw_core_group;

/* A pipeline unit of a core as the file lists it. SANA-FE maps a neuron onto the first unit of
 * each kind unless told otherwise; qkf does the same, so those are the ones in `cost` and the
 * ones whose model must be one qkf models. The others are listed, priced, and not used. */
typedef enum {
    QKF_HW_AXON_IN,
    QKF_HW_SYNAPSE,
    QKF_HW_DENDRITE,
    QKF_HW_SOMA,
    QKF_HW_AXON_OUT,
    QKF_HW_UNIT_KINDS
} qkf_hw_unit_kind;
typedef struct {
    char name[QKF_HW_NAME];  /* range included */
    char model[QKF_HW_NAME]; /* "" for axon units */
    qkf_hw_unit_kind kind;
    int count;               /* copies (a range in the name) */
    int is_default;          /* the unit qkf's neurons use (first of its kind; soma: first non-input) */
    double energy[3], latency[3]; /* soma: access_neuron, update_neuron, spike_out; others: [0] */
} qkf_hw_unit;

#define QKF_HW_MAX_GROUPS 16
#define QKF_HW_MAX_UNITS 32

/* Where the numbers of costs come from (qkf key `costs`). */
typedef enum {
    QKF_HW_COSTS_AS_GIVEN,     /* the file's numbers, their provenance not stated (no qkf keys) */
    QKF_HW_COSTS_CALIBRATED,   /* measured or calibrated against silicon (SANA-FE's Loihi) */
    QKF_HW_COSTS_ESTIMATE,     /* a published estimate (45 nm arithmetic energies) */
    QKF_HW_COSTS_PARTIAL,      /* some figures published, the rest 0 */
    QKF_HW_COSTS_UNPUBLISHED,  /* none published: every cost is 0 and means "unknown" */
    QKF_HW_COSTS_HYPOTHETICAL, /* a made-up chip */
} qkf_hw_cost_basis;

typedef struct {
    char name[QKF_HW_NAME];
    char path[512];        /* the file it came from ("" for none) */
    char description[256];
    qkf_hw_arith arith;
    /* chip and mesh (SANA-FE architecture: topology mesh, width x height tiles) */
    int mesh_width, mesh_height;
    int cores_per_tile;
    int link_buffer_size;
    double e_hop_ns, t_hop_ns; /* per hop north/south, joules and seconds */
    double e_hop_ew, t_hop_ew; /* per hop east/west */
    int n_sync;                /* latency_sync table: n_sync entries (tiles in use -> seconds) */
    int sync_tiles[16];
    double sync_s[16];
    /* core limits (cores that differ: the largest of group[]; each core's in group[]) */
    int64_t max_neurons;        /* per core (max_neurons_supported) */
    int64_t synapse_bytes;      /* synaptic memory per core (0: unlimited) */
    int64_t max_fan_in, max_fan_out; /* axons per core (0: unlimited) */
    int max_layers_per_core;    /* Speck: 1 (0: unlimited) */
    int max_destinations;       /* Speck: 2 destination cores per core (0: unlimited) */
    qkf_hw_core_cost cost;
    /* energy model of the ideal machine (the paper's 45 nm figures) */
    double e_ac, e_mac;

    /* Added with the loader (io/hw_profile.c). */
    char arch_name[QKF_HW_NAME]; /* architecture: name: in the file */
    int n_tiles;                 /* tiles the file defines (<= mesh_width * mesh_height) */
    int64_t n_cores;             /* n_tiles * cores_per_tile */
    double e_hop[4], t_hop[4];   /* per hop, QKF_HW_NORTH..WEST; e_hop_ns above is the mean of
                                  * north and south, e_hop_ew of east and west */
    int sync_table;              /* sync_model: 0 fixed (sync_s[0]), 1 table */
    char buffer_position[16];    /* SANA-FE core buffer_position: dendrite, soma or axon_out */
    int buffer_inside_unit;
    int n_groups;                /* core entries of a tile, each with its limits */
    qkf_hw_core_group group[QKF_HW_MAX_GROUPS];
    int n_units;                 /* pipeline units of a core, in file order */
    qkf_hw_unit unit[QKF_HW_MAX_UNITS];
    /* layer limits of cores that hold one layer each (Speck; 0: none) */
    int max_kernel, max_feature_side, max_input_side, max_channels;
    qkf_hw_cost_basis cost_basis;
} qkf_hw_profile;

enum { QKF_HW_NORTH = 0, QKF_HW_EAST = 1, QKF_HW_SOUTH = 2, QKF_HW_WEST = 3 };

#endif
