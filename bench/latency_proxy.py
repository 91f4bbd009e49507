"""A TCP proxy that delays every byte by a fixed time in each direction: a remote bucket's
round trip in front of a local S3 test server (the kernel here has no netem).

Each chunk read from one side is written to the other side `delay_ms` after it arrived, in
order; chunks of one connection overlap their delays (a stream of bytes is delayed, not
throttled), and connections are independent, so concurrent requests wait concurrently, as they
do against a real bucket.

    python bench/latency_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import sys
import time


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if chunk is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            chunk = await reader.read(1 << 20)
            if not chunk:
                break
            queue.put_nowait((time.monotonic() + delay_s, chunk))
    except ConnectionError:
        pass
    finally:
        queue.put_nowait((0.0, None))
        try:
            await delivering
        except ConnectionError:
            pass


async def main(listen_port: int, target_port: int, delay_ms: float) -> None:
    delay_s = delay_ms / 1000

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w, delay_s), pipe(server_r, client_w, delay_s),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
