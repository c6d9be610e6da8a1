/**
 * Small helpers for agent modules that call the cluster's API server with @kubernetes/client-node's
 * typed clients: a per-call signal and time limit (the generated clients take neither directly),
 * and the API server's error code.
 */
import { ApiException, Observable, Watch, type ConfigurationOptions, type KubeConfig } from "@kubernetes/client-node";

/**
 * Per-call options for a client-node API method: the request is aborted when `signal` aborts or
 * after `timeoutMs`. Either may be left out.
 */
export function callOptions(signal: AbortSignal | undefined, timeoutMs?: number): ConfigurationOptions {
  const signals = [signal, timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs)].filter((s) => s !== undefined);
  if (signals.length === 0) return {};
  const combined = signals.length === 1 ? signals[0]! : AbortSignal.any(signals);
  return {
    middleware: [
      {
        pre: (context) => {
          context.setSignal(combined);
          return new Observable(Promise.resolve(context));
        },
        post: (context) => new Observable(Promise.resolve(context)),
      },
    ],
    // Keeps the client's own middleware (its authentication).
    middlewareMergeStrategy: "append",
  };
}

/** The HTTP status of an API server error (404, 409, ...), undefined for anything else. */
export function apiStatus(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

/** A one-line description of an API server error: its Status message when it has one. */
export function apiErrorMessage(error: unknown): string {
  if (error instanceof ApiException) {
    const body = typeof error.body === "string" ? safeJson(error.body) : error.body;
    const message = body && typeof body === "object" && "message" in body ? String((body as { message: unknown }).message) : undefined;
    return `HTTP ${error.code}${message ? `: ${message}` : ""}`;
  }
  return error instanceof Error ? error.message : String(error);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** How a watch ended: `onEvent` returned `value`, or the stream `ended` (an error, or undefined when the server closed it). */
export type WatchEnd<T> = { value: T } | { ended: unknown };

/**
 * Runs one watch of `path` (client-node's Watch) until `onEvent` returns a value, the API server
 * ends the stream, or `signal` aborts (which resolves `{ended: signal.reason}`); the request is
 * closed in every case.
 */
export function watchUntil<T>(
  kubeConfig: KubeConfig,
  path: string,
  query: Record<string, string | number | boolean | undefined>,
  onEvent: (type: string, object: Record<string, unknown>) => T | undefined,
  signal: AbortSignal,
): Promise<WatchEnd<T>> {
  return new Promise((resolve) => {
    let controller: AbortController | undefined;
    let settled = false;
    const settle = (end: WatchEnd<T>) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener("abort", onAbort);
      controller?.abort();
      resolve(end);
    };
    const onAbort = () => settle({ ended: signal.reason });
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    new Watch(kubeConfig)
      .watch(
        path,
        query,
        (type: string, object: Record<string, unknown>) => {
          const value = onEvent(type, object);
          if (value !== undefined) settle({ value });
        },
        (error: unknown) => settle({ ended: error ?? undefined }),
      )
      .then(
        (c) => {
          controller = c;
          if (settled) c.abort();
        },
        (error: unknown) => settle({ ended: error }),
      );
  });
}
