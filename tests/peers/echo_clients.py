"""Concurrent echo clients written in Python (threads, blocking sockets), for tests that need
a client ringlb's own tools did not write.

Usage: echo_clients.py PORT SEED ROUNDS
Each round starts 48 clients at once with payloads of 0 B, 1 B, 1,460 B, 64 KiB, 16 MiB and 43
sizes drawn from 1 B to 4 MiB (from SEED). Each client sends its payload from one thread while
another reads, half-closes, reads to end of stream, and checks that it got a name line
(b0, b1, ...) followed by its exact bytes. Prints one line per failed client and a summary
line "clients N failed F"; exits 1 when any failed.
"""

import random
import socket
import sys
import threading

EDGE_SIZES = [0, 1, 1460, 64 << 10, 16 << 20]
CLIENTS = 48


def client(port, size, rng_seed, failures, lock):
    payload = random.Random(rng_seed).randbytes(size)
    got = bytearray()
    error = []
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)

        def read():
            try:
                while True:
                    data = s.recv(1 << 20)
                    if not data:
                        return
                    got.extend(data)
            except OSError as e:
                error.append(f"read: {e!r}")

        reader = threading.Thread(target=read)
        reader.start()
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            error.append(f"write: {e!r}")
        reader.join()
        s.close()
    except OSError as e:
        error.append(f"connect: {e!r}")
    newline = got.find(b"\n")
    if not error:
        if newline < 0 or not got[:newline].startswith(b"b"):
            error.append(f"no name line in {len(got)} bytes")
        elif bytes(got[newline + 1:]) != payload:
            error.append(f"echo differs: {len(got) - newline - 1} bytes back")
    if error:
        with lock:
            failures.append(f"{size} B: {'; '.join(error)}")


def main():
    port, seed, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    failures, lock = [], threading.Lock()
    total = 0
    for _ in range(rounds):
        sizes = EDGE_SIZES + [rng.randint(1, 4 << 20) for _ in range(CLIENTS - len(EDGE_SIZES))]
        threads = [
            threading.Thread(target=client, args=(port, n, rng.getrandbits(64), failures, lock))
            for n in sizes
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total += len(sizes)
    for f in failures:
        print(f"failed: {f}")
    print(f"clients {total} failed {len(failures)}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
