import type http2 from "node:http2";

/**
 * HTTP/2 flow-control windows. Node's defaults (64 KiB per stream and per connection) cap a stream
 * at one window per event-loop round trip; tunnels carry bulk data (logs, large lists), so KAS and
 * agents advertise larger ones. Memory stays bounded: a window is credit, not a preallocated buffer.
 */
export const streamWindowBytes = 4 * 1024 * 1024;
export const connectionWindowBytes = 32 * 1024 * 1024;

/** Raises a session's connection-level receive window (SETTINGS only cover streams). */
export function widenConnectionWindow(session: http2.Http2Session): void {
  const apply = () => {
    try {
      session.setLocalWindowSize(connectionWindowBytes);
    } catch {
      // The session closed before its settings were exchanged.
    }
  };
  if (session.connecting) session.once("connect", apply);
  else apply();
}
