/**
 * The variables a user gives a workspace: checked when the workspace is created, stored
 * encrypted (one row each), and read back only to build the workspace's Secrets
 * (`<ws>-env-var`: environment variables through envFrom; `<ws>-file`: files under
 * /.workspace-data/variables/file). Values never leave the platform any other way.
 */
import type { Knex } from "knex";
import { invalid } from "../services/errors.js";
import type { SecretBox } from "../util/secret-box.js";
import type { WorkspaceVariable } from "./desired-config.js";

export const MAX_WORKSPACE_VARIABLES = 100;
export const MAX_VARIABLE_KEY_LENGTH = 255;
export const MAX_VARIABLE_VALUE_BYTES = 64 * 1024;
/** All values of one workspace together; a Secret holds at most 1 MiB. */
export const MAX_VARIABLES_TOTAL_BYTES = 512 * 1024;

const VARIABLE_TYPES = ["env_var", "file"] as const;
/** An environment variable name a shell can use. */
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A Secret key, which becomes the file's name. */
const FILE_KEY = /^[-._A-Za-z0-9]+$/;

/** Checks the REST input (`[{key, value, variable_type}]`); ServiceError("invalid") names the first bad entry. */
export function checkWorkspaceVariables(raw: unknown): WorkspaceVariable[] {
  if (!Array.isArray(raw)) throw bad("variables must be an array");
  if (raw.length > MAX_WORKSPACE_VARIABLES) throw bad(`at most ${MAX_WORKSPACE_VARIABLES} variables`);
  const seen = new Set<string>();
  let total = 0;
  return raw.map((entry: unknown, i) => {
    const v = entry as { key?: unknown; value?: unknown; variable_type?: unknown; type?: unknown } | null;
    if (typeof v !== "object" || v === null) throw bad(`variables[${i}] must be an object with key and value`);
    const type = v.variable_type ?? v.type ?? "env_var";
    if (!VARIABLE_TYPES.includes(type as (typeof VARIABLE_TYPES)[number])) throw bad(`variables[${i}].variable_type must be env_var or file`);
    const { key, value } = v;
    if (typeof key !== "string" || key.length === 0 || key.length > MAX_VARIABLE_KEY_LENGTH) {
      throw bad(`variables[${i}].key must be a string of 1 to ${MAX_VARIABLE_KEY_LENGTH} characters`);
    }
    if (type === "env_var" && !ENV_KEY.test(key)) throw bad(`variables[${i}].key ${JSON.stringify(key)} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)`);
    if (type === "file" && (!FILE_KEY.test(key) || key === "." || key === "..")) throw bad(`variables[${i}].key ${JSON.stringify(key)} is not a file name ([-._A-Za-z0-9]+)`);
    // GitLab keeps the gl_/GL_ prefix for the variables it injects itself; git's come from the platform too.
    if (/^gl_/i.test(key)) throw bad(`variables[${i}].key ${JSON.stringify(key)}: the prefix GL_ is reserved`);
    if (/^GIT_CONFIG_/.test(key)) throw bad(`variables[${i}].key ${JSON.stringify(key)}: the prefix GIT_CONFIG_ is reserved (the workspace's git configuration)`);
    if (typeof value !== "string") throw bad(`variables[${i}].value must be a string`);
    const bytes = Buffer.byteLength(value);
    if (bytes > MAX_VARIABLE_VALUE_BYTES) throw bad(`variables[${i}].value is over ${MAX_VARIABLE_VALUE_BYTES} bytes`);
    total += bytes;
    if (total > MAX_VARIABLES_TOTAL_BYTES) throw bad(`the variables' values are over ${MAX_VARIABLES_TOTAL_BYTES} bytes together`);
    const id = `${type}/${key}`;
    if (seen.has(id)) throw bad(`variables[${i}].key ${JSON.stringify(key)} is given twice`);
    seen.add(id);
    return { key, value, type: type as WorkspaceVariable["type"] };
  });
}

/** Rows for `workspace_variables`, values encrypted and bound to their workspace and key. */
export function sealVariables(secrets: SecretBox, workspaceId: number, variables: ReadonlyArray<WorkspaceVariable & { userProvided: boolean }>) {
  return variables.map((v) => ({
    workspace_id: workspaceId,
    variable_type: v.type,
    key: v.key,
    encrypted_value: secrets.seal(v.value, context(workspaceId, v)),
    user_provided: v.userProvided,
  }));
}

/** The workspace's variables in clear, in a stable order; none when there is no key (none could be stored). */
export async function openVariables(db: Knex | Knex.Transaction, secrets: SecretBox | undefined, workspaceId: number): Promise<WorkspaceVariable[]> {
  const rows = (await db("workspace_variables").where({ workspace_id: workspaceId }).orderBy("id")) as Array<{ variable_type: WorkspaceVariable["type"]; key: string; encrypted_value: string }>;
  if (rows.length === 0) return [];
  if (!secrets) throw new Error(`workspace ${workspaceId} has variables but the platform has no encryption key`);
  return rows.map((r) => {
    const v = { key: r.key, type: r.variable_type };
    return { ...v, value: secrets.open(r.encrypted_value, context(workspaceId, v)) };
  });
}

function context(workspaceId: number, v: { key: string; type: string }): string {
  return `workspace_variables/${workspaceId}/${v.type}/${v.key}`;
}

function bad(message: string) {
  return invalid(message, { variables: [message] });
}
