import type { Request, Response } from "express";

const DEFAULT_PER_PAGE = 20;
const MAX_PER_PAGE = 100;

/**
 * GitLab's offset pagination over an in-memory list (agent and token lists are short): `page`,
 * `per_page` (max 100) and the X-Page/X-Per-Page/X-Total/X-Total-Pages/X-Next-Page/X-Prev-Page
 * headers.
 */
export function paginate<T>(req: Request, res: Response, items: readonly T[]): T[] {
  const { page, perPage, offset } = pageOf(req);
  setPageHeaders(res, page, perPage, items.length);
  return items.slice(offset, offset + perPage);
}

/** The request's `page` and `per_page` (max 100), and the offset they mean, for lists paged in the database. */
export function pageOf(req: Request): { page: number; perPage: number; offset: number } {
  const page = positiveInt(req.query.page, 1);
  const perPage = Math.min(positiveInt(req.query.per_page, DEFAULT_PER_PAGE), MAX_PER_PAGE);
  return { page, perPage, offset: (page - 1) * perPage };
}

/** GitLab's pagination headers for `total` items. */
export function setPageHeaders(res: Response, page: number, perPage: number, total: number): void {
  const totalPages = Math.max(1, Math.ceil(total / perPage));
  res.set({
    "X-Page": String(page),
    "X-Per-Page": String(perPage),
    "X-Total": String(total),
    "X-Total-Pages": String(totalPages),
    "X-Next-Page": page < totalPages ? String(page + 1) : "",
    "X-Prev-Page": page > 1 ? String(Math.min(page - 1, totalPages)) : "",
  });
}

function positiveInt(value: unknown, fallback: number): number {
  if (typeof value !== "string" || !/^[0-9]{1,6}$/.test(value)) return fallback;
  const n = Number(value);
  return n >= 1 ? n : fallback;
}
