#!/usr/bin/env python3
"""Writes the event-file fixtures of tests/test_events.c into tests/fixtures/events/.

Each fixture is built here, byte by byte with `struct`, from a list of known events, following
the published layouts (docs/events.md) independently of qkf's C encoders. Beside each good file,
NAME.expected.csv lists the events a correct reader must decode ("x,y,t,p" per line, in order).
The bad files each carry one defect the readers must report. Standard library only; the output
is deterministic (no timestamps, no randomness).

    python3 tools/reference/make_event_fixtures.py [--out DIR]
"""
import argparse
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures",
                   "events")


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def expected(name, events):
    lines = ["x,y,t,p"] + ["%d,%d,%d,%d" % e for e in events]
    write(name, ("\n".join(lines) + "\n").encode())


# ---- N-MNIST / N-Caltech101 .bin ---------------------------------------------------------------

def atis(x, y, p, ts):
    """One 5-byte ATIS event: x, y, then polarity in bit 7 of byte 2 and a 23-bit timestamp."""
    assert 0 <= ts < 1 << 23 and p in (0, 1)
    return bytes([x, y, (p << 7) | (ts >> 16), (ts >> 8) & 0xFF, ts & 0xFF])


OVERFLOW = bytes([0, 240, 0, 0, 0])  # y == 240: later timestamps gain 8192 us


def nmnist():
    # (x, y, p, raw ts) and the decoded (x, y, t, p); the marker adds 8192 from there on
    recs = [(5, 7, 1, 1), (0, 0, 0, 255), (33, 0, 1, 256), (0, 33, 0, 65536),
            (33, 33, 1, 0x7FFFFF)]
    data = b"".join(atis(*r) for r in recs)
    ev = [(x, y, ts, p) for x, y, p, ts in recs]
    data += OVERFLOW
    for x, y, p, ts in [(12, 13, 0, 0x7FFFFF), (1, 2, 1, 0x7FFFFF)]:
        data += atis(x, y, p, ts)
        ev.append((x, y, ts + 8192, p))
    # hand check: the first record is 05 07 80 00 01, the fifth 21 21 ff ff ff
    assert data[:5] == bytes.fromhex("0507800001") and data[20:25] == bytes.fromhex("2121ffffff")
    write("nmnist.bin", data)
    expected("nmnist.expected.csv", ev)

    # N-Caltech101 coordinates: outside 34x34, so the ATIS array 304x240
    recs = [(239, 179, 1, 100), (0, 0, 0, 200), (150, 239, 1, 300)]
    write("ncaltech.bin", b"".join(atis(*r) for r in recs))
    expected("ncaltech.expected.csv", [(x, y, ts, p) for x, y, p, ts in recs])

    good = b"".join(atis(*r) for r in recs)
    write("bad_nmnist_truncated.bin", good + b"\x01\x02\x03")  # byte 15: 3 trailing bytes
    write("bad_nmnist_y241.bin", good + atis(3, 241, 0, 400))  # byte 15 (event 3): y = 241
    write("bad_nmnist_backwards.bin", good + atis(3, 4, 0, 299))  # event 3: 299 < 300


# ---- AEDAT 2.0 (jAER, DVS128) -----------------------------------------------------------------

AEDAT2_HEADER = (b"#!AER-DAT2.0\r\n"
                 b"# This is a raw AE data file - do not edit\r\n"
                 b"# Data format is int32 address, int32 timestamp (8 bytes total)\r\n"
                 b"# created by make_event_fixtures.py\r\n")


def dvs128_addr(xr, yr, raw_pol):
    return (yr << 8) | (xr << 1) | raw_pol


