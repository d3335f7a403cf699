// The one way the console reaches sessiond: session.v1.SessionService over
// gRPC-Web on the page's own origin, with the signed-in admin's token in the
// authorization header (never in a URL), and failures read into something a
// person can act on.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { SessionService } from "./gen/session/v1/session_pb.js";

export type Api = Client<typeof SessionService>;

/// The token lives in this tab only: sessionStorage survives a reload of the
/// page, not the tab, and is never sent anywhere but the authorization header.
const TOKEN_KEY = "sessiond.console.token";

let token: string | null = sessionStorage.getItem(TOKEN_KEY);

export function currentToken(): string | null {
  return token;
}

export function setToken(value: string | null): void {
  token = value;
  if (value === null) {
    sessionStorage.removeItem(TOKEN_KEY);
  } else {
    sessionStorage.setItem(TOKEN_KEY, value);
  }
}

const authorize: Interceptor = (next) => async (req) => {
  if (token !== null && req.method.name !== "Login") {
    req.header.set("authorization", `Bearer ${token}`);
  }
  return next(req);
};

export const api: Api = createClient(
  SessionService,
  createGrpcWebTransport({ baseUrl: location.origin, interceptors: [authorize] }),
);

/// A failed call, as the console shows it.
export interface Failure {
  code: Code;
  /// The ErrorInfo reason sessiond sent (e.g. OVERLOADED), or "".
  reason: string;
  /// What to tell the person.
  message: string;
  /// How long the server asked callers to wait, in milliseconds, or 0.
  retryAfterMs: number;
}

export function failure(err: unknown): Failure {
  let e = ConnectError.from(err);
  // fetch itself failed (connection refused or reset): nothing answered.
  if (e.code === Code.Unknown && e.cause instanceof TypeError) {
    e = new ConnectError("cannot reach sessiond", Code.Unavailable);
  }
  const reason = e.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
  const delay = e.findDetails(RetryInfoSchema)[0]?.retryDelay;
  let retryAfterMs = delay ? Number(delay.seconds) * 1000 + Math.ceil(delay.nanos / 1e6) : 0;
  let message: string;
  if (reason === "OVERLOADED") {
    message = "sessiond is overloaded and shed this request";
  } else if (e.code === Code.ResourceExhausted) {
    message = "Too many requests";
  } else if (e.code === Code.Unavailable) {
    message = "sessiond or its session store is unavailable";
    retryAfterMs = retryAfterMs || 1000;
  } else if (e.code === Code.PermissionDenied) {
    message = "Not allowed";
  } else if (e.code === Code.NotFound) {
    message = "Already ended or not found";
  } else if (e.code === Code.InvalidArgument) {
    message = `Not accepted: ${e.rawMessage}`;
  } else {
    message = e.rawMessage || Code[e.code];
  }
  if (retryAfterMs > 0) {
    message += `: try again in ${Math.max(1, Math.ceil(retryAfterMs / 1000))} s`;
  }
  return { code: e.code, reason, message: `${message}.`, retryAfterMs };
}

/// Whether a failure means this console's own session is no longer live.
export function sessionGone(f: Failure): boolean {
  return f.code === Code.Unauthenticated;
}

export { Code };
