#!/usr/bin/env python3
"""A TLS listener in front of a plain TCP service, for the Kafka-over-TLS test.

    python3 tests/tls-front.py CERT KEY LISTEN_PORT TARGET_PORT

Accepts TLS on 127.0.0.1:LISTEN_PORT with CERT and KEY (PEM), and forwards the decrypted
bytes of each connection to 127.0.0.1:TARGET_PORT and back, as a TLS-terminating proxy in
front of a broker does. Prints "listening" once it accepts connections.
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer, target):
    try:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))


async def main():
    cert, key, listen, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, target), "127.0.0.1", listen, ssl=context
    )
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
