#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz harness: short scripts an honest peer would play (frames,
enlargements, fragments, close), from which the fuzzers mutate towards the lies. Rerun after a
harness changes its script format: python3 tests/fuzz/make_seeds.py"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA, FRAG_FIRST, FRAG_MORE, FRAG_LAST, PAD, ENLARGE, SHRINK, CLOSE, SWITCHED, DIRECT_OFFER, DIRECT_DONE = range(1, 12)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- receiver: op 0 frame, 1 raw bytes, 2 poll, 3 release, 4 provision, 5 pressure ----
def frame(kind, length=0, request=None, total=None, note=None):
    out = struct.pack("<BBH", 0, kind - 1, length)
    if kind in (ENLARGE, SHRINK):
        out += struct.pack("<QB", request[0], request[1])
    if kind in (DIRECT_OFFER, DIRECT_DONE):
        out += struct.pack("<BI", note[0], note[1])  # offer id, message length
    out += struct.pack("<B", 1)  # honest sequence number
    if kind == FRAG_FIRST:
        out += struct.pack("<I", total)
    return out


POLL, RELEASE0 = b"\x02", b"\x03\x00"
write("receiver", "data", frame(DATA, 100) + frame(DATA, 0) + frame(DATA, 1500) + POLL + RELEASE0 + RELEASE0 + POLL)
write("receiver", "enlarge", frame(ENLARGE, request=(1, 1)) + POLL + b"\x04\x01" + frame(DATA, 20000) + POLL
      + RELEASE0 + frame(SHRINK, request=(2, 0)) + POLL + b"\x04\x01" + frame(DATA, 10) + POLL)
write("receiver", "denied", frame(ENLARGE, request=(1, 2)) + POLL + b"\x04\x00" + frame(DATA, 8) + POLL)
write("receiver", "fragments", frame(FRAG_FIRST, 2000, total=4984) + frame(FRAG_MORE, 1992) + POLL + RELEASE0
      + frame(FRAG_LAST, 1000) + POLL + RELEASE0 + RELEASE0)
write("receiver", "close", frame(DATA, 64) + frame(CLOSE) + POLL)
write("receiver", "wrap", (frame(DATA, 1000) + POLL + RELEASE0) * 5 + frame(PAD) + frame(DATA, 8) + POLL)
write("receiver", "scribble", frame(DATA, 100) + b"\x01" + struct.pack("<IB", 8, 4) + b"\xff\x00\x00\x00" + POLL)
write("receiver", "direct", frame(DIRECT_OFFER, note=(1, 600000)) + POLL + RELEASE0
      + frame(DIRECT_DONE, note=(1, 600000)) + POLL + RELEASE0 + frame(DIRECT_OFFER, note=(2, 700000)) + POLL
      + frame(DIRECT_DONE, note=(2, 700000)) + frame(DATA, 8) + POLL + RELEASE0 + RELEASE0 + RELEASE0)
write("receiver", "direct-declined", frame(DIRECT_OFFER, note=(1, 2984)) + POLL + RELEASE0
      + frame(FRAG_FIRST, 1000, total=2984) + frame(FRAG_MORE, 992) + POLL + RELEASE0 + frame(FRAG_LAST, 1000)
      + POLL + RELEASE0 + RELEASE0)
write("receiver", "pressure", b"\x05\x01" + frame(DATA, 8) + POLL + b"\x05\x00" + POLL)


# ---- frame: tier, cursor slot, whether the harness fixes the slot count, then the frame's bytes ----
def header(seq, length, kind, slots):
    return struct.pack("<IIBBHI", seq, length, kind, 0, slots, seq)  # the last word repeats seq


def slots_for(length, slot_size):
    span = 16 + ((length + 7) & ~7) + 8
    return (span + slot_size - 1) // slot_size


for tier, slot_size in ((0, 256), (1, 4096)):
    body = header(1, 100, DATA, slots_for(100, slot_size)) + b"\xab" * 104 + struct.pack("<II", 1, 0)
    write("frame", f"data-tier{tier}", struct.pack("<BBB", tier, 0, 0) + body)
largest = 8 * 256 - 16 - 8  # half of tier 0's ring: the longest frame it allows
write("frame", "data-largest", struct.pack("<BBB", 0, 0, 1) + header(1, largest, DATA, 8) + b"\x00" * largest
      + struct.pack("<II", 1, 0))
write("frame", "pad", struct.pack("<BBB", 0, 12, 0) + header(5, 0, PAD, 4))
write("frame", "enlarge", struct.pack("<BBB", 0, 3, 1) + header(2, 16, ENLARGE, 1) + struct.pack("<QII", 9, 1, 0)
      + struct.pack("<II", 2, 0))
write("frame", "frag-first", struct.pack("<BBB", 0, 0, 1) + header(1, 1000, FRAG_FIRST, slots_for(1000, 256))
      + struct.pack("<Q", 5000) + b"\x01" * 992 + struct.pack("<II", 1, 0))
write("frame", "close", struct.pack("<BBB", 0, 7, 1) + header(3, 0, CLOSE, 1) + struct.pack("<II", 3, 0))


# ---- control: op 0 submit, 1 scribble, 2 honest ack, 3 honest credit, 4 time, 5 cancel, 6 close, 7 flags,
# 8 answer the last offer, 9 receipt for the last DONE ----
def submit(n):
    return struct.pack("<BI", 0, n)


ACK_GRANTED, ACK_DENIED, CREDIT = b"\x02\x01\x01\x07", b"\x02\x00\x01\x07", b"\x03"
write("control", "small", submit(100) + CREDIT + submit(1000) + CREDIT + b"\x06" + CREDIT)
write("control", "enlarge", submit(10000) + ACK_GRANTED + CREDIT + submit(20000) + CREDIT)
write("control", "denied", submit(10000) + ACK_DENIED + CREDIT * 4)
write("control", "timeout", submit(10000) + b"\x04\xff\xff" * 4 + submit(8))
write("control", "lying-ack", submit(10000) + b"\x02\x01\x01\x00" + struct.pack("<Q", 12345))
write("control", "shrink", submit(10000) + ACK_GRANTED + CREDIT + b"\x04\xff\xff" * 30 + b"\x02\x01\x00\x07" + CREDIT)
write("control", "pressure", submit(10000) + ACK_GRANTED + CREDIT + b"\x07\x01" + b"\x04\xff\xff" + b"\x02\x01\x00\x07")
write("control", "cancel", submit(10000) + submit(5) + b"\x05\x02" + ACK_DENIED + CREDIT)
# Messages above 128 KiB are offered for direct placement.
GRANT, DECLINE, RECEIPT = b"\x08\x01\x02", b"\x08\x00\x02", b"\x09"
write("control", "direct", submit(200000) + CREDIT + GRANT + CREDIT + RECEIPT + CREDIT + b"\x06" + CREDIT)
write("control", "direct-declined", submit(200000) + CREDIT + DECLINE + CREDIT + ACK_GRANTED + CREDIT * 4)
write("control", "direct-pipelined", submit(200000) + submit(150000) + submit(100) + CREDIT + GRANT + CREDIT + GRANT
      + CREDIT + RECEIPT + CREDIT)
write("control", "direct-cancel", submit(200000) + submit(5) + b"\x05\x01" + GRANT + CREDIT + b"\x05\x02" + RECEIPT
      + CREDIT)