def aedat2():
    # (address, timestamp): raw x, raw y, raw polarity bit (0 = ON); two special events
    recs = [(dvs128_addr(0, 0, 0), 5),          # 0x00000000
            (dvs128_addr(127, 127, 1), 6),      # 0x00007fff
            (0x00008000, 7),                    # external sync: skipped
            (0x0A15, 8),                        # raw x 10, raw y 10, raw pol 1
            (0x80000000, 9),                    # special event: skipped
            (dvs128_addr(3, 100, 0), 0xFFFFFFF0)]
    assert recs[3][0] == dvs128_addr(10, 10, 1)
    data = AEDAT2_HEADER + b"".join(struct.pack(">II", a, t) for a, t in recs)
    write("dvs128.aedat", data)
    jaer, c10 = [], []
    for a, t in recs:
        if a & 0x80008000:
            continue
        xr, yr, pol = (a >> 1) & 0x7F, (a >> 8) & 0x7F, 1 - (a & 1)
        jaer.append((127 - xr, yr, t, pol))    # jAER's DVS128 extractor
        c10.append((127 - yr, 127 - xr, t, pol))  # SpikingJelly's CIFAR10-DVS loader
    assert jaer[0] == (127, 0, 5, 1) and jaer[1] == (0, 127, 6, 0) and jaer[2] == (117, 10, 8, 0)
    expected("dvs128.jaer.expected.csv", jaer)
    expected("dvs128.cifar10dvs.expected.csv", c10)

    write("bad_aedat2_truncated.aedat", data + b"\x00\x00\x00")
    write("bad_aedat2_version.aedat", b"#!AER-DAT1.0\r\n" + b"\x00\x00\x00\x00")
    write("bad_aedat2_backwards.aedat",
          AEDAT2_HEADER + struct.pack(">IIII", 0, 100, 2, 99))  # event 1 goes back


# ---- AEDAT 3.1 (DVS128 Gesture) -----------------------------------------------------------------

AEDAT3_HEADER = (b"#!AER-DAT3.1\r\n"
                 b"#Format: RAW\r\n"
                 b"#Source 1: DVS128\r\n"
                 b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n"
                 b"#!END-HEADER\r\n")


def packet(etype, size, ovf, events, capacity=None, valid=None, tsoff=4):
    """A 28-byte packet header and its event slots (capacity * size bytes)."""
    capacity = len(events) if capacity is None else capacity
    if valid is None:
        valid = sum(1 for e in events if e[0] & 1)
    body = b"".join(struct.pack("<Ii", d, t) for d, t in events)
    body += b"\xAB" * ((capacity - len(events)) * size)  # unused slots: never read
    hdr = struct.pack("<hhiiiiii", etype, 1, size, tsoff, ovf, capacity, len(events), valid)
    return hdr + body


def pol(x, y, p, valid=1):
    return (x << 17) | (y << 2) | (p << 1) | valid


def aedat3():
    ev = []
    pk = []
    # a special-event packet (type 0): skipped, counted
    pk.append(packet(0, 8, 0, [(0x00000001, 3), (0x00000101, 4)]))
    # polarity, overflow 0; one invalid event; capacity 5 > number 4
    p1 = [(pol(0, 0, 1), 10), (pol(127, 127, 0), 20), (pol(5, 6, 1, valid=0), 30),
          (pol(64, 32, 0), 0x7FFFFFFF)]
    pk.append(packet(1, 8, 0, p1, capacity=5))
    ev += [(0, 0, 10, 1), (127, 127, 20, 0), (64, 32, 0x7FFFFFFF, 0)]
    # an unknown packet type (12) with 16-byte events: skipped, counted
    pk.append(packet(12, 16, 0, [], capacity=1))
    # polarity, overflow 1: t = 1 << 31 | ts
    p2 = [(pol(1, 2, 1), 5), (pol(3, 4, 0), 100), (pol(100, 50, 1), 200)]
    pk.append(packet(1, 8, 1, p2))
    ev += [(1, 2, (1 << 31) | 5, 1), (3, 4, (1 << 31) | 100, 0), (100, 50, (1 << 31) | 200, 1)]
    # hand check: the data word of (x 127, y 127, OFF, valid) is 0x00fe01fd
    assert pol(127, 127, 0) == 0x00FE01FD
    data = AEDAT3_HEADER + b"".join(pk)
    write("user01_fixture.aedat", data)
    expected("user01_fixture.expected.csv", ev)
    # gesture segments: [start, end) in us, classes 1..11
    write("user01_fixture_labels.csv",
          b"class,startTime_usec,endTime_usec\r\n"
          b"1,0,20\r\n"              # events t = 10 -> 1 event
          b"5,20,2147483648\r\n"     # t = 20, 2^31 - 1 -> 2 events
          b"11,2147483648,2147483848\r\n")  # overflow 1: ts 5 and 100 (200 is at the end) -> 2

    write("bad_aedat3_truncated.aedat", data[:-5])
    write("bad_aedat3_noend.aedat", AEDAT3_HEADER.replace(b"#!END-HEADER\r\n", b"") +
          b"\x01\x00")
    write("bad_aedat3_eventsize.aedat",
          AEDAT3_HEADER + packet(1, 16, 0, [], capacity=1))
    write("bad_aedat3_outside.aedat",
          AEDAT3_HEADER + packet(1, 8, 0, [(pol(1, 1, 1), 1), (pol(128, 5, 1), 2)]))
    write("bad_aedat3_negative.aedat", AEDAT3_HEADER + packet(1, 8, 0, [(pol(1, 1, 1), -5)]))
    write("bad_aedat3_labels.csv", b"class,startTime_usec,endTime_usec\n1,0,20\n12,30,40\n")


