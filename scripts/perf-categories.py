#!/usr/bin/env python3
"""Where a server's CPU went, by category, from a `perf record` file.

    python3 scripts/perf-categories.py perf.data [REQUESTS_PER_S SECONDS]

Sums perf's flat profile (self time per symbol) into a few categories. With
the request rate and the recorded seconds, also prints each category as CPU
microseconds per request (samples are taken at the `-F` rate the recording
used, read from the file's header).
"""
import re
import subprocess
import sys

CATEGORIES = [
    ("SQLite (incl. its file-lock syscalls)", r"sqlite3|^pcache|^wal[A-Z]|^btree|^pager|^unix[A-Z]|rusqlite|Vdbe|^vdbe|getPage|moveToChild|allocateCursor|releaseMem|posix_lock|fcntl|locks_|do_lock_file"),
    ("Redis client (RESP, scripts)", r"^<?redis::|combine::|sessiond::store::redis"),
    ("kernel: TCP/loopback, epoll", r"K:.*(tcp|ip_|skb|sock|inet|net_|__dev|loopback|netif|napi|softirq|sk_|dst_|nf_|ep_|epoll|eventfd|__sys_(send|recv)|sendmsg|recvmsg|copy_(to|from)_user|_copy|rep_movs|neigh|raw_spin_lock_bh)"),
    ("kernel: scheduling, wakeups, other", r"^K:"),
    ("malloc/free (glibc or mimalloc), memcpy", r"^(__)?(lib)?(malloc|free|cfree|_int_|realloc|calloc|unlink_chunk|malloc_consolidate|__memmove|__memcpy|__memset|__memcmp|tcache)|^_?mi_"),
    ("HTTP/2 (h2, hyper, http)", r"(^|<|&)(h2|hyper|hyper_util|http|httparse|http_body|bytes)::"),
    ("tonic, prost", r"tonic|prost|SessionServiceServer|pb::"),
    ("tokio runtime, clocks, futex", r"tokio|mio::|parking_lot|std::sys::sync|pthread|syscall|futex|__vdso|clock_gettime|Timespec"),
    ("sessiond per-call layers (calls, net, metrics)", r"sessiond::(grpc::calls|net|telemetry|otel)|metrics|tracing|Instrumented|tower|axum|matchit|crossbeam|quanta"),
    ("sessiond handler, token digest, cache", r"sessiond|base64|sha2|Sha256|hashbrown|hash::|Hasher"),
]


def main():
    data = sys.argv[1]
    header = subprocess.run(["perf", "report", "-i", data, "--header-only"], capture_output=True, text=True).stdout
    freq = re.search(r"sample_freq \} = (\d+)", header)
    freq = int(freq.group(1)) if freq else None
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "-n", "--sort", "dso,symbol", "--stdio", "-g", "none"],
        capture_output=True, text=True).stdout
    totals = {name: 0.0 for name, _ in CATEGORIES}
    totals["other"] = 0.0
    n_samples = 0
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(3), m.group(4), m.group(5).strip()
        n_samples += int(m.group(2))
        key = ("K:" if kind == "k" else "") + sym
        for name, pattern in CATEGORIES:
            if re.search(pattern, key if kind == "k" else sym):
                totals[name] += pct
                break
        else:
            totals["other"] += pct
    per_request = None
    if len(sys.argv) == 4 and freq and n_samples:
        rate, seconds = float(sys.argv[2]), float(sys.argv[3])
        cpu_us = n_samples / freq * 1e6
        per_request = cpu_us / (rate * seconds)
        print(f"{per_request:.1f} us of CPU per request in all ({n_samples} samples at {freq} Hz)")
    for name, pct in totals.items():
        extra = f"  {pct * per_request / 100:5.1f} us/request" if per_request else ""
        print(f"{pct:5.1f}%{extra}  {name}")


if __name__ == "__main__":
    main()
