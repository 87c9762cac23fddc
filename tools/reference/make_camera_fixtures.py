#!/usr/bin/env python3
"""Writes the camera-file fixtures of tests/test_events_cameras.c into tests/fixtures/events/.

DAVIS AEDAT 2.0 (DAVIS240C, Davis346B), AEDAT 4.0 (uncompressed, LZ4, Zstd), Prophesee EVT 2.0,
EVT 3.0 and .dat files, each built here byte by byte from known events and the published layouts
(docs/events.md: jAER's chip classes, iniVation's AEDAT 4.0 description and dv-processing's
FlatBuffers schemas, OpenEB's EVT 2.0 / EVT 3.0 / DAT descriptions), independently of qkf's C
encoders. The FlatBuffers here are laid out differently from qkf's writer (vtables after their
tables, extra fields, padding) so the reader meets more than one layout. Beside each good file,
NAME.expected.csv lists the events a correct reader decodes ("x,y,t,p"), in order. The bad files
each carry one defect; the C tests check the byte offset each must be refused at.

Needs python3-lz4 (LZ4 frames) and the zstd command (Zstd frames); output is deterministic.

    python3 tools/reference/make_camera_fixtures.py [--out DIR]
"""
import argparse
import os
import struct
import subprocess

import lz4.frame

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures",
                   "events")


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def expected(name, events):
    lines = ["x,y,t,p"] + ["%d,%d,%d,%d" % e for e in events]
    write(name, ("\n".join(lines) + "\n").encode())


# ---- AEDAT 2.0, DAVIS ---------------------------------------------------------------------------

def davis_header(chip):
    return ("#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
            "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each "
            "event\r\n# Timestamps tick is 1 us\r\n# AEChip: %s\r\n"
            "#Start of Preferences for this AEChip\r\n# <entry key=\"x\" value=\"1\"/>\r\n"
            "#End of Preferences for this AEChip\r\n" % chip).encode()


def davis_dvs(xr, yr, pol):
    """DavisChip: y bits 22..30, x bits 12..21, polarity bit 11 (1 = ON), bit 31 clear."""
    assert 0 <= xr < 1024 and 0 <= yr < 512
    return yr << 22 | xr << 12 | pol << 11


def davis_file(chip, w, h, extra_dvs):
    """DVS events at the corners and inside, APS samples, an IMU sample (7 words), external
    input events. Returns (bytes, expected events, aps, imu, external)."""
    recs, ev = [], []
    t = 1000
    dvs = [(0, 0, 1), (w - 1, 0, 0), (0, h - 1, 0), (w - 1, h - 1, 1)] + extra_dvs
    aps = imu = ext = 0
    for i, (xr, yr, p) in enumerate(dvs):
        recs.append((davis_dvs(xr, yr, p), t))
        ev.append((w - 1 - xr, yr, t, p))  # jAER: x = sx1 - raw x, y = raw y
        t += 7
        if i == 1:  # an APS reset read and signal read of pixel (5, 6): readout bits 10..11
            for rd in (0, 1):
                recs.append((0x80000000 | 6 << 22 | 5 << 12 | rd << 10 | 0x155, t))
                aps += 1
        if i == 2:  # an IMU sample: 7 words of ADDRESS_TYPE_IMU with sample codes in 28..30
            for code in range(7):
                recs.append((0x80000C00 | code << 28 | (code * 37 & 0xFFFF) << 12, t))
                imu += 1
        if i == 3:  # external input events: rising edge (bit 10 + 3), a falling edge
            recs.append((0x400 | 3, t))
            recs.append((0x400 | 2, t + 1))
            ext += 2
            t += 2
    data = b"".join(struct.pack(">II", a, ts) for a, ts in recs)
    return data, ev, aps, imu, ext


