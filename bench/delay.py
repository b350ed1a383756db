#!/usr/bin/env python3
"""A TCP forwarder that adds a fixed delay each way: a slow link without a kernel qdisc.

    python3 bench/delay.py --delay-ms 25 127.4.0.1:2222=127.2.0.1:2222 [LISTEN=TARGET ...]

Every chunk read on one side is written to the other `--delay-ms` later, in order, whatever
the load: with 25 ms each way a round trip costs 50 ms more, as to another site or cloud
region. The bandwidth is not limited. It prints `ready` once every address listens, and runs
until it is stopped (SIGTERM). bench/bench.py starts it for its latency case.
"""

import argparse
import asyncio
import signal
import sys
import time


async def pump(reader, writer, delay):
    """Copies reader to writer, each chunk `delay` seconds after it arrived."""
    q = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(65536)
                await q.put((time.monotonic() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await q.put((time.monotonic() + delay, b""))

    async def write():
        try:
            while True:
                due, data = await q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    await asyncio.gather(read(), write())


async def serve(listen, target, delay):
    lh, lp = listen.rsplit(":", 1)
    th, tp = target.rsplit(":", 1)

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection(th, int(tp))
        except OSError:
            cw.close()
            return
        try:
            await asyncio.gather(pump(cr, sw, delay), pump(sr, cw, delay))
        except asyncio.CancelledError:
            pass   # stopped with the forwarder
        for w in (cw, sw):
            w.close()

    return await asyncio.start_server(handle, lh, int(lp), reuse_address=True, backlog=1024)


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay-ms", type=float, required=True, help="delay added in each direction")
    ap.add_argument("pairs", nargs="+", metavar="LISTEN=TARGET", help="host:port=host:port")
    a = ap.parse_args()
    servers = []
    for p in a.pairs:
        listen, _, target = p.partition("=")
        servers.append(await serve(listen, target, a.delay_ms / 1000))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
