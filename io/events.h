/* Event-camera data: readers and writers for the common event file formats, DVS128 Gesture
 * segments, event-to-frame integration, and a timed stream of events per window.
 *
 *   qkf_events_load / _decode      a file / a memory buffer -> qkf_events (one array of events)
 *   qkf_events_save / _encode      qkf_events -> a file / a memory buffer (any format below)
 *   qkf_gesture_load               an AEDAT 3.1 recording sliced by its _labels.csv
 *   qkf_events_frames              events -> float [T][2][H][W] counts (SpikingJelly's rule)
 *   qkf_event_stream_*             events delivered window by window (the event engine's input)
 *
 * Formats (byte layouts in docs/events.md):
 *   nmnist   N-MNIST / N-Caltech101 .bin: 5-byte ATIS events
 *   aedat2   jAER AEDAT 2.0: the address layout of the chip its `# AEChip:` line names (DVS128,
 *            DAVIS240/346/640, DVXplorer, ...; --layout overrides); DVS128 in the jAER or
 *            CIFAR10-DVS orientation
 *   aedat3   AEDAT 3.1 polarity packets (DVS128 Gesture)
 *   qev      qkf's own plain binary: a 24-byte header and 16-byte (t, x, y, p) records
 *   npy      NumPy .npy: [N,4] columns x,y,t,p, or a structured array with fields x,y,t,p
 *   aedat4   AEDAT 4.0 (iniVation DV): IOHeader FlatBuffer, polarity packets, LZ4/Zstd
 *   evt2     Prophesee EVT 2.0 .raw: 32-bit words
 *   evt3     Prophesee EVT 3.0 .raw: 16-bit words, vectorised x
 *   dat      Prophesee .dat: 8-byte CD events (uint32 t, uint32 x|y|p)
 *
 * Every decoded event is a qkf_event: x right, y down (row-major frames index y*W + x), t in
 * microseconds, p = 1 for ON (brighter), 0 for OFF. Decoders check what their format forbids and
 * fail with one line naming the file and the byte offset (and the event index) at fault: bad
 * magic or header, truncation, coordinates outside the sensor, negative timestamps, timestamps
 * going backwards (or drop those events and count them, QKF_EV_BACKWARDS_DROP), polarity out of
 * range. Records that are not polarity events (AEDAT special events, N-MNIST overflow markers,
 * AEDAT 3.1 packets of another type, events with the valid bit clear, DAVIS APS and IMU samples,
 * external/trigger events, AEDAT 4 frame/IMU/trigger packets) are skipped and counted.
 * Nothing here prints; writers are atomic (temporary file, then rename). */
#ifndef QKF_EVENTS_H
#define QKF_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t t;     /* microseconds */
    uint16_t x, y; /* pixel column and row on the sensor */
    uint8_t p;     /* 1 ON, 0 OFF */
} qkf_event;

typedef enum {
    QKF_EVF_AUTO = 0, /* by magic bytes, then by extension (.bin) */
    QKF_EVF_NMNIST,
    QKF_EVF_AEDAT2,
    QKF_EVF_AEDAT3,
    QKF_EVF_QEV,
    QKF_EVF_NPY,
    QKF_EVF_AEDAT4,
    QKF_EVF_EVT2,
    QKF_EVF_EVT3,
    QKF_EVF_DAT,
    QKF_EVF_COUNT
} qkf_evformat;

const char *qkf_evformat_name(qkf_evformat f);          /* "nmnist", "aedat2", ... */
int qkf_evformat_parse(const char *s, qkf_evformat *f); /* the names above, "auto" */
qkf_evformat qkf_evformat_from_path(const char *path);  /* by extension; AUTO if unknown */

enum {
    QKF_EV_ORIENT_JAER = 0,   /* AEDAT 2.0 DVS128: x = 127 - xraw, y = yraw, p = 1 - bit0 */
    QKF_EV_ORIENT_CIFAR10DVS, /* as SpikingJelly's CIFAR10-DVS: x = 127 - yraw, y = 127 - xraw */
};

