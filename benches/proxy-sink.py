#!/usr/bin/env python3
"""A body sink for benches/proxy.sh: an HTTP/1.1 server on 127.0.0.1 that reads each
request's whole body (Content-Length), keeps none of it, and only then answers
200 {"received": N}. Keep-alive; a chunked or length-less body with a body gets 411.

Reading the whole body before answering matters: nginx's `return 200` answers while the
body is still arriving, and a proxy would then be measured on an answer that overtook
its own upload.

usage: proxy-sink.py PORT
"""
import asyncio
import sys


class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.head = b""
        self.left = None  # body bytes still to read; None while reading headers
        self.total = 0

    def data_received(self, data):
        view = memoryview(data)
        while len(view):
            if self.left is None:
                self.head += bytes(view)
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.head) > 65536:
                        self.transport.close()
                    return
                view = memoryview(self.head[end + 4 :])
                if not self.start(self.head[:end].decode("latin-1")):
                    return
                self.head = b""
            take = min(len(view), self.left)
            self.left -= take
            self.total += take
            view = view[take:]
            if self.left == 0:
                self.answer(200, b'{"received":%d}' % self.total)
                self.left = None

    def start(self, head):
        """Reads the request head; False when the connection is done with."""
        fields = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self.answer(411, b'{"error":"the sink wants a Content-Length"}')
            self.transport.close()
            return False
        self.left = int(fields.get("content-length", "0"))
        self.total = 0
        return True

    def answer(self, status, body):
        reason = {200: "OK", 411: "Length Required"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, reason.encode(), len(body), body)
        )


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
