"""A linker script that lays out first the code a recorded run executed.

Usage: hot_text.py BINARY MAP PROFILE... > hot-text.ld

Each PROFILE is a `valgrind --tool=callgrind --dump-instr=yes` record of
BINARY, MAP the link map of the same link (`-Wl,-Map=MAP`). The sections
the first profile ran come first, in address order, then those only the
second ran, and so on: a run that does less (no trace export, say) then
touches one stretch at the start of the section. Every executed
instruction is mapped to the input section it came from (rustc and cc put
each function in a section of its own, `.text.<symbol>` or, for cold
functions, `.text.unlikely.<symbol>`), and each such section becomes one
input-section pattern of an output section `.text.hot` inserted before
`.text`. The hash that ends a Rust symbol (`17h<16 hex digits>E`, with any
`.llvm.<n>` suffix) and the crate disambiguators of v0 names (`Cs<id>_`)
change with the toolchain, the lockfile, the features and the flags; the
patterns end in a wildcard instead, so the script still lays out the same
functions in a build other than the recorded one. A pattern also matches
the other instances of a generic function (legacy names do not carry type
parameters), which makes the section larger than what ran.

The input sections are sections the linker lays out by name. Sections with
the plain name `.text` (start-up files, objects built without function
sections) cannot be told apart and are left where they are. docs/deploy.md
and docs/benchmarks.md ("Link order") say what the script buys.
"""
import bisect
import re
import sys

from executed_symbols import executed_addresses

# An input section line of LLD's map: VMA, LMA, size, alignment, then
# `file:(section)`.
MAP_LINE = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S.*:\((\.text[^)]*)\)$")
RUST_HASH = re.compile(r"17h[0-9a-f]{16}E(\.llvm\.\d+)?$")
CRATE_ID = re.compile(r"Cs[0-9A-Za-z]+_")


def input_sections(map_file):
    """(address, size, name) of every `.text*` input section, by address."""
    sections = []
    for line in open(map_file, errors="replace"):
        m = MAP_LINE.match(line.rstrip("\n"))
        if m:
            sections.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    sections.sort()
    return sections


def pattern(section):
    """The section's name with what changes between builds a wildcard, or
    None when no pattern can single it out."""
    if section == ".text" or any(c in section for c in "*?[]() \"\\"):
        return None
    if section.startswith((".text._ZN", ".text.unlikely._ZN")):
        return RUST_HASH.sub("17h*", section)
    if section.startswith((".text._R", ".text.unlikely._R")):
        return CRATE_ID.sub("Cs*_", section)
    return section


def sections_run(profile, binary, sections, starts):
    """Indices of the input sections holding an instruction `profile` counts."""
    ran = set()
    for address in executed_addresses(profile, binary):
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < sections[i][0] + sections[i][1]:
            ran.add(i)
    return ran


def main():
    if len(sys.argv) < 4:
        raise SystemExit("usage: hot_text.py BINARY MAP PROFILE...")
    binary, map_file, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    sections = input_sections(map_file)
    if not sections:
        raise SystemExit(f"{map_file} lists no .text input section: not an LLD map?")
    starts = [s[0] for s in sections]
    patterns, seen = [], set()
    for profile in profiles:
        ran = sections_run(profile, binary, sections, starts)
        if not ran:
            raise SystemExit(f"{profile} counts no instruction of {binary}'s sections in {map_file}")
        before = len(patterns)
        for i in sorted(ran):
            p = pattern(sections[i][2])
            if p is not None and p not in seen:
                seen.add(p)
                patterns.append(p)
        print(f"{profile}: {len(ran)} input sections ran, {len(patterns) - before} new patterns",
              file=sys.stderr)
    print("SECTIONS\n{\n  .text.hot : {")
    for p in patterns:
        print(f"    *({p})")
    print("  }\n}\nINSERT BEFORE .text;")


if __name__ == "__main__":
    main()
