import type { Knex } from "knex";

/**
 * Schema migrations, defined in code rather than as files on disk so they ship inside the built
 * package and need no path resolution at run time. Append new migrations; never edit a released one.
 *
 * The model follows GitLab's: one `namespaces` table holds both personal (user) namespaces and
 * groups, so a project belongs to exactly one namespace and `path_with_namespace` is always
 * `namespace.full_path + "/" + project.path`.
 */
interface Migration {
  name: string;
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

const ts = (t: Knex.CreateTableBuilder, name: string) => t.timestamp(name, { useTz: true });

const initial: Migration = {
  name: "0001_initial",
  async up(knex) {
    await knex.schema.createTable("users", (t) => {
      t.increments("id").primary();
      t.string("username", 255).notNullable().unique();
      t.string("name", 255).notNullable();
      t.string("email", 255).nullable().unique();
      t.boolean("admin").notNullable().defaultTo(false);
      t.string("state", 32).notNullable().defaultTo("active");
      ts(t, "created_at").notNullable();
    });

    await knex.schema.createTable("namespaces", (t) => {
      t.increments("id").primary();
      t.string("name", 255).notNullable();
      t.string("path", 255).notNullable();
      t.string("kind", 16).notNullable(); // "user" | "group"
      t.integer("parent_id").nullable().references("id").inTable("namespaces").onDelete("RESTRICT");
      // Denormalised: there is no rename/transfer, so full path and name never change after creation.
      t.string("full_path", 2048).notNullable().unique();
      t.string("full_name", 4096).notNullable();
      // Set for personal namespaces only; unique so a user has at most one.
      t.integer("owner_id").nullable().unique().references("id").inTable("users").onDelete("CASCADE");
      t.string("visibility", 16).notNullable().defaultTo("private");
      t.text("description").notNullable().defaultTo("");
      ts(t, "created_at").notNullable();
      t.index(["parent_id"]);
    });

    await knex.schema.createTable("namespace_members", (t) => {
      t.integer("namespace_id").notNullable().references("id").inTable("namespaces").onDelete("CASCADE");
      t.integer("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
      t.integer("access_level").notNullable();
      ts(t, "created_at").notNullable();
      t.primary(["namespace_id", "user_id"]);
      t.index(["user_id"]);
    });

    await knex.schema.createTable("projects", (t) => {
      t.increments("id").primary();
      t.string("name", 255).notNullable();
      t.string("path", 255).notNullable();
      t.integer("namespace_id").notNullable().references("id").inTable("namespaces").onDelete("RESTRICT");
      t.text("description").notNullable().defaultTo("");
      t.string("default_branch", 255).notNullable().defaultTo("main");
      t.string("visibility", 16).notNullable().defaultTo("private");
      t.integer("creator_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      ts(t, "created_at").notNullable();
      t.unique(["namespace_id", "path"]);
      t.unique(["namespace_id", "name"]);
    });

    await knex.schema.createTable("project_members", (t) => {
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      t.integer("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
      t.integer("access_level").notNullable();
      ts(t, "created_at").notNullable();
      t.primary(["project_id", "user_id"]);
      t.index(["user_id"]);
    });

    await knex.schema.createTable("cluster_agents", (t) => {
      t.increments("id").primary();
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      t.string("name", 63).notNullable();
      t.integer("created_by_user_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      ts(t, "created_at").notNullable();
      t.unique(["project_id", "name"]);
    });

    await knex.schema.createTable("cluster_agent_tokens", (t) => {
      t.increments("id").primary();
      t.integer("agent_id").notNullable().references("id").inTable("cluster_agents").onDelete("CASCADE");
      t.string("name", 255).notNullable();
      t.string("description", 1024).nullable();
      // Hex SHA-256 of the token (see auth/tokens.ts); the unique index serves the lookup.
      t.string("token_digest", 64).notNullable().unique();
      t.integer("created_by_user_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      ts(t, "created_at").notNullable();
      ts(t, "last_used_at").nullable();
      ts(t, "revoked_at").nullable();
      t.string("status", 16).notNullable().defaultTo("active"); // "active" | "revoked"
      t.index(["agent_id", "status"]);
    });

    // The revocation feed KAS polls. No foreign keys: entries must outlive deleted agents/tokens,
    // since deleting an agent is exactly when KAS most needs to hear about its tokens.
    await knex.schema.createTable("agent_token_revocations", (t) => {
      t.increments("id").primary(); // doubles as the feed cursor
      t.integer("agent_id").notNullable();
      t.integer("token_id").notNullable();
      ts(t, "revoked_at").notNullable();
      t.index(["revoked_at"]);
    });

    await knex.schema.createTable("personal_access_tokens", (t) => {
      t.increments("id").primary();
      t.integer("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
      t.string("name", 255).notNullable();
      t.text("description").notNullable().defaultTo("");
      t.text("scopes").notNullable(); // JSON array of scope names
      t.string("token_digest", 64).notNullable().unique();
      // "YYYY-MM-DD" as GitLab's API speaks it; a string so neither driver shifts it by a time zone.
      t.string("expires_at", 10).nullable();
      ts(t, "revoked_at").nullable();
      ts(t, "last_used_at").nullable();
      ts(t, "created_at").notNullable();
      t.index(["user_id"]);
    });
  },
  async down(knex) {
    for (const table of [
      "personal_access_tokens",
      "agent_token_revocations",
      "cluster_agent_tokens",
      "cluster_agents",
      "project_members",
      "projects",
      "namespace_members",
      "namespaces",
      "users",
    ]) {
      await knex.schema.dropTableIfExists(table);
    }
  },
};

/**
 * Agent configuration (`.gitlab/agents/<name>/config.yaml` on the config project's default branch)
 * and the CI/user access authorizations derived from it, as GitLab's agent_*_authorizations tables.
 * Authorizations name projects and groups by id (resolved from the config's full paths when the
 * config is accepted), so "which agents may project P use" is one indexed query.
 */
const agentConfigurations: Migration = {
  name: "0002_agent_configurations",
  async up(knex) {
    await knex.schema.createTable("agent_configurations", (t) => {
      t.integer("agent_id").primary().references("id").inTable("cluster_agents").onDelete("CASCADE");
      // Commit of the accepted config; "" while no commit had a valid one (empty config applies).
      t.string("commit_id", 64).notNullable().defaultTo("");
      t.text("config").notNullable(); // ConfigurationFile as proto JSON
      ts(t, "updated_at").nullable(); // when the accepted config was stored
      // The last rejected config, cleared when a later commit is accepted.
      t.text("error_message").nullable();
      t.string("error_commit_id", 64).nullable();
      ts(t, "error_at").nullable();
    });

    const authorizations = [
      ["agent_ci_access_project_authorizations", "project_id", "projects"],
      ["agent_ci_access_group_authorizations", "group_id", "namespaces"],
      ["agent_user_access_project_authorizations", "project_id", "projects"],
      ["agent_user_access_group_authorizations", "group_id", "namespaces"],
    ] as const;
    for (const [table, column, target] of authorizations) {
      await knex.schema.createTable(table, (t) => {
        t.integer("agent_id").notNullable().references("id").inTable("cluster_agents").onDelete("CASCADE");
        t.integer(column).notNullable().references("id").inTable(target).onDelete("CASCADE");
        // ci_access: the entry minus `id` (default_namespace, access_as, environments);
        // user_access: { access_as }. JSON text.
        t.text("config").notNullable();
        t.primary(["agent_id", column]);
        t.index([column]);
      });
    }

    // The change feed KAS polls (like agent_token_revocations): no foreign key, entries outlive agents.
    await knex.schema.createTable("agent_configuration_changes", (t) => {
      t.increments("id").primary(); // doubles as the feed cursor
      t.integer("agent_id").notNullable();
      t.string("commit_id", 64).notNullable();
      ts(t, "changed_at").notNullable();
      t.index(["changed_at"]);
    });
  },
  async down(knex) {
    for (const table of [
      "agent_configuration_changes",
      "agent_user_access_group_authorizations",
      "agent_user_access_project_authorizations",
      "agent_ci_access_group_authorizations",
      "agent_ci_access_project_authorizations",
      "agent_configurations",
    ]) {
      await knex.schema.dropTableIfExists(table);
    }
  },
};

/**
 * CI jobs (the platform stands in for a CI system): environments per project, pipelines, and jobs
 * with their job token, stored as a digest only (see auth/tokens.ts) and valid while the job runs
 * and until `token_expires_at`.
 */
const ciJobs: Migration = {
  name: "0003_ci_jobs",
  async up(knex) {
    await knex.schema.createTable("environments", (t) => {
      t.increments("id").primary();
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      t.string("name", 255).notNullable();
      t.string("slug", 24).notNullable();
      t.string("tier", 16).notNullable(); // production | staging | testing | development | other
      ts(t, "created_at").notNullable();
      t.unique(["project_id", "name"]);
      t.unique(["project_id", "slug"]);
    });

    await knex.schema.createTable("ci_pipelines", (t) => {
      t.increments("id").primary();
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      t.integer("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
      t.string("ref", 1024).notNullable();
      ts(t, "created_at").notNullable();
      t.index(["project_id"]);
    });

    await knex.schema.createTable("ci_jobs", (t) => {
      t.increments("id").primary();
      t.integer("pipeline_id").notNullable().references("id").inTable("ci_pipelines").onDelete("CASCADE");
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      t.integer("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
      t.integer("environment_id").nullable().references("id").inTable("environments").onDelete("SET NULL");
      t.string("ref", 1024).notNullable();
      t.string("status", 16).notNullable().defaultTo("running"); // running | success | failed | canceled
      // Hex SHA-256 of the job token; the unique index serves the lookup.
      t.string("token_digest", 64).notNullable().unique();
      ts(t, "token_expires_at").notNullable();
      ts(t, "created_at").notNullable();
      ts(t, "finished_at").nullable();
      t.index(["project_id"]);
      t.index(["pipeline_id"]);
    });
  },
  async down(knex) {
    for (const table of ["ci_jobs", "ci_pipelines", "environments"]) {
      await knex.schema.dropTableIfExists(table);
    }
  },
};

/**
 * Protected branches (GitLab's `protected_branches` with one push and one merge access level each,
 * the rule of GitLab's free tier). Every existing project gets GitLab's default protection of its
 * default branch (Maintainers push and merge, no force push), as new projects get it on creation:
 * before this migration any Developer could rewrite the agent configuration on the default branch.
 */
const protectedBranches: Migration = {
  name: "0004_protected_branches",
  async up(knex) {
    await knex.schema.createTable("protected_branches", (t) => {
      t.increments("id").primary();
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      t.string("name", 1024).notNullable(); // a branch name or a wildcard pattern (`release/*`)
      t.integer("push_access_level").notNullable();
      t.integer("merge_access_level").notNullable();
      t.boolean("allow_force_push").notNullable().defaultTo(false);
      ts(t, "created_at").notNullable();
      t.unique(["project_id", "name"]);
    });
    const now = new Date().toISOString();
    const projects = (await knex("projects").select("id", "default_branch")) as { id: number; default_branch: string }[];
    for (const p of projects) {
      await knex("protected_branches").insert({
        project_id: p.id,
        name: p.default_branch,
        push_access_level: 40,
        merge_access_level: 40,
        allow_force_push: false,
        created_at: now,
      });
    }
  },
  async down(knex) {
    await knex.schema.dropTableIfExists("protected_branches");
  },
};

/**
 * One revocation feed for every credential KAS must stop honouring: agent tokens as before, and
 * finished CI jobs, revoked personal access tokens and blocked users (so KAS ends the Kubernetes
 * API proxy streams they opened). The rows of `agent_token_revocations` move over with their ids,
 * so a KAS polling with a cursor from before the migration misses nothing.
 */
const tokenRevocations: Migration = {
  name: "0005_token_revocations",
  async up(knex) {
    await knex.schema.createTable("token_revocations", (t) => {
      t.increments("id").primary(); // doubles as the feed cursor
      t.string("kind", 32).notNullable(); // agent_token | ci_job | personal_access_token | user
      // No foreign keys, as before: entries must outlive what they name.
      t.integer("agent_id").nullable();
      t.integer("token_id").nullable(); // agent token or personal access token
      t.integer("user_id").nullable();
      t.integer("job_id").nullable();
      ts(t, "revoked_at").notNullable();
      t.index(["revoked_at"]);
    });
    await knex.raw(
      "INSERT INTO token_revocations (id, kind, agent_id, token_id, revoked_at) SELECT id, 'agent_token', agent_id, token_id, revoked_at FROM agent_token_revocations",
    );
    if (knex.client.config.client === "pg") {
      // Explicit ids leave the sequence behind; the next revocation must follow the copied rows.
      await knex.raw(
        "SELECT setval(pg_get_serial_sequence('token_revocations', 'id'), COALESCE((SELECT MAX(id) FROM token_revocations), 0) + 1, false)",
      );
    }
    await knex.schema.dropTable("agent_token_revocations");
  },
  async down(knex) {
    await knex.schema.createTable("agent_token_revocations", (t) => {
      t.increments("id").primary();
      t.integer("agent_id").notNullable();
      t.integer("token_id").notNullable();
      ts(t, "revoked_at").notNullable();
      t.index(["revoked_at"]);
    });
    await knex.raw(
      "INSERT INTO agent_token_revocations (id, agent_id, token_id, revoked_at) SELECT id, agent_id, token_id, revoked_at FROM token_revocations WHERE kind = 'agent_token'",
    );
    await knex.schema.dropTable("token_revocations");
  },
};

/**
 * What each agent's GitOps module last reported per manifest project (commit seen and applied,
 * objects, last error), shown by `GET …/cluster_agents/:agent_id/gitops`.
 */
const agentGitopsStatus: Migration = {
  name: "0006_agent_gitops_status",
  async up(knex) {
    await knex.schema.createTable("agent_gitops_status", (t) => {
      t.integer("agent_id").notNullable().references("id").inTable("cluster_agents").onDelete("CASCADE");
      t.string("project", 1024).notNullable(); // manifest project full path
      t.text("status").notNullable(); // ManifestProjectStatus as proto JSON
      ts(t, "updated_at").notNullable();
      t.primary(["agent_id", "project"]);
    });
  },
  async down(knex) {
    await knex.schema.dropTable("agent_gitops_status");
  },
};

/**
 * Operational container scanning (starboard_vulnerability): one row per finding, GitLab's
 * vulnerability and finding in one (the finding's identity is its UUID: report type, primary
 * identifier fingerprint, location fingerprint, project), with what filters and resolution need
 * (agent, Kubernetes namespace, severity, state) in columns and the rest as the report sent it;
 * the state changes users made; the scans users asked for, which the agent's leader picks up.
 */
const vulnerabilities: Migration = {
  name: "0007_vulnerabilities",
  async up(knex) {
    await knex.schema.createTable("vulnerabilities", (t) => {
      t.increments("id").primary();
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      // The agent whose scans report it (resolution is per agent); kept when the agent is deleted, as in GitLab.
      t.integer("cluster_agent_id").nullable().references("id").inTable("cluster_agents").onDelete("SET NULL");
      t.string("finding_uuid", 36).notNullable().unique();
      t.string("report_type", 32).notNullable();
      t.string("state", 16).notNullable(); // detected | confirmed | resolved | dismissed
      t.string("severity", 16).notNullable(); // critical | high | medium | low | info | unknown
      t.string("confidence", 16).notNullable();
      t.string("title", 255).notNullable();
      t.text("message").notNullable().defaultTo("");
      t.text("description").notNullable().defaultTo("");
      t.text("solution").notNullable().defaultTo("");
      t.string("location_fingerprint", 40).notNullable();
      t.string("primary_identifier_fingerprint", 40).notNullable();
      t.string("project_fingerprint", 40).notNullable();
      t.string("metadata_version", 64).notNullable();
      t.string("k8s_namespace", 253).notNullable();
      t.string("k8s_kind", 64).notNullable();
      t.string("k8s_name", 253).notNullable();
      t.text("location").notNullable(); // JSON, as reported
      t.text("identifiers").notNullable(); // JSON [{external_type, external_id, name, url, fingerprint}]
      t.text("links").notNullable(); // JSON [{url, name?}]
      t.text("scanner").notNullable(); // JSON {external_id, name, vendor, version}
      t.integer("author_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      t.boolean("resolved_on_default_branch").notNullable().defaultTo(false);
      ts(t, "created_at").notNullable();
      ts(t, "updated_at").notNullable();
      ts(t, "last_detected_at").notNullable();
      ts(t, "confirmed_at").nullable();
      t.integer("confirmed_by_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      ts(t, "resolved_at").nullable();
      t.integer("resolved_by_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      ts(t, "dismissed_at").nullable();
      t.integer("dismissed_by_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      t.index(["project_id", "state", "severity"]);
      t.index(["cluster_agent_id", "state"]);
    });
    await knex.schema.createTable("vulnerability_state_transitions", (t) => {
      t.increments("id").primary();
      t.integer("vulnerability_id").notNullable().references("id").inTable("vulnerabilities").onDelete("CASCADE");
      t.string("from_state", 16).notNullable();
      t.string("to_state", 16).notNullable();
      t.integer("author_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      t.text("comment").nullable();
      ts(t, "created_at").notNullable();
      t.index(["vulnerability_id"]);
    });
    await knex.schema.createTable("vulnerability_scan_requests", (t) => {
      t.increments("id").primary();
      t.integer("agent_id").notNullable().references("id").inTable("cluster_agents").onDelete("CASCADE");
      t.text("namespaces").notNullable(); // JSON list; empty: every configured namespace
      t.integer("requested_by_id").nullable().references("id").inTable("users").onDelete("SET NULL");
      ts(t, "requested_at").notNullable();
      ts(t, "picked_up_at").nullable();
      t.index(["agent_id", "picked_up_at"]);
    });
  },
  async down(knex) {
    for (const table of ["vulnerability_scan_requests", "vulnerability_state_transitions", "vulnerabilities"]) await knex.schema.dropTableIfExists(table);
  },
};

/**
 * Remote development workspaces: what the user asked for (desired state), what the agent last
 * reported (actual state, Deployment resource version) and when the agent was last answered, which
 * decides what a partial reconcile returns.
 */
const workspaces: Migration = {
  name: "0008_workspaces",
  async up(knex) {
    await knex.schema.createTable("workspaces", (t) => {
      t.increments("id").primary();
      t.integer("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
      t.integer("project_id").notNullable().references("id").inTable("projects").onDelete("CASCADE");
      t.integer("cluster_agent_id").notNullable().references("id").inTable("cluster_agents").onDelete("CASCADE");
      t.string("name", 64).notNullable().unique();
      t.string("namespace", 64).notNullable();
      t.string("dns_zone", 253).notNullable();
      t.string("desired_state", 32).notNullable();
      ts(t, "desired_state_updated_at").notNullable();
      t.string("actual_state", 32).notNullable();
      ts(t, "responded_to_agent_at");
      t.string("deployment_resource_version", 64);
      t.string("devfile_ref", 1024).notNullable();
      t.string("devfile_path", 1024).notNullable();
      t.text("devfile").notNullable();
      t.integer("max_hours_before_termination").notNullable();
      t.boolean("force_include_all_resources").notNullable().defaultTo(true);
      ts(t, "created_at").notNullable();
      ts(t, "updated_at").notNullable();
      t.index(["cluster_agent_id", "actual_state"]);
      t.index(["project_id", "user_id"]);
    });
  },
  async down(knex) {
    await knex.schema.dropTable("workspaces");
  },
};

/**
 * Observability: usage events KAS reports (GitLab's usage_metrics), per event and day; unique
 * counters keep their distinct ids per day. The audit trail: each entry's filterable fields as
 * columns beside the whole record (JSON); `id` doubles as the stream's cursor.
 */
const observability: Migration = {
  name: "0009_observability",
  async up(knex) {
    await knex.schema.createTable("usage_counters", (t) => {
      t.string("name", 100).notNullable();
      t.string("day", 10).notNullable(); // YYYY-MM-DD, UTC
      t.bigInteger("value").notNullable();
      t.primary(["name", "day"]);
    });
    await knex.schema.createTable("usage_unique_values", (t) => {
      t.string("name", 100).notNullable();
      t.string("day", 10).notNullable();
      t.bigInteger("value").notNullable();
      t.primary(["name", "day", "value"]);
    });
    await knex.schema.createTable("audit_events", (t) => {
      t.bigIncrements("id").primary();
      ts(t, "created_at").notNullable();
      t.string("kind", 32).notNullable();
      // No foreign keys: entries outlive the agents, users and jobs they name.
      t.integer("agent_id").nullable();
      t.integer("project_id").nullable();
      t.integer("user_id").nullable();
      t.string("username", 255).nullable();
      t.integer("job_id").nullable();
      t.string("verb", 32).nullable();
      t.string("namespace", 255).nullable();
      t.integer("status").nullable();
      t.text("record").notNullable();
      t.index(["created_at"]);
      t.index(["agent_id", "id"]);
      t.index(["project_id", "id"]);
      t.index(["user_id", "id"]);
    });
  },
  async down(knex) {
    await knex.schema.dropTable("audit_events");
    await knex.schema.dropTable("usage_unique_values");
    await knex.schema.dropTable("usage_counters");
  },
};

/**
 * What a workspace gets beside its devfile (GitLab's workspace_variables and the tools it
 * injects): the variables of its Secrets, the user's and the platform's own (git credentials,
 * GIT_CONFIG_*), encrypted by the platform (util/secret-box.ts), never stored plain; the project
 * the cloner clones; the personal access token made for the workspace, revoked when it ends.
 */
const workspaceVariables: Migration = {
  name: "0014_workspace_variables",
  async up(knex) {
    await knex.schema.createTable("workspace_variables", (t) => {
      t.increments("id").primary();
      t.integer("workspace_id").notNullable().references("id").inTable("workspaces").onDelete("CASCADE");
      t.string("variable_type", 16).notNullable(); // env_var | file
      t.string("key", 255).notNullable();
      t.text("encrypted_value").notNullable();
      t.boolean("user_provided").notNullable();
      t.unique(["workspace_id", "variable_type", "key"]);
    });
    await knex.schema.alterTable("workspaces", (t) => {
      t.string("project_path", 255);
      t.string("repository_url", 2048);
      t.string("project_ref", 1024);
      t.integer("personal_access_token_id").references("id").inTable("personal_access_tokens").onDelete("SET NULL");
    });
  },
  async down(knex) {
    await knex.schema.alterTable("workspaces", (t) => {
      t.dropColumn("personal_access_token_id");
      t.dropColumn("project_ref");
      t.dropColumn("repository_url");
      t.dropColumn("project_path");
    });
    await knex.schema.dropTable("workspace_variables");
  },
};

const MIGRATIONS: readonly Migration[] = [
  initial,
  agentConfigurations,
  ciJobs,
  protectedBranches,
  tokenRevocations,
  agentGitopsStatus,
  vulnerabilities,
  workspaces,
  observability,
  workspaceVariables,
];

/** Knex migration source serving the in-code migrations above, in order. */
export const migrationSource: Knex.MigrationSource<Migration> = {
  getMigrations: () => Promise.resolve([...MIGRATIONS]),
  getMigrationName: (m) => m.name,
  getMigration: (m) => Promise.resolve(m),
};
