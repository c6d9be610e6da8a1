import type { Request, RequestHandler, Response } from "express";
import type { PlatformServices } from "../services/platform-services.js";
import type { PersonalAccessToken } from "../services/personal-access-tokens.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";

/** What the REST router (createPlatformApi) lends the route modules it mounts. */
export interface RestRouteDeps {
  services: PlatformServices;
  /** PAT authentication accepting read scopes. */
  read: RequestHandler;
  /** PAT authentication requiring the `api` scope. */
  write: RequestHandler;
  /** Body parsers, with the API's body limit. */
  body: RequestHandler[];
  currentUser(res: Response): User;
  /** The authenticated user and the personal access token they used. */
  currentAuth(res: Response): { user: User; token: PersonalAccessToken };
  /** Refuses (403) a user who is not an admin. */
  requireAdmin: RequestHandler;
  /** Base of `web_url` fields: the external URL, or the request's own. */
  baseUrl(req: Request): string;
  /** The `:id` project when the user may see it; throws 404 otherwise. */
  loadProject(req: Request, user: User): Promise<Project>;
  /** The user's access level on the project (OWNER for admins). */
  projectAccess(user: User, project: Project): Promise<number>;
}
