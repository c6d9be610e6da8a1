import type { Logger } from "pino";
import type { KubeHttp } from "../../../agent/kube/kube-http.js";

/** GitLab's default `flux.webhook_receiver_url`: Flux's notification-controller Service in flux-system. */
export const DEFAULT_WEBHOOK_RECEIVER_URL = "http://webhook-receiver.flux-system.svc.cluster.local";

/** `/api/v1/namespaces/<ns>/services/<svc>/proxy`: the receiver reached through the API server. */
const SERVICE_PROXY_PATH_RE = /^\/api\/v1\/namespaces\/[^/]+\/services\/[^/]+\/proxy\/?$/;

/** POSTs a Receiver's webhook path; resolves with the HTTP status. */
export type ReconcileTrigger = (webhookPath: string, signal: AbortSignal) => Promise<number>;

/**
 * How agentk reaches Flux's webhook receiver (`flux.webhook_receiver_url`): a URL whose path is an
 * API server service proxy path goes through the API server with the agent's credentials; any
 * other URL is called directly. The POST has an empty body, as Flux's generic receiver expects.
 */
export function reconcileTrigger(kube: KubeHttp, receiverUrl: string, logger: Logger): ReconcileTrigger {
  const base = new URL(receiverUrl || DEFAULT_WEBHOOK_RECEIVER_URL);
  const viaApiServer = SERVICE_PROXY_PATH_RE.test(base.pathname);
  const prefix = base.pathname.replace(/\/$/, "");
  return async (webhookPath, signal) => {
    const path = `${prefix}/${webhookPath.replace(/^\//, "")}`;
    let status: number;
    if (viaApiServer) {
      const res = await kube.raw("POST", path, { body: "", signal });
      res.resume();
      status = res.statusCode ?? 0;
    } else {
      const url = new URL(base);
      url.pathname = path;
      const res = await fetch(url, { method: "POST", body: "", signal, redirect: "error" });
      await res.body?.cancel();
      status = res.status;
    }
    if (status !== 200) logger.error({ status, webhookPath }, "Flux webhook receiver did not accept the reconcile request");
    return status;
  };
}
