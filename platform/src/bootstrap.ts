import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import pino from "pino";
import type { Logger } from "pino";
import { writePrivateFile } from "./util/private-file.js";
import { MIN_SUPPLIED_TOKEN_LENGTH } from "./services/personal-access-tokens.js";
import { createPlatformServices, type PlatformServices } from "./services/platform-services.js";
import type { Store } from "./store/store.js";

export const ADMIN_USERNAME = "root";
export const ADMIN_TOKEN_FILE_NAME = "admin-token";
/** Scopes of the bootstrap admin token: full API access, including admin-only endpoints. */
const ADMIN_TOKEN_SCOPES = ["api", "read_api", "k8s_proxy", "admin_mode", "sudo"];

export interface BootstrapAdminOptions {
  /** Where the generated token is written (`<dataDir>/admin-token`, mode 0600). */
  dataDir: string;
  /**
   * Operator-chosen admin token (any string of ≥ 20 characters without whitespace; `glpat-…` is
   * customary). Registered for `root` on first start, and on later starts if not yet known.
   * Without it, the first start generates one.
   */
  adminToken?: string;
  /** Reuse the process's services; default: a private instance over `store`. */
  services?: PlatformServices;
  logger?: Logger;
}

export interface BootstrapAdminResult {
  /** True when this call created the admin user (first start on an empty store). */
  created: boolean;
  /**
   * The admin token when this call issued one: generated (print it once) or the supplied one.
   * Undefined on later starts.
   */
  token?: string;
  /** Set when a generated token was written to disk. */
  tokenFile?: string;
}

/**
 * Makes a fresh store usable: on first start (no users at all) creates the admin user `root`,
 * its personal namespace and an admin personal access token. Idempotent on later starts.
 */
export async function bootstrapAdmin(store: Store, options: BootstrapAdminOptions): Promise<BootstrapAdminResult> {
  const logger = options.logger ?? pino({ level: "silent" });
  const services = options.services ?? createPlatformServices({ store, logger });
  const supplied = options.adminToken;
  if (supplied !== undefined && (supplied.length < MIN_SUPPLIED_TOKEN_LENGTH || /\s/.test(supplied))) {
    throw new Error(`admin token must be at least ${MIN_SUPPLIED_TOKEN_LENGTH} characters without whitespace`);
  }

  // Replicas starting at once on one database bootstrap one after the other.
  return store.withStartupLock(() => bootstrapLocked(services, options, logger));
}

async function bootstrapLocked(services: PlatformServices, options: BootstrapAdminOptions, logger: Logger): Promise<BootstrapAdminResult> {
  const supplied = options.adminToken;
  if ((await services.users.count()) > 0) {
    // Later start: make a newly supplied token usable without touching anything else.
    if (supplied !== undefined && !(await services.personalAccessTokens.exists(supplied))) {
      const root = await services.users.getByUsername(ADMIN_USERNAME);
      if (!root || !root.admin) {
        throw new Error(`cannot register the admin token: there is no admin user "${ADMIN_USERNAME}"`);
      }
      await services.personalAccessTokens.create(root.id, { name: "bootstrap-admin", scopes: ADMIN_TOKEN_SCOPES }, { secret: supplied });
      logger.info({ username: ADMIN_USERNAME }, "registered the supplied admin token");
    }
    return { created: false };
  }

  let root;
  try {
    root = await services.users.create({ username: ADMIN_USERNAME, name: "Administrator", admin: true });
  } catch (err) {
    // Another process sharing the database won the race to bootstrap.
    if ((await services.users.getByUsername(ADMIN_USERNAME)) !== undefined) return { created: false };
    throw err;
  }
  const { secret } = await services.personalAccessTokens.create(
    root.id,
    { name: "bootstrap-admin", scopes: ADMIN_TOKEN_SCOPES },
    supplied === undefined ? {} : { secret: supplied },
  );
  if (supplied !== undefined) {
    logger.info({ username: ADMIN_USERNAME }, "created admin user with the supplied token");
    return { created: true, token: secret };
  }
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  const tokenFile = join(options.dataDir, ADMIN_TOKEN_FILE_NAME);
  // A new 0600 file renamed into place: never readable by others, even for a moment, and a
  // leftover file with a looser mode is replaced rather than written through.
  await writePrivateFile(tokenFile, `${secret}\n`);
  logger.info({ username: ADMIN_USERNAME, tokenFile }, "created admin user and wrote its token file");
  return { created: true, token: secret, tokenFile };
}
