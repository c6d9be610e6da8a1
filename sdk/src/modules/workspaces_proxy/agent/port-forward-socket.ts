/**
 * A TCP connection to a pod's port through the API server's port-forward (`pods/<pod>/portforward`
 * over WebSocket, Kubernetes' channel protocol `v4.channel.k8s.io`), as a Duplex an HTTP client can
 * run on: it works wherever the agent reaches the API server, inside the cluster or not.
 *
 * The protocol: every binary message starts with its channel byte (0: data, 1: errors of the
 * port); the first message of each channel from the API server is the port number (2 bytes, little
 * endian). There is no half-close: the connection ends when either side closes the WebSocket.
 */
import { Duplex } from "node:stream";
import type { KubeConfig } from "@kubernetes/client-node";
import WebSocket from "ws";

const DATA = 0;
const ERROR = 1;
const CHANNEL_PROTOCOL = "v4.channel.k8s.io";

export interface PortForwardTarget {
  namespace: string;
  pod: string;
  port: number;
}

/** Opens the port-forward; resolves once the API server (and the kubelet) accepted it. */
export async function openPortForward(kc: KubeConfig, target: PortForwardTarget, signal: AbortSignal): Promise<Duplex> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("kubeconfig has no current cluster");
  const opts: { headers?: Record<string, string>; ca?: unknown; cert?: unknown; key?: unknown; rejectUnauthorized?: boolean; servername?: string } = { headers: {} };
  await kc.applyToHTTPSOptions(opts as Parameters<KubeConfig["applyToHTTPSOptions"]>[0]);
  const server = new URL(cluster.server);
  server.protocol = server.protocol === "https:" ? "wss:" : "ws:";
  const base = server.pathname.replace(/\/$/, "");
  const url = `${server.origin}${base}/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/portforward?ports=${target.port}`;
  const ws = new WebSocket(url, [CHANNEL_PROTOCOL], {
    headers: opts.headers,
    ca: opts.ca as string | undefined,
    cert: opts.cert as string | undefined,
    key: opts.key as string | undefined,
    ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
    ...(opts.servername ? { servername: opts.servername } : {}),
    handshakeTimeout: 10_000,
    perMessageDeflate: false,
  });
  // Listening from the start: the API server sends each channel's port as soon as it accepts.
  const stream = new PortForwardStream(ws, target);
  const onAbort = () => ws.terminate();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => {
        res.resume();
        reject(new Error(`the API server refused the port-forward to ${target.namespace}/${target.pod}:${target.port} (HTTP ${res.statusCode})`));
      });
    });
  } catch (err) {
    stream.destroy();
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  return stream;
}

class PortForwardStream extends Duplex {
  private readonly seenPort = [false, false];

  constructor(
    private readonly ws: WebSocket,
    private readonly target: PortForwardTarget,
  ) {
    super();
    ws.on("message", (data: Buffer, isBinary: boolean) => this.received(isBinary ? data : Buffer.from(data)));
    ws.on("close", () => {
      this.push(null);
      // Nothing can be written any more either.
      if (!this.writableFinished) this.destroy();
    });
    // Before the stream is handed out, a failure is openPortForward's to report.
    ws.on("error", (err) => (ws.readyState === WebSocket.CONNECTING ? undefined : this.destroy(err)));
  }

  private received(message: Buffer): void {
    if (message.length === 0) return;
    const channel = message[0]!;
    let payload = message.subarray(1);
    if (channel === DATA || channel === ERROR) {
      if (!this.seenPort[channel]) {
        this.seenPort[channel] = true;
        payload = payload.subarray(2);
      }
    }
    if (channel === DATA) {
      if (payload.length > 0 && !this.push(payload)) this.ws.pause();
    } else if (channel === ERROR && payload.length > 0) {
      const { namespace, pod, port } = this.target;
      this.destroy(new Error(`port-forward to ${namespace}/${pod}:${port}: ${payload.toString("utf8").trim()}`));
    }
  }

  override _read(): void {
    if (this.ws.isPaused) this.ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.ws.readyState !== WebSocket.OPEN) {
      callback(new Error("the port-forward is closed"));
      return;
    }
    this.ws.send(Buffer.concat([Buffer.of(DATA), chunk]), { binary: true }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    // The channel protocol has no half-close: the connection stays until it is closed.
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close();
    else if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    callback(error);
  }
}
