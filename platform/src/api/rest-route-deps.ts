import type { Request, RequestHandler, Response } from "express";
import type { PlatformServices } from "../services/platform-services.js";
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
  /** The `:id` project when the user may see it; throws 404 otherwise. */
  loadProject(req: Request, user: User): Promise<Project>;
  /** The user's access level on the project (OWNER for admins). */
  projectAccess(user: User, project: Project): Promise<number>;
}
