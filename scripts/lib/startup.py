"""Start-up and idle memory of HTTP servers, interleaved (bench-startup,
bench-link-order; see docs/benchmarks.md).

Usage: startup.py STARTS NAME=BINARY:READY-PATH...

For each server, STARTS times, interleaved with the others: exec → first
200 on READY-PATH (polled every 0.1 ms), the minor page faults up to it,
then after 100 requests to /index the resident set (VmRSS) and its parts
RssFile and RssAnon. Prints the medians as a table, with each server's
ratio to the first one.

Each binary's pages are dropped from the page cache first: how many pages
the kernel maps around a fault depends on the size of the cached folios,
and those depend on how the file entered the cache (written by the linker,
copied, or read ahead at a fault). Dropped, every binary is read back the
same way, by the first start's faults.
"""
import os, socket, statistics, subprocess, sys, time

PORT = 50120


def ready(path):
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=0.2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_mb(pid):
    """VmRSS, RssFile and RssAnon of `pid`, in MB."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        name, _, value = line.partition(":")
        fields[name] = value
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "RssFile", "RssAnon"))


def minor_faults(pid):
    # Field 10 of /proc/PID/stat (after the parenthesised command name).
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])


def one(binary, path):
    env = dict(os.environ, PATRON_HTTP_DEFAULT_PORT=str(PORT), PATRON_HTTP_HOST="127.0.0.1")
    t0 = time.perf_counter()
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready(path):
            if p.poll() is not None:
                raise SystemExit(f"{binary} exited with {p.returncode} before answering")
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"{binary} did not answer {path} within 30 s")
            time.sleep(0.0001)
        started = time.perf_counter() - t0
        faults = minor_faults(p.pid)
        for _ in range(100):
            ready("/index")
        return (started * 1000, faults, *rss_mb(p.pid))
    finally:
        p.terminate()
        p.wait()


def evict(binary):
    """Drops `binary`'s pages from the page cache (written back first: a
    freshly linked or copied file's pages are dirty, and dirty pages stay)."""
    fd = os.open(binary, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main():
    starts = int(sys.argv[1])
    servers = []
    for arg in sys.argv[2:]:
        name, _, rest = arg.partition("=")
        binary, _, path = rest.rpartition(":")
        if not name or not binary or not path:
            raise SystemExit(f"expected NAME=BINARY:READY-PATH, got {arg!r}")
        servers.append((name, binary, path))
    for _, binary, _ in servers:
        evict(binary)
    results = {}
    for _ in range(starts):  # interleaved
        for name, binary, path in servers:
            results.setdefault(name, []).append(one(binary, path))
    med = {n: tuple(statistics.median(r[i] for r in rs) for i in range(5))
           for n, rs in results.items()}
    print(f"Start-up and idle memory, median of {starts} interleaved starts:")
    print()
    print("| server | exec → first 200 | page faults to first 200 | idle RSS | of it file-backed | of it anonymous |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in servers:
        ms, faults, rss, file, anon = med[name]
        print(f"| {name} | {ms:.1f} ms | {faults:.0f} | {rss:.1f} MB | {file:.1f} MB | {anon:.2f} MB |")
    base = servers[0][0]
    for name, _, _ in servers[1:]:
        a, h = med[base], med[name]
        print(f"| ratio {name} / {base} | " + " | ".join(f"{h[i] / a[i]:.2f}" for i in range(5)) + " |")


main()