def davis():
    d240, ev240, aps, imu, ext = davis_file("eu.seebetter.ini.chips.davis.DAVIS240C", 240, 180,
                                            [(120, 90, 1), (17, 101, 0), (239, 3, 0)])
    assert (aps, imu, ext) == (2, 7, 2)
    write("davis240c.aedat", davis_header("eu.seebetter.ini.chips.davis.DAVIS240C") + d240)
    expected("davis240c.expected.csv", ev240)
    # hand-checked: address 0x16878800 = y 90 (0x5a << 22), x 120 (0x78 << 12), ON (bit 11)
    assert davis_dvs(120, 90, 1) == 0x16878800
    d346, ev346, _, _, _ = davis_file("eu.seebetter.ini.chips.davis.Davis346B", 346, 260,
                                      [(345, 259, 0), (200, 130, 1)])
    write("davis346.aedat", davis_header("eu.seebetter.ini.chips.davis.Davis346B") + d346)
    expected("davis346.expected.csv", ev346)
    # bad: a DVS event with bits 0..9 set (a DVS128 address in a DAVIS file)
    h = davis_header("eu.seebetter.ini.chips.davis.DAVIS240C")
    write("bad_davis_bits.aedat", h + struct.pack(">IIII", davis_dvs(3, 4, 1), 10, 0x0a15, 11))
    # bad: raw x 240 on a 240-wide sensor (a Davis346 file labelled DAVIS240C)
    write("bad_davis_outside.aedat", h + struct.pack(">IIII", davis_dvs(3, 4, 1), 10,
                                                      davis_dvs(240, 4, 1), 11))
    # bad: a DAVIS address in a DVS128 file (bits 16..30 that DVS128 does not use)
    write("bad_dvs128_bits.aedat",
          davis_header("ch.unizh.ini.jaer.chip.retina.DVS128") +
          struct.pack(">IIII", 0x0a15, 10, davis_dvs(112, 90, 0), 11))
    # bad: a chip with no known layout
    write("bad_unknown_chip.aedat",
          davis_header("ch.unizh.ini.jaer.chip.cochlea.CochleaAMS1c") +
          struct.pack(">II", 5, 10))


# ---- AEDAT 4.0 ----------------------------------------------------------------------------------

class FB:
    """A tiny FlatBuffer writer, front to back, vtables placed after their tables."""

    def __init__(self):
        self.b = bytearray()

    def align(self, n):
        while len(self.b) % n:
            self.b += b"\0"

    def pos(self):
        return len(self.b)


def ioheader(compression, dtp, xml):
    """IOHeader: root uoffset, "IOHE", table (soffset, compression int32, pad, dataTablePosition
    int64, infoNode uoffset, an unknown extra field), vtable after the table, then the string."""
    b = bytearray(b"\0" * 8)
    b[4:8] = b"IOHE"
    # table at 8: soffset(4) compression(4) dtp(8) info(4) extra(4) -> 24 bytes
    table = 8
    vt = table + 24
    b += struct.pack("<i", table - vt)  # negative: the vtable comes after
    b += struct.pack("<i", compression)
    b += struct.pack("<q", dtp)
    info_field = len(b)
    b += b"\0\0\0\0"
    b += struct.pack("<I", 0xDEADBEEF)  # field 3, unknown to the schema: must be ignored
    # vtable: size 12 (4 fields), table size 24, offsets 4, 8, 16, 20
    b += struct.pack("<HHHHHH", 12, 24, 4, 8, 16, 20)
    while len(b) % 4:
        b += b"\0"
    s = len(b)
    x = xml.encode()
    b += struct.pack("<I", len(x)) + x + b"\0"
    while len(b) % 4:
        b += b"\0"
    struct.pack_into("<I", b, info_field, s - info_field)
    struct.pack_into("<I", b, 0, table)
    return bytes(b)


def size_prefixed(ident, body_fn):
    """A size-prefixed FlatBuffer: [size][root uoffset][ident] then what body_fn writes; body_fn
    gets the buffer (positions count from after the size prefix) and returns the root table."""
    b = bytearray(b"\0" * 8)
    b[4:8] = ident
    root = body_fn(b)
    struct.pack_into("<I", b, 0, root)
    return struct.pack("<I", len(b)) + bytes(b)


def events_packet(events):
    def body(b):
        # table at 8: soffset, a padding field, elements uoffset; vtable after the table with
        # elements as field 0; then the vector (count at 4 mod 8, structs 8-aligned)
        table = len(b)
        b += b"\0" * 12
        vt = len(b)
        b += struct.pack("<HHH", 6, 12, 8)
        while len(b) % 8 != 4:
            b += b"\0"
        vec = len(b)
        b += struct.pack("<I", len(events))
        for x, y, t, p in events:
            b += struct.pack("<qhh?3x", t, x, y, bool(p))
        struct.pack_into("<i", b, table, table - vt)
        struct.pack_into("<I", b, table + 8, vec - (table + 8))
        return table
    return size_prefixed(b"EVTS", body)


