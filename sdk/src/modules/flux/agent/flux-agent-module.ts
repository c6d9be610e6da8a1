import type { AgentModule } from "../../../agent/agent-module.js";
import { configuredAgentModule, type AppliedAgentConfiguration } from "../../../agent/agent-configuration-source.js";
import { isNotFound, type KubeHttp } from "../../../agent/kube/kube-http.js";
import { FLUX_CRD_VERSION, GIT_REPOSITORIES_CRD, RECEIVERS_CRD } from "./flux-objects.js";
import { runFluxController } from "./flux-controller.js";
import { DEFAULT_WEBHOOK_RECEIVER_URL, reconcileTrigger } from "./reconcile-trigger.js";

export interface FluxAgentModuleOptions {
  /** The cluster, with the agent's credentials. */
  kube: KubeHttp;
  /** See FluxControllerOptions.projectsDebounceMs. Default 10 000 ms. */
  projectsDebounceMs?: number;
}

/** The settings of the agent configuration the Flux module runs with; a change restarts it. */
interface FluxSettings {
  agentId: bigint;
  gitlabHostname: string;
  receiverUrl: string;
}

function settingsOf({ config }: AppliedAgentConfiguration): FluxSettings | undefined {
  let hostname: string;
  try {
    hostname = new URL(config.gitlabExternalUrl).hostname;
  } catch {
    return undefined;
  }
  return { agentId: config.agentId, gitlabHostname: hostname, receiverUrl: config.flux?.webhookReceiverUrl || DEFAULT_WEBHOOK_RECEIVER_URL };
}

/**
 * Agent half of GitLab's Flux integration (module `flux`). It runs only when Flux's GitRepository
 * and Receiver CRDs are served at v1 and Established (checked once at start; install Flux, then
 * restart the agent, as in GitLab); otherwise it idles. See runFluxController for what it does.
 * Like GitLab's, it runs on the leader of the agent's pods only (the check runs as a pod starts leading).
 */
export function fluxAgentModule(options: FluxAgentModuleOptions): AgentModule {
  return configuredAgentModule("flux", ["flux"], async (ctx, configuration) => {
    const { logger, shutdownSignal: signal } = ctx;
    const missing = await missingCrds(options.kube, signal).catch((err: unknown) => {
      logger.error({ err }, "cannot check for Flux's CRDs; the Flux module stays off");
      return undefined;
    });
    if (missing === undefined || signal.aborted) return;
    if (missing.length > 0) {
      logger.info({ missing }, "Flux is not installed (CRDs missing or not established); the Flux module stays off until the agent restarts");
      return;
    }
    let settings: FluxSettings | undefined;
    let restart: AbortController | undefined;
    let wake: (() => void) | undefined;
    configuration.watch((applied) => {
      const next = settingsOf(applied);
      if (sameSettings(next, settings)) return;
      settings = next;
      restart?.abort();
      wake?.();
    }, signal);
    signal.addEventListener("abort", () => wake?.(), { once: true });
    while (!signal.aborted) {
      const current = settings;
      if (!current) {
        // No usable configuration yet (no gitlab_external_url): wait for the next one.
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      restart = new AbortController();
      logger.info({ gitlabHost: current.gitlabHostname, receiverUrl: current.receiverUrl }, "Flux module running");
      await runFluxController(
        {
          kube: options.kube,
          transport: ctx.transport,
          agentId: current.agentId,
          gitlabHostname: current.gitlabHostname,
          trigger: reconcileTrigger(options.kube, current.receiverUrl, logger),
          logger,
          projectsDebounceMs: options.projectsDebounceMs,
        },
        AbortSignal.any([signal, restart.signal]),
      );
    }
  }, { leaderOnly: true });
}

function sameSettings(a: FluxSettings | undefined, b: FluxSettings | undefined): boolean {
  return a === b || (!!a && !!b && a.agentId === b.agentId && a.gitlabHostname === b.gitlabHostname && a.receiverUrl === b.receiverUrl);
}

/** The Flux CRDs that are not served at v1 or not Established. */
async function missingCrds(kube: KubeHttp, signal: AbortSignal): Promise<string[]> {
  const missing: string[] = [];
  for (const name of [GIT_REPOSITORIES_CRD, RECEIVERS_CRD]) {
    if (!(await crdEstablished(kube, name, FLUX_CRD_VERSION, signal))) missing.push(name);
  }
  return missing;
}

interface CrdStatus {
  spec?: { versions?: Array<{ name?: string; served?: boolean }> };
  status?: { conditions?: Array<{ type?: string; status?: string }> };
}

/** Whether the CRD `name` exists, serves `version` and is Established. */
export async function crdEstablished(kube: KubeHttp, name: string, version: string, signal: AbortSignal): Promise<boolean> {
  let crd: CrdStatus;
  try {
    crd = await kube.json<CrdStatus>("GET", `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${encodeURIComponent(name)}`, { signal });
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
  const served = crd.spec?.versions?.some((v) => v.name === version && v.served) ?? false;
  const established = crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") ?? false;
  return served && established;
}

