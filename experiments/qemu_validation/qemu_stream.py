"""Read a captured QEMU migration stream (run_migration.py --capture): which guest pages were sent,
in order, and what they held.

Precopy stream, QEMU 10 (migration/savevm.c, migration/ram.c), without multifd, XBZRLE or
compression: the file magic and version, a configuration section, then the "ram" section: START
(its blocks and their sizes), one PART per ram_save_iterate call, END at completion, then the
devices' FULL sections (not read). RAM data is a run of big-endian 64-bit headers, page offset |
flags: ZERO (0x02, one fill byte follows), PAGE (0x08, the page follows), EOS (0x10, ends the
part), CONTINUE (0x20: same block as the previous page; else the block's name follows),
MULTIFD_FLUSH (0x200). Each section ends with a footer (0x7e, section id).

    python experiments/qemu_validation/qemu_stream.py STREAM   # a summary
"""
import struct
import sys

import numpy as np

PAGE = 4096
F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE, F_XBZRLE, F_FLUSH = 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x200
S_START, S_PART, S_END, S_FULL, S_FOOTER = 0x01, 0x02, 0x03, 0x04, 0x7E


def dirtier_page(data):
    """A page the guest's dirtier filled: consecutive 8-byte words step by one (a few words the
    dirtier overwrote since do not)."""
    w = np.frombuffer(data, dtype="<u8")
    return np.count_nonzero(np.diff(w) == 1) > 400


def parse(path):
    """(pages, parts): pages is a structured array (part, block, offset, zero, dirtier) in the order
    sent; parts the number of RAM sections (one per ram_save_iterate call, then the final one)."""
    data = open(path, "rb").read()
    if data[:4] != b"QEVM":
        raise ValueError(f"{path}: not a QEMU migration stream")
    start = data.find(b"\x03ram")
    if start < 5 or data[start - 5] != S_START:
        raise ValueError(f"{path}: no ram section")
    pos = start + 4 + 8  # name, instance id, version id
    sid = struct.unpack_from(">I", data, start - 4)[0]
    hdr = struct.unpack_from(">Q", data, pos)[0]
    pos += 8
    assert hdr & F_MEM_SIZE, "ram section does not start with its blocks"
    total = hdr & ~0xFFF
    blocks, seen = [], 0
    while seen < total:
        n = data[pos]
        name = data[pos + 1:pos + 1 + n].decode()
        size = struct.unpack_from(">Q", data, pos + 1 + n)[0]
        pos += 1 + n + 8
        blocks.append((name, size))
        seen += size
    out, part, block = [], 0, None
    names = {name: i for i, (name, _) in enumerate(blocks)}
    while True:  # the rest of the START section, then PART / END sections
        hdr = struct.unpack_from(">Q", data, pos)[0]
        pos += 8
        flags, addr = hdr & 0xFFF, hdr & ~0xFFF
        if flags & F_EOS:
            if data[pos] == S_FOOTER:
                pos += 5
            kind = data[pos]
            if kind not in (S_PART, S_END) or struct.unpack_from(">I", data, pos + 1)[0] != sid:
                break  # the devices' sections: the RAM is done
            pos += 5
            part += 1
            continue
        if flags & F_FLUSH and not flags & (F_ZERO | F_PAGE):
            continue
        if flags & F_XBZRLE:
            raise ValueError("XBZRLE pages are not read here")
        if not flags & F_CONTINUE:
            n = data[pos]
            block = names[data[pos + 1:pos + 1 + n].decode()]
            pos += 1 + n
        if flags & F_ZERO:
            out.append((part, block, addr // PAGE, True, False))
            pos += 1
        elif flags & F_PAGE:
            out.append((part, block, addr // PAGE, False, dirtier_page(data[pos:pos + PAGE])))
            pos += PAGE
        else:
            raise ValueError(f"{path}: unknown RAM header flags {flags:#x} at byte {pos - 8}")
    pages = np.array(out, dtype=[("part", "i4"), ("block", "i2"), ("page", "i8"), ("zero", "?"), ("dirtier", "?")])
    return pages, part, blocks


def main(path):
    pages, parts, blocks = parse(path)
    ram = pages[pages["block"] == 0]
    normal = ram[~ram["zero"]]
    print(f"{len(pages)} pages in {parts} sections; blocks {blocks[:3]}...")
    print(f"pc.ram: {len(normal)} normal pages sent, {int(normal['dirtier'].sum())} of them the dirtier's, "
          f"{int((~normal['dirtier']).sum())} other; zero pages {int(ram['zero'].sum())}")
    other = normal[~normal["dirtier"]]
    u, c = np.unique(other["page"], return_counts=True)
    print(f"other pages: {len(u)} distinct; sent once {int((c == 1).sum())}, twice {int((c == 2).sum())}, "
          f"3-9 times {int(((c >= 3) & (c < 10)).sum())}, 10+ times {int((c >= 10).sum())} "
          f"(max {int(c.max()) if len(c) else 0})")
    return pages


if __name__ == "__main__":
    main(sys.argv[1])