/* AEDAT 2.0 address layouts (docs/events.md, from jAER's chip classes). */
typedef enum {
    QKF_EV_LAYOUT_AUTO = 0,  /* the chip of the `# AEChip:` header line; DVS128 without one */
    QKF_EV_LAYOUT_DVS128,    /* x bits 1..7, y 8..14, polarity bit 0 (0 = ON), 128x128 */
    QKF_EV_LAYOUT_DAVIS,     /* x bits 12..21, y 22..30, polarity bit 11, APS/IMU bit 31 */
    QKF_EV_LAYOUT_DAVIS208,  /* DAVIS with the polarity inverted (jAER's Davis208PixelParade) */
    QKF_EV_LAYOUT_DVXPLORER, /* DAVIS bits, x as is and y flipped */
    QKF_EV_LAYOUT_DVS640,    /* x bits 1..10, y 11..20, polarity bit 0 (1 = ON) */
    QKF_EV_LAYOUT_DVS1280,   /* x bits 1..11, y 12..21, polarity bit 0 (1 = ON) */
    QKF_EV_LAYOUT_COUNT
} qkf_evlayout;

const char *qkf_evlayout_name(qkf_evlayout l);          /* "auto", "dvs128", "davis", ... */
int qkf_evlayout_parse(const char *s, qkf_evlayout *l); /* the names above */

/* AEDAT 4.0 packet compression (the IOHeader's CompressionType). */
typedef enum {
    QKF_AEDAT4_NONE = 0,
    QKF_AEDAT4_LZ4,
    QKF_AEDAT4_LZ4_HIGH,
    QKF_AEDAT4_ZSTD,
    QKF_AEDAT4_ZSTD_HIGH,
} qkf_aedat4_compression;

enum {
    QKF_EV_BACKWARDS_FAIL = 0, /* a timestamp smaller than the previous one is an error */
    QKF_EV_BACKWARDS_DROP,     /* ... or that event is dropped and counted */
};

typedef struct {
    qkf_evformat format; /* QKF_EVF_AUTO: detect */
    int width, height;   /* the sensor; 0: the format's default (docs/events.md) */
    int orient;          /* QKF_EV_ORIENT_*, AEDAT 2.0 DVS128 only */
    int backwards;       /* QKF_EV_BACKWARDS_* */
    qkf_evlayout layout; /* AEDAT 2.0 address layout; AUTO: from the file's chip */
} qkf_events_opts;

typedef struct {
    qkf_event *ev; /* [n], in file order, timestamps non-decreasing */
    int64_t n, cap;
    int width, height;
    qkf_evformat format;
    /* what decoding skipped */
    int64_t records;           /* event records in the file, of any kind */
    int64_t special;           /* AEDAT 2.0 special/sync events, N-MNIST overflow markers */
    int64_t invalid;           /* AEDAT 3.1 polarity events with the valid bit clear */
    int64_t unknown_packets;   /* AEDAT 3.1 packets of other event types */
    int64_t dropped_backwards; /* events dropped by QKF_EV_BACKWARDS_DROP */
    int64_t aps;               /* DAVIS APS samples (AEDAT 2.0 words), AEDAT 4 frames */
    int64_t imu;               /* IMU samples (AEDAT 2.0 words, AEDAT 4 and Prophesee IMU) */
    int64_t external;          /* external input / trigger events */
    char camera[64];           /* the camera or chip the file names ("" if none) */
    qkf_evlayout layout;       /* AEDAT 2.0: the address layout used */
} qkf_events;

/* Reads a whole file. o may be NULL (defaults). On error *out is empty (nothing to free). */
int qkf_events_load(const char *path, const qkf_events_opts *o, qkf_events *out);
/* Decodes a memory buffer; `name` is used in messages (a path, or "<memory>"). */
int qkf_events_decode(const uint8_t *buf, size_t len, const char *name, const qkf_events_opts *o,
                      qkf_events *out);
void qkf_events_free(qkf_events *e);
/* An empty set of events for a width x height sensor, with room for cap events. */
void qkf_events_init(qkf_events *e, int width, int height, int64_t cap);
/* Appends one event (grows the array). */
void qkf_events_push(qkf_events *e, int64_t t, int x, int y, int p);

/* Encodes e in format f (not AUTO) into a qkf_malloc'ed buffer. Fails if the format cannot hold
 * the events (nmnist: x > 255, y > 239, and an 8.4 s timestamp range per overflow marker is
 * handled with markers; aedat2: DVS128 addresses, a 128x128 sensor, t < 2^32; aedat4: LZ4
 * packets, x, y < 32768; evt2: x, y < 2048, t < 2^34; evt3: x, y < 2048; dat: x, y < 16384,
 * t < 2^32; the last four need non-decreasing timestamps). */