def elements_packet(ident, n):
    """IMUS or TRIG: a table with an elements vector of n tables (each a vtable + t field)."""
    def body(b):
        table = len(b)
        b += b"\0" * 8
        vt = len(b)
        b += struct.pack("<HHH", 6, 8, 4)
        while len(b) % 4:
            b += b"\0"
        vec = len(b)
        b += struct.pack("<I", n) + b"\0" * (4 * n)
        for k in range(n):  # element tables: soffset, int64 t
            while len(b) % 8 != 4:
                b += b"\0"
            et = len(b)
            b += struct.pack("<iq", 0, 1000 + k)
            evt = len(b)
            b += struct.pack("<HHH", 6, 12, 4)
            struct.pack_into("<i", b, et, et - evt)
            struct.pack_into("<I", b, vec + 4 + 4 * k, et - (vec + 4 + 4 * k))
        struct.pack_into("<i", b, table, table - vt)
        struct.pack_into("<I", b, table + 4, vec - (table + 4))
        return table
    return size_prefixed(ident, body)


def frame_packet():
    def body(b):
        table = len(b)
        b += b"\0" * 12  # soffset, int64 t (at +4, unaligned: unused by the reader)
        vt = len(b)
        b += struct.pack("<HHH", 6, 12, 4)
        struct.pack_into("<i", b, table, table - vt)
        return table
    return size_prefixed(b"FRME", body)


AEDAT4_XML = """<dv version="2.0">
    <node name="outInfo" path="/mainloop/Recorder/outInfo/">
        <node name="0" path="/mainloop/Recorder/outInfo/0/">
            <attr key="compression" type="string">{c}</attr>
            <attr key="originalOutputName" type="string">events</attr>
            <attr key="typeIdentifier" type="string">EVTS</attr>
            <node name="info" path="/mainloop/Recorder/outInfo/0/info/">
                <attr key="sizeX" type="int">346</attr>
                <attr key="sizeY" type="int">260</attr>
                <attr key="source" type="string">DAVIS346_00000499</attr>
            </node>
        </node>
        <node name="1" path="/mainloop/Recorder/outInfo/1/">
            <attr key="typeIdentifier" type="string">FRME</attr>
            <node name="info" path="/mainloop/Recorder/outInfo/1/info/">
                <attr key="sizeX" type="int">346</attr>
                <attr key="sizeY" type="int">260</attr>
            </node>
        </node>
        <node name="2" path="/mainloop/Recorder/outInfo/2/">
            <attr key="typeIdentifier" type="string">IMUS</attr>
        </node>
        <node name="5" path="/mainloop/Recorder/outInfo/5/">
            <attr key="typeIdentifier" type="string">TRIG</attr>
        </node>
    </node>
</dv>
"""

AEDAT4_EVENTS = [
    [(0, 0, 1600000000000000, 1), (345, 259, 1600000000000000, 0), (17, 42, 1600000000000005, 1)],
    [(200, 130, 1600000000000005, 0), (1, 259, 1600000000001000, 1)],
    [(345, 0, 1600000000001001, 0)],
]


def compress(c, data):
    if c in (1, 2):
        return lz4.frame.compress(data, compression_level=0 if c == 1 else 9,
                                  content_checksum=True)
    if c in (3, 4):
        return subprocess.run(["zstd", "-q", "-c", "-%d" % (3 if c == 3 else 19)],
                              input=data, capture_output=True, check=True).stdout
    return data


def aedat4_file(c, cname, with_table):
    packets = [(0, events_packet(AEDAT4_EVENTS[0])), (2, elements_packet(b"IMUS", 3)),
               (1, frame_packet()), (0, events_packet(AEDAT4_EVENTS[1])),
               (5, elements_packet(b"TRIG", 2)), (0, events_packet(AEDAT4_EVENTS[2]))]
    body = b""
    for sid, p in packets:
        z = compress(c, p)
        body += struct.pack("<iI", sid, len(z)) + z
    xml = AEDAT4_XML.format(c=cname)
    hdr_len = len(ioheader(c, -1, xml))
    start = 14 + 4 + hdr_len
    dtp = start + len(body) if with_table else -1
    hdr = ioheader(c, dtp, xml)
    table = b"\x08\0\0\0FTBL\0\0\0\0" if with_table else b""  # the file data table (not read)
    return b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(hdr)) + hdr + body + table, start


