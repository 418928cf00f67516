"""A linker script that lays out first the code a recorded run executed.

Usage: hot_text.py BINARY MAP PROFILE... [-- BINARY MAP PROFILE...]... > hot-text.ld

Each PROFILE is a `valgrind --tool=callgrind --dump-instr=yes` record of
the BINARY before it, MAP the link map of the same link (`-Wl,-Map=MAP`);
`--` starts another binary's group (another example: a consumer service
runs code an HTTP one does not). The sections the first profile ran come
first, then those only the second ran, and so on through the groups: a
run that does less (no trace export, say) then touches one stretch at the
start of the section. Every executed instruction is mapped to the
input section it came from (rustc and cc put each function in a section
of its own, `.text.<symbol>` or, for cold functions,
`.text.unlikely.<symbol>`), and each such section becomes one
input-section pattern of an output section `.text.hot` inserted before
`.text`. What changes with the toolchain, the lockfile, the features and
the flags is a wildcard in the patterns, so the script still lays out the
same functions in a build other than the recorded one: in a v0 name (the
names patron records, `-Csymbol-mangling-version=v0`) the crate
disambiguators (`Cs<id>_`), the back-references (`B<offset>_`, offsets
into the name that move when a disambiguator's length does) and an
`.llvm.<n>` suffix; in a legacy name the hash that ends it (`17h<16 hex
digits>E`, with any `.llvm.<n>`). A v0 name carries a generic function's
type parameters, so a pattern takes the instances that ran; a legacy one
does not, and takes every instance. A generic instance compiled in the
recorded example's own crate ends with that crate's name in v0; its
pattern takes any crate there, as the same instance is compiled in each
service's own crate.

The input sections are sections the linker lays out by name. Sections with
the plain name `.text` (start-up files, objects built without function
sections) cannot be told apart and are left where they are. docs/deploy.md
and docs/benchmarks.md ("Link order") say what the script buys.
"""
import bisect
import os
import re
import sys

from executed_symbols import executed_addresses

# An input section line of LLD's map: VMA, LMA, size, alignment, then
# `file:(section)`.
MAP_LINE = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S.*:\((\.text[^)]*)\)$")
RUST_HASH = re.compile(r"17h[0-9a-f]{16}E(\.llvm\.\d+)?$")
# In a v0 name: a crate disambiguator, and a back-reference (an offset into
# the name, which moves when a disambiguator before it is longer or
# shorter).
CRATE_ID = re.compile(r"Cs[0-9A-Za-z]+_")
BACK_REF = re.compile(r"B[0-9A-Za-z]*_")
LLVM_SUFFIX = re.compile(r"\.llvm\.\d+$")


def input_sections(map_file):
    """(address, size, name) of every `.text*` input section, by address."""
    sections = []
    for line in open(map_file, errors="replace"):
        m = MAP_LINE.match(line.rstrip("\n"))
        if m:
            sections.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    sections.sort()
    return sections


def pattern(section, crate):
    """The section's name with what changes between builds a wildcard, or
    None when no pattern can single it out. `crate` is the recorded
    binary's crate: a generic instance compiled in it, whose v0 name ends
    with that crate, is compiled in the service's own crate in another
    service, so the pattern takes any crate there."""
    if section == ".text" or any(c in section for c in "*?[]() \"\\"):
        return None
    if section.startswith((".text._ZN", ".text.unlikely._ZN")):
        return RUST_HASH.sub("17h*", section)
    if section.startswith((".text._R", ".text.unlikely._R")):
        p = BACK_REF.sub("B*_", CRATE_ID.sub("Cs*_", LLVM_SUFFIX.sub("*", section)))
        own = f"Cs*_{len(crate)}{crate}"
        if p.endswith((own, own + "*")):
            p = p[: p.rindex(own)] + "Cs*_*"
        return p
    return section


def sections_run(profile, binary, sections, starts):
    """Indices of the input sections holding an instruction `profile` counts."""
    ran = set()
    for address in executed_addresses(profile, binary):
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < sections[i][0] + sections[i][1]:
            ran.add(i)
    return ran


def recordings(args):
    """(binary, map, profiles) groups of the command line, split at `--`."""
    groups, group = [], []
    for arg in args + ["--"]:
        if arg != "--":
            group.append(arg)
            continue
        if len(group) < 3:
            raise SystemExit("usage: hot_text.py BINARY MAP PROFILE... [-- BINARY MAP PROFILE...]...")
        groups.append((group[0], group[1], group[2:]))
        group = []
    return groups


def main():
    groups, seen = [], set()
    for binary, map_file, profiles in recordings(sys.argv[1:]):
        # An example's binary is named for its crate.
        crate = os.path.basename(binary)
        sections = input_sections(map_file)
        if not sections:
            raise SystemExit(f"{map_file} lists no .text input section: not an LLD map?")
        starts = [s[0] for s in sections]
        for profile in profiles:
            ran = sections_run(profile, binary, sections, starts)
            if not ran:
                raise SystemExit(f"{profile} counts no instruction of {binary}'s sections in {map_file}")
            group = []
            for i in sorted(ran):
                p = pattern(sections[i][2], crate)
                if p is not None and p not in seen:
                    seen.add(p)
                    group.append(p)
            print(f"{profile}: {len(ran)} input sections ran, {len(group)} new patterns",
                  file=sys.stderr)
            if group:
                groups.append(group)
    # One input-section description per profile, holding all its patterns:
    # the linker walks the input sections once per description, so a
    # description per pattern made the link ten times slower (12 s against
    # 1.1-1.7 s for hello). Within a description the sections keep their
    # input order, the order they ran in the recorded build's address order.
    print("SECTIONS\n{\n  .text.hot : {")
    for group in groups:
        print("    *(")
        for p in group:
            print(f"      {p}")
        print("    )")
    print("  }\n}\nINSERT BEFORE .text;")


if __name__ == "__main__":
    main()
