"""Echo backends written with Python's asyncio, for tests that need peers ringlb's own tools did
not write (their reads, writes and pacing differ from ours).

Usage: asyncio_echo.py N
Listens on N ephemeral ports of 127.0.0.1 and prints them on one line. On accept, each writes
its name (b0, b1, ...) and a newline, then echoes everything it reads (reads of up to 64 KiB,
writes paced by drain()); at end of stream it half-closes and closes. Exits when its standard
input closes, so it never outlives the test that started it.
"""

import asyncio
import sys


async def serve(reader, writer, name):
    try:
        writer.write(name + b"\n")
        await writer.drain()
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(count):
    servers = []
    for i in range(count):
        name = f"b{i}".encode()
        server = await asyncio.start_server(
            lambda r, w, n=name: serve(r, w, n), "127.0.0.1", 0, backlog=1024
        )
        servers.append(server)
    ports = [str(s.sockets[0].getsockname()[1]) for s in servers]
    print(" ".join(ports), flush=True)
    loop = asyncio.get_running_loop()
    # Standard input closing (the test ended, or died) stops the backends.
    await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
