import express, { type Express } from "express";
import type { Logger } from "pino";
import type { AgentConnectionsSource } from "@kasbridge/sdk/platform-client";
import { createInternalApi } from "./api/internal-api.js";
import { createPlatformApi } from "./api/rest-api.js";
import { createGitHttpRouter } from "./git/git-http-router.js";
import type { PlatformServices } from "./services/platform-services.js";

export interface PlatformAppOptions {
  services: PlatformServices;
  /** Shared secret of the `Gitlab-Kas-Api-Request` JWT (decoded `.gitlab_kas_secret`). */
  jwtSecret: Uint8Array;
  /** Who lists connected agents (KAS's agent tracker). */
  connections: AgentConnectionsSource;
  /** The platform's public URL (GitLab's external_url). Default: from each request. */
  externalUrl?: string;
  /** The Kubernetes API proxy's URL as CI jobs reach it (the server of their KUBECONFIG). */
  k8sProxyUrl?: string;
  logger: Logger;
  /** Largest request body of the REST and internal APIs. Default: their own defaults. */
  maxRequestBodyBytes?: number;
  /** How 413 answers name the setting behind maxRequestBodyBytes. */
  maxRequestBodySetting?: string;
  /** Largest body of a git request (a push's pack). Default: the git router's. */
  maxPushBytes?: number;
  /** How 413 answers name the setting behind maxPushBytes. */
  maxPushSetting?: string;
}

/**
 * The whole platform on one HTTP port, as GitLab serves it: the internal API KAS calls
 * (`/api/v4/internal/...`), the REST API, git over smart HTTP, and 404 for the rest.
 */
export function createPlatformApp(options: PlatformAppOptions): Express {
  const { services, logger } = options;
  const app = express();
  app.disable("x-powered-by");
  app.set("trust proxy", false);
  const bodyLimit = { bodyLimitBytes: options.maxRequestBodyBytes, bodyLimitSetting: options.maxRequestBodySetting };
  app.use(createInternalApi({ services, jwtSecret: options.jwtSecret, logger: logger.child({ component: "internal-api" }), ...bodyLimit }));
  app.use(
    createPlatformApi({
      services,
      connections: options.connections,
      externalUrl: options.externalUrl,
      k8sProxyUrl: options.k8sProxyUrl,
      logger: logger.child({ component: "rest-api" }),
      ...bodyLimit,
    }),
  );
  app.use(
    createGitHttpRouter({
      services,
      logger: logger.child({ component: "git-http" }),
      maxBodyBytes: options.maxPushBytes,
      maxBodySetting: options.maxPushSetting,
    }),
  );
  app.use((req, res) => {
    // A body sent to no route is not read: close rather than drain it.
    if (req.get("content-length") !== undefined || req.get("transfer-encoding") !== undefined) res.set("Connection", "close");
    res.status(404).json({ message: "404 Not Found" });
  });
  return app;
}
