import type { Socket } from "node:net";

/** The HTTP/2 client connection preface (RFC 9113 section 3.4). */
export const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** What the first bytes of a cleartext connection say about its protocol. */
export type SniffedProtocol = "h2" | "http1";

/**
 * Compares the bytes received so far with the HTTP/2 preface. Returns the
 * protocol once it is certain, or undefined while the bytes are a strict
 * prefix of the preface (more bytes needed).
 */
export function classifyPrefix(received: Buffer): SniffedProtocol | undefined {
  const n = Math.min(received.length, HTTP2_PREFACE.length);
  // A single differing byte rules HTTP/2 out: HTTP/1.1 request lines never
  // start with the preface ("PRI" is not a method anyone serves).
  if (received.compare(HTTP2_PREFACE, 0, n, 0, n) !== 0) return "http1";
  return n === HTTP2_PREFACE.length ? "h2" : undefined;
}

/**
 * Reads from a fresh cleartext socket until its protocol is known, then puts
 * every byte read back (unshift) and leaves the socket paused, so the HTTP/1.1
 * or HTTP/2 server that takes it over sees the stream from its first byte.
 *
 * Resolves undefined (and destroys the socket) when the peer closes, errors, or
 * sends too little within timeoutMs: a connection that never speaks must not
 * hold a file descriptor forever.
 */
export function sniffProtocol(socket: Socket, timeoutMs: number): Promise<SniffedProtocol | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => finish(undefined), timeoutMs);

    function onData(chunk: Buffer): void {
      chunks.push(chunk);
      // The preface is 24 bytes: only the head of the stream needs inspecting.
      if (received.length < HTTP2_PREFACE.length) {
        received = Buffer.concat([received, chunk.subarray(0, HTTP2_PREFACE.length - received.length)]);
      }
      const protocol = classifyPrefix(received);
      if (protocol !== undefined) finish(protocol);
    }
    function onEnd(): void {
      finish(undefined);
    }
    function finish(protocol: SniffedProtocol | undefined): void {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.off("error", onEnd);
      if (protocol === undefined) {
        socket.destroy();
      } else {
        socket.pause();
        socket.unshift(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
      }
      resolve(protocol);
    }

    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("close", onEnd);
    socket.on("error", onEnd);
  });
}
