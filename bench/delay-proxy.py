#!/usr/bin/env python3
"""A TCP proxy that adds a fixed delay to every request: a stand-in for a KMS or HSM
reached over a network link, in front of a local server (moto).

    delay-proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT DELAY_MS

Each chunk the client sends is held DELAY_MS before it is passed on (an HTTP request of
an AWS SDK call is one chunk), so every call costs one extra DELAY_MS, as a round trip
over a slower link would. Answers pass through at once. Standard library only; prints
"listening" on stdout once it accepts connections.
"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main(port, target, delay):
    host, tport = target.rsplit(":", 1)

    async def handle(creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection(host, int(tport))
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pipe(creader, swriter, delay), pipe(sreader, cwriter, 0))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) / 1000))
