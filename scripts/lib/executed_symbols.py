"""The functions of an executable that ran, from a callgrind profile.

Usage: executed_symbols.py PROFILE BINARY > ORDER

PROFILE must be recorded with `valgrind --tool=callgrind --dump-instr=yes`
(instruction addresses, link-time addresses for the executable itself).
Prints the mangled name of every function of BINARY (its `nm` symbol
table) that holds an executed instruction, in address order: a symbol
ordering file for LLD (`--symbol-ordering-file`), which lays those
functions out first and together (bench-link-order; docs/benchmarks.md).
"""
import bisect, os, re, subprocess, sys


def executed_addresses(profile, binary):
    """Addresses of the instructions the profile counts in `binary`."""
    name = os.path.basename(binary)
    objects, current, last, seen = {}, None, 0, set()
    for line in open(profile, errors="replace"):
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.strip())
            if m is None:
                continue
            if m.group(2):
                objects[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                current = objects.get(m.group(1))
        elif line.startswith("0x") or line[:1] in ("+", "-", "*"):
            # Position compression: absolute, relative to the last, or the same.
            token = line.split()[0]
            if token.startswith("0x"):
                last = int(token, 16)
            elif token[0] == "+":
                last += int(token[1:])
            elif token[0] == "-":
                last -= int(token[1:])
            if current is not None and os.path.basename(current) == name:
                seen.add(last)
    return seen


def main():
    profile, binary = sys.argv[1], sys.argv[2]
    nm = subprocess.run(["nm", "--defined-only", "-S", "--numeric-sort", binary],
                        capture_output=True, text=True, check=True).stdout
    functions = []
    for line in nm.splitlines():
        fields = line.split(" ", 3)
        if len(fields) == 4 and fields[2] in "tTwW":
            functions.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    starts = [f[0] for f in functions]
    ran = set()
    for address in executed_addresses(profile, binary):
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < functions[i][0] + functions[i][1]:
            ran.add(i)
    if not ran:
        raise SystemExit(f"{profile} counts no instruction of a function of {binary}")
    for i in sorted(ran):
        print(functions[i][2])


if __name__ == "__main__":
    main()