# ---- plain formats --------------------------------------------------------------------------

PLAIN = [(0, 0, 0, 1), (9, 3, 17, 0), (2, 8, 17, 1), (9, 9, 1000000, 0)]  # (x, y, t, p)


def qev():
    data = b"QKFEV001" + struct.pack("<IIQ", 10, 10, len(PLAIN))
    for x, y, t, p in PLAIN:
        data += struct.pack("<qHHB3x", t, x, y, p)
    assert len(data) == 24 + 16 * len(PLAIN)
    write("plain.qev", data)
    expected("plain.expected.csv", PLAIN)
    write("bad_qev_truncated.qev", data[:-1])
    bad = bytearray(data)
    bad[24 + 16 * 2 + 12] = 2  # event 2: polarity 2
    write("bad_qev_polarity.qev", bytes(bad))


def npy(descr, shape, body, fortran=False):
    d = "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", shape)
    hl = len(d) + 1
    hl += (64 - (10 + hl) % 64) % 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", hl) + (d.ljust(hl - 1) + "\n").encode() + body


def npys():
    # [N,4] int64, columns x, y, t, p
    body = b"".join(struct.pack("<4q", *e) for e in PLAIN)
    write("plain_i8.npy", npy("'<i8'", "(%d, 4)" % len(PLAIN), body))
    # [N,4] float64 in Fortran (column-major) order
    cols = [[e[c] for e in PLAIN] for c in range(4)]
    body = b"".join(struct.pack("<%dd" % len(PLAIN), *c) for c in cols)
    write("plain_f8_fortran.npy", npy("'<f8'", "(%d, 4)" % len(PLAIN), body, fortran=True))
    # structured as Tonic stores events: t first, big-endian int32 x, bool p, and padding
    descr = "[('t', '<i8'), ('x', '>i4'), ('y', '<u2'), ('', '|V2'), ('p', '|b1')]"
    body = b"".join(struct.pack("<q", t) + struct.pack(">i", x) + struct.pack("<H", y) +
                    b"\x00\x00" + bytes([p]) for x, y, t, p in PLAIN)
    write("plain_struct.npy", npy(descr, "(%d,)" % len(PLAIN), body))
    # bad: polarity 3 in event 1; a fractional timestamp; a truncated body
    body = b"".join(struct.pack("<4q", *e) for e in PLAIN[:1] + [(1, 1, 20, 3)])
    write("bad_npy_polarity.npy", npy("'<i8'", "(2, 4)", body))
    body = struct.pack("<4d", 1, 1, 2.5, 1)
    write("bad_npy_fraction.npy", npy("'<f8'", "(1, 4)", body))
    body = b"".join(struct.pack("<4q", *e) for e in PLAIN)
    write("bad_npy_truncated.npy", npy("'<i8'", "(%d, 4)" % len(PLAIN), body[:-8]))


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    OUT = ap.parse_args().out
    os.makedirs(OUT, exist_ok=True)
    nmnist()
    aedat2()
    aedat3()
    qev()
    npys()


if __name__ == "__main__":
    main()