int qkf_events_encode(const qkf_events *e, qkf_evformat f, int orient, uint8_t **buf, size_t *len);
/* Encodes e as AEDAT 4.0 with the given packet compression (qkf_events_encode uses LZ4, DV's
 * default). */
int qkf_events_encode_aedat4(const qkf_events *e, qkf_aedat4_compression c, uint8_t **buf,
                             size_t *len);
/* Encodes and writes atomically ("<path>.tmp.<pid>", fsync, rename). f AUTO: by extension. */
int qkf_events_save(const char *path, const qkf_events *e, qkf_evformat f);

/* Index range [*i0, *i1) of the events with t0 <= t < t1 (events sorted by time). */
void qkf_events_range(const qkf_events *e, int64_t t0, int64_t t1, int64_t *i0, int64_t *i1);

/* ---- DVS128 Gesture ---------------------------------------------------------------------- */

typedef struct {
    int label;              /* 0..10 (the file's class 1..11 minus one) */
    int64_t t_start, t_end; /* microseconds, as in the csv; events with t_start <= t < t_end */
    int64_t i0, i1;         /* index range into the events */
} qkf_gesture_segment;

/* Reads "class,startTime_usec,endTime_usec" rows (one header line). *segs is qkf_malloc'ed. */
int qkf_gesture_labels_load(const char *csv, qkf_gesture_segment **segs, int *n);
/* Loads an AEDAT 3.1 recording and its labels (csv NULL: "<stem>_labels.csv" beside it) and
 * fills each segment's index range. */
int qkf_gesture_load(const char *aedat, const char *csv, const qkf_events_opts *o, qkf_events *ev,
                     qkf_gesture_segment **segs, int *n);
/* "<dir>/<stem>_labels.csv" for "<dir>/<stem>.aedat" (buf of size cap). */
void qkf_gesture_labels_path(const char *aedat, char *buf, size_t cap);

/* ---- frames ---------------------------------------------------------------------------------- */

typedef enum {
    QKF_SPLIT_NUMBER = 0, /* equal event counts: N/T (floor) per frame, the rest in the last */
    QKF_SPLIT_TIME,       /* equal durations: dt = (t_last - t_first) / T (floor) */
} qkf_split;

int qkf_split_parse(const char *s, qkf_split *split);

/* Integrates events [i0, i1) of e into T frames, out float [T][2][oh][ow] (overwritten):
 * channel 0 counts OFF events, channel 1 ON events, as SpikingJelly's
 * integrate_events_by_fixed_frames_number(split_by='number'|'time'). The sensor (W x H) maps
 * onto the output by one rational scale s = min(ow/W, oh/H), centred:
 * x' = floor(x*s) + (ow - floor(W*s))/2, likewise y (the identity when the output is the
 * sensor). Fails on an event outside the sensor or out of time order. */
int qkf_events_frames(const qkf_events *e, int64_t i0, int64_t i1, int T, qkf_split split, int oh,
                      int ow, float *out);

/* Adds events ev[0..n) to one frame [2][oh][ow] with the same mapping (sensor w x h). */
void qkf_events_accumulate(const qkf_event *ev, int64_t n, int w, int h, int oh, int ow,
                           float *frame);

/* ---- timed stream ------------------------------------------------------------------------ */

/* Delivers events in consecutive windows [t, t + window) from t_start on, every window in turn
 * (empty ones too), until the last event has been delivered. No allocation. */
typedef struct {
    const qkf_event *ev;
    int64_t n, i;
    int64_t t, window;
} qkf_event_stream;

void qkf_event_stream_init(qkf_event_stream *s, const qkf_event *ev, int64_t n, int64_t t_start,
                           int64_t window_us);
/* Returns 1 with the next window's events ev[*first .. *first + *count) and its start time, 0
 * when every event has been delivered. */
int qkf_event_stream_next(qkf_event_stream *s, int64_t *first, int64_t *count, int64_t *t_window);

/* ---- throughput ---------------------------------------------------------------------------- */

/* Decoding speed of format f on n synthetic events (encoded once, decoded `repeat` times):
 * events per second of the best run. */
int qkf_events_bench(qkf_evformat f, int64_t n, int repeat, double *events_per_s);
/* The same for AEDAT 4.0 with packet compression c. */
int qkf_events_bench_aedat4(qkf_aedat4_compression c, int64_t n, int repeat, double *events_per_s);

#endif