def aedat4():
    ev = [e for p in AEDAT4_EVENTS for e in p]
    exp = [(x, y, t, p) for x, y, t, p in ev]
    for c, name, fname, tbl in [(0, "NONE", "aedat4_none.aedat4", True),
                                (1, "LZ4", "aedat4_lz4.aedat4", True),
                                (2, "LZ4_HIGH", "aedat4_lz4high.aedat4", False),
                                (3, "ZSTD", "aedat4_zstd.aedat4", True),
                                (4, "ZSTD_HIGH", "aedat4_zstdhigh.aedat4", False)]:
        data, start = aedat4_file(c, name, tbl)
        write(fname, data)
    expected("aedat4.expected.csv", exp)
    # bad files, from the uncompressed one: (name, bytes); offsets are checked by the C test
    good, start = aedat4_file(0, "NONE", False)
    write("bad_aedat4_truncated.aedat4", good[:-5])
    # a packet of stream 9, which the header does not describe
    bad = bytearray(good)
    struct.pack_into("<i", bad, start, 9)
    write("bad_aedat4_stream.aedat4", bytes(bad))
    # the first packet's vector count far beyond the packet
    bad = bytearray(good)
    fb = start + 8 + 4  # the FlatBuffer after the size prefix; the table's uoffset at 8 + 8
    vec = fb + 16 + struct.unpack_from("<I", good, fb + 16)[0]
    assert struct.unpack_from("<I", bad, vec)[0] == 3
    struct.pack_into("<I", bad, vec, 1000)
    write("bad_aedat4_vector.aedat4", bytes(bad))
    # an event beyond the 346x260 sensor: x = 346 in the second event of packet 0
    bad = bytearray(good)
    struct.pack_into("<h", bad, vec + 4 + 16 + 8, 346)
    write("bad_aedat4_outside.aedat4", bytes(bad))
    # LZ4: one corrupted byte inside the first packet's compressed block
    lz, lstart = aedat4_file(1, "LZ4", False)
    bad = bytearray(lz)
    bad[lstart + 8 + struct.unpack_from("<I", lz, lstart + 4)[0] // 2] ^= 0xFF  # mid-block
    write("bad_aedat4_lz4.aedat4", bytes(bad))


# ---- Prophesee EVT 2.0 ----------------------------------------------------------------------------

def raw_header(v, w, h):
    return ("%% date 2026-12-06 20:00:00\n%% evt %d.0\n%% format EVT%d;height=%d;width=%d\n"
            "%% geometry %dx%d\n%% plugin_name hal_plugin_imx636_evk4\n%% end\n"
            % (v, v, h, w, w, h)).encode()


def evt2():
    w, h = 640, 480
    words, ev = [], []

    def cd(x, y, p, t, base):
        words.append(p << 28 | (t - base) << 22 | x << 11 | y)
        ev.append((x, y, t, p))

    words.append(1 << 28 | 5 << 11 | 5)  # a CD event before the first time high: skipped
    base = 1000 << 6
    words.append(0x8 << 28 | 1000)
    cd(0, 0, 1, base + 3, base)
    cd(639, 479, 0, base + 63, base)
    words.append(0xA << 28 | 7 << 22 | 1 << 8 | 1)  # an external trigger
    base = 1001 << 6
    words.append(0x8 << 28 | 1001)
    cd(320, 240, 1, base, base)
    words.append(0xE << 28 | 0x123)  # OTHER, then CONTINUED
    words.append(0xF << 28 | 0x456)
    # the 28-bit time high wraps: its largest value, then 1 (a new loop, +2^34 us)
    base = 0x0FFFFFFF << 6
    words.append(0x8 << 28 | 0x0FFFFFFF)
    cd(1, 2, 0, base + 10, base)
    base = (1 << 34) + (1 << 6)
    words.append(0x8 << 28 | 1)
    cd(3, 4, 1, base + 1, base)
    # hand-checked: word 0x148a08f0 = CD_ON (0x1), time low 0x12 (bits 27..22 = 0x48 >> 2),
    # x 0x141 = 321 (bits 21..11 = 0xa08 >> 3), y 0xf0 = 240
    assert (1 << 28 | 0x12 << 22 | 321 << 11 | 240) == 0x148A08F0
    data = raw_header(2, w, h) + b"".join(struct.pack("<I", x) for x in words)
    write("evt2.raw", data)
    expected("evt2.expected.csv", ev)
    hl = len(raw_header(2, w, h))
    write("bad_evt2_type.raw", data[:hl + 8] + struct.pack("<I", 0x3 << 28) + data[hl + 8:])
    write("bad_evt2_outside.raw",
          raw_header(2, 320, 240) + struct.pack("<II", 0x8 << 28 | 5, 1 << 28 | 320 << 11 | 3))
    write("bad_evt2_truncated.raw", data[:-2])


# ---- Prophesee EVT 3.0 ----------------------------------------------------------------------------

def evt3():
    w, h = 1280, 720
    ws, ev = [], []
    ws.append(0x2000 | 9)  # an ADDR_X before the first time high: skipped
    hi = 3
    ws.append(0x8000 | hi)
    t = hi << 12 | 0x10
    ws.append(0x6000 | 0x10)  # time low
    ws.append(0x0000 | 700)  # y 700
    ws.append(0x2000 | 1 << 11 | 5)  # x 5, ON
    ev.append((5, 700, t, 1))
    # a vector: base x 100 OFF; VECT_12 bits 0, 3, 11 -> 100, 103, 111; then base 112:
    # VECT_12 bit 0 -> 112; then base 124: VECT_8 bits 1 and 7 -> 125, 131
    ws.append(0x3000 | 0 << 11 | 100)
    ws.append(0x4000 | 1 << 0 | 1 << 3 | 1 << 11)
    ws.append(0x4000 | 1)
    ws.append(0x5000 | 1 << 1 | 1 << 7)
    for x in (100, 103, 111, 112, 125, 131):
        ev.append((x, 700, t, 0))
    ws.append(0xA000 | 3 << 8 | 1)  # external trigger
    ws.append(0xE000 | 0x014)  # OTHERS and a CONTINUED_12 (skipped)
    ws.append(0xF000 | 0x222)
    ws.append(0x0000 | 1 << 11 | 12)  # y 12 (bit 11: system type, ignored)
    t = hi << 12 | 0xFFF
    ws.append(0x6000 | 0xFFF)
    ws.append(0x3000 | 1 << 11 | 1270)  # base 1270 ON, VECT_8 bits 0 and 7
    ws.append(0x5000 | 1 | 1 << 7)
    ev += [(1270, 12, t, 1), (1277, 12, t, 1)]
    # the 12-bit time high runs to 0xFFF, then 2: a new loop (+2^24 us)
    ws.append(0x8000 | 0xFFF)
    ws.append(0x6000 | 1)
    ws.append(0x2000 | 1279)
    ev.append((1279, 12, 0xFFF << 12 | 1, 0))
    ws.append(0x8000 | 2)
    ws.append(0x0000 | 719)
    ws.append(0x2000 | 1 << 11 | 0)  # time = new base, time low not yet given
    ev.append((0, 719, (1 << 24) + (2 << 12), 1))
    ws.append(0x6000 | 0x7)
    ws.append(0x2000 | 1 << 11 | 1)
    ev.append((1, 719, (1 << 24) + (2 << 12) + 7, 1))
    # hand-checked: VECT_12 word 0x4809 = type 4, bits 0, 3, 11
    assert (0x4000 | 1 | 1 << 3 | 1 << 11) == 0x4809
    data = raw_header(3, w, h) + b"".join(struct.pack("<H", x) for x in ws)
    write("evt3.raw", data)
    expected("evt3.expected.csv", ev)
    hl = len(raw_header(3, w, h))
    write("bad_evt3_type.raw", data[:hl + 6] + struct.pack("<H", 0x9000) + data[hl + 6:])
    write("bad_evt3_noy.raw", raw_header(3, w, h) + struct.pack("<HHH", 0x8001, 0x6000, 0x2005))
    write("bad_evt3_outside.raw",
          raw_header(3, 320, 320) + struct.pack("<HHHHH", 0x8001, 0x0005, 0x3000 | 315, 0x4FFF,
                                                0x0001))
    write("bad_evt3_truncated.raw", data[:-1])


# ---- Prophesee .dat ---------------------------------------------------------------------------------

def dat():
    w, h = 304, 240
    hdr = ("%% Data file containing EventCD events.\n%% Version 2\n%% Date 2026-12-06 20:00:00\n"
           "%% Height %d\n%% Width %d\n" % (h, w)).encode()
    ev = [(0, 0, 0, 0), (303, 239, 5, 1), (100, 17, 5, 0), (7, 200, 4000000000, 1)]
    body = b"".join(struct.pack("<II", t, x | y << 14 | p << 28) for x, y, t, p in ev)
    # hand-checked: x 303 (0x12f), y 239 (0xef << 14 = 0x3bc000), ON (bit 28): 0x103bc12f
    assert (303 | 239 << 14 | 1 << 28) == 0x103BC12F
    write("cd.dat", hdr + bytes([12, 8]) + body)
    expected("cd.expected.csv", ev)
    write("bad_dat_bits.dat", hdr + bytes([12, 8]) + body[:8] + struct.pack("<II", 9, 1 << 30 | 3))
    write("bad_dat_type.dat", hdr + bytes([40, 36]) + b"\0" * 36)
    write("bad_dat_outside.dat", hdr + bytes([0, 8]) + struct.pack("<II", 1, 304 | 5 << 14))


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    OUT = ap.parse_args().out
    os.makedirs(OUT, exist_ok=True)
    davis()
    aedat4()
    evt2()
    evt3()
    dat()


if __name__ == "__main__":
    main()
