#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that adds latency, for benchmarks only
(scripts/bench-s3-listing.sh): every byte is forwarded unchanged, each
direction delayed by half of --rtt-ms, so a request and its answer take
--rtt-ms longer, as over a network link of that round trip. Data keeps
flowing meanwhile (bytes are queued with the time they may leave, not
slept on), so it adds latency, not a bandwidth limit.

    bench-lag-proxy.py --listen PORTFILE --upstream PORT --rtt-ms 20

It binds an ephemeral port, writes it to PORTFILE, and runs until killed.
"""
import argparse
import asyncio
import time


async def pipe(reader, writer, delay):
    """Forward reader to writer, each chunk `delay` seconds late."""
    q = asyncio.Queue()

    async def pump():
        while True:
            data = await reader.read(1 << 16)
            q.put_nowait((time.monotonic() + delay, data))
            if not data:
                return

    task = asyncio.ensure_future(pump())
    try:
        while True:
            due, data = await q.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        task.cancel()
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="file to write the bound port to")
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    a = ap.parse_args()
    delay = a.rtt_ms / 2000.0

    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", a.upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pipe(cr, uw, delay), pipe(ur, cw, delay))
        for w in (cw, uw):
            try:
                w.close()
            except OSError:
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(a.listen + ".tmp", "w") as f:
        f.write(f"{port}\n")
    import os
    os.replace(a.listen + ".tmp", a.listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
