"""python-hl7's asyncio MLLP server as a peer: parses each message and answers AA.

Stores nothing. Used by the interop test and the benchmarks. Prints its port on the first
line of standard output. Usage: python3 python_hl7_server.py [PORT]  (0 = any free port)
"""

import asyncio
import sys

import hl7
from hl7.mllp import start_hl7_server


async def process(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await start_hl7_server(
        process, host="127.0.0.1", port=port, limit=1024 * 1024, encoding="utf-8", encoding_errors="replace"
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
