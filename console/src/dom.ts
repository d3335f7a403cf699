// Building the page from API values: every value becomes a text node (never
// HTML), so a username or user agent of `<img src=x onerror=...>` shows as
// those characters and runs nothing.

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { EndReason, Kind } from "./gen/session/v1/session_pb.js";

type Child = Node | string | null | undefined | false;

/// An element with attributes and children; strings are text, never markup.
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, value);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

export function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`the page has no #${id}`);
  return node as T;
}

export const KIND_NAMES: Record<number, string> = {
  [Kind.ADMIN]: "Admin",
  [Kind.API]: "API",
  [Kind.IMAP]: "IMAP",
  [Kind.POP]: "POP",
};

export function kindName(kind: Kind): string {
  return KIND_NAMES[kind] ?? "Unknown";
}

const REASONS: Record<number, string> = {
  [EndReason.LOGOFF]: "signed off",
  [EndReason.LOGOFF_OTHER]: "ended by an admin",
  [EndReason.LOGOUT_USER]: "mail logout",
  [EndReason.LOGOUT_ALL]: "all API sessions ended",
  [EndReason.EXPIRED]: "expired",
  [EndReason.END_USER_SESSIONS]: "all sessions of the user ended",
  [EndReason.PASSWORD_CHANGED]: "password changed",
  [EndReason.SESSION_LIMIT]: "over the session limit",
  [EndReason.GLOBAL_TOKEN_REVOCATION]: "revoked by the identity provider",
};

export function reasonName(reason: EndReason): string {
  return REASONS[reason] ?? "ended";
}

const pad = (n: number) => String(n).padStart(2, "0");

/// A timestamp as `YYYY-MM-DD HH:MM:SS` in the browser's time zone, inside a
/// <time> whose datetime is exact.
export function time(ts: Timestamp | undefined): HTMLTimeElement | string {
  if (ts === undefined) return "";
  const d = timestampDate(ts);
  const shown =
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return el("time", { datetime: d.toISOString() }, shown);
}

export function clock(d: Date): string {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export const count = (n: number) => n.toLocaleString("en-US");

export const plural = (n: number, one: string, many: string) =>
  `${count(n)} ${n === 1 ? one : many}`;
