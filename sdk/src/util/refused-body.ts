import type { IncomingMessage } from "node:http";

/** How much of a refused body is still read (and dropped) after the answer, and for how long. */
export const LINGER_MAX_BYTES = 4 * 1024 * 1024;
export const LINGER_MAX_MS = 10_000;

/**
 * Reads and drops what the client still sends of a refused request body, so that closing the
 * connection with unread data (a TCP reset) does not destroy the answer before the client has
 * read it; clients stop sending once they see it (curl: "HTTP error before end of send"). A client
 * that goes on past `maxBytes` or `maxMs` is disconnected. Call it when the answer is sent.
 */
export function drainRefusedBody(req: IncomingMessage, maxBytes = LINGER_MAX_BYTES, maxMs = LINGER_MAX_MS): void {
  if (req.complete || req.destroyed) return;
  req.unpipe();
  let seen = 0;
  const stop = () => {
    clearTimeout(timer);
    req.off("data", count);
  };
  const cut = () => {
    stop();
    req.socket.destroy();
  };
  const count = (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > maxBytes) cut();
  };
  const timer = setTimeout(cut, maxMs);
  timer.unref();
  req.on("data", count);
  req.once("end", stop);
  req.once("close", stop);
  req.resume();
}
