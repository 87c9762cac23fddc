/* A DVS emulator: turns a static image into the event stream a dynamic vision sensor would
 * record while it makes saccades in front of the image, as N-MNIST and N-Caltech101 were
 * recorded (Orchard et al. 2015: an ATIS on a pan-tilt unit, three ~100 ms saccades).
 *
 * The image (grayscale, scaled to [0,1], magnified `scale` times with bilinear sampling) lies on
 * a black background and moves relative to the sensor along a triangle of side `amplitude`
 * pixels, one saccade per edge, each with a smooth (raised-cosine) velocity profile. Every
 * `dt_us` the sensor's log intensity L = log(eps + I) is sampled per pixel. Each pixel keeps a
 * reference level (its L at its last event, initially its L at t = 0) and its own ON and OFF
 * contrast thresholds, C * (1 + sigma * N(0,1)) drawn once from the seed (fixed-pattern
 * mismatch). Whenever L moves a threshold above (below) the reference, the pixel emits an ON
 * (OFF) event and the reference moves by that threshold; several crossings in one step give
 * several events, their times interpolated linearly within the step. Optional background
 * activity adds random events at noise_hz per pixel. Events are ordered by (t, y, x, p).
 *
 * The threshold mismatch depends on the seed only (one sensor records every image); the noise
 * on (seed, recording). Same image, configuration and seed give the same events on every
 * machine. A uniform black
 * image gives no events at all (without noise). */
#ifndef QKF_DVS_EMU_H
#define QKF_DVS_EMU_H

#include <stdint.h>

#include "events.h"

typedef struct {
    int sensor;         /* square sensor side; 0: scaled image side + 6 (28 -> 34, as N-MNIST) */
    int scale;          /* sensor pixels per image pixel (default 1) */
    float amplitude;    /* triangle side in sensor pixels; 0: sensor - scaled side (>= 2) */
    int saccades;       /* default 3, one per triangle edge */
    int64_t saccade_us; /* duration of each saccade (default 100000) */
    int64_t dt_us;      /* sampling step (default 1000) */
    float threshold;    /* contrast threshold C in log intensity (default 0.5) */
    float sigma;        /* relative per-pixel threshold mismatch (default 0.05) */
    float eps;          /* log offset, L = log(eps + I) with I in [0,1] (default 0.1) */
    float noise_hz;     /* background events per pixel per second (default 0) */
    uint64_t seed;      /* the sensor: its threshold mismatch (same seed, same sensor) */
    uint64_t recording; /* which recording: the background noise (e.g. the image index) */
} qkf_dvs_emu_cfg;

void qkf_dvs_emu_defaults(qkf_dvs_emu_cfg *c);
/* Checks every field (for an image of h x w pixels). */
int qkf_dvs_emu_validate(const qkf_dvs_emu_cfg *c, int h, int w);

/* Emulates one image, uint8 [ch][h][w] (1 channel gray, 3 RGB), into *out (allocated; free with
 * qkf_events_free). The sensor is c->sensor (or its default) square. */
int qkf_dvs_emu_run(const qkf_dvs_emu_cfg *c, const uint8_t *img, int ch, int h, int w,
                    qkf_events *out);

#endif
