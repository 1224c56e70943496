/**
 * The refresh endpoint: what a service answers when the rotation app pings it
 * (contract in docs/consumers.md). Verifies the Standard Webhooks signature
 * with the `standardwebhooks` package (or an Entra bearer token), checks the
 * allow-list, de-duplicates on the rotation id, re-reads the secret before
 * answering `{"version": ...}`. Status codes: 200, 400 bad body, 401 bad
 * signature/token, 403 caller not allowed, 404 secret not used here, 413 body
 * too large, 503 (retried) when Key Vault, the issuer or a sibling instance
 * did not answer.
 *
 * Without a fan-out the answer covers this instance (`"coverage": "instance"`)
 * and the rotation app waits for the declared cache age; with one, it answers
 * `"coverage": "service"` once every live instance reports the new version.
 */
import express, { type Router } from "express";
import { Webhook } from "standardwebhooks";
import type { EntraBearerValidator } from "./bearer";
import { CallerNotAllowed, KitError, TokenInvalid } from "./errors";
import type { CachedSecretClient, SecretValue } from "./secrets";

export const REFRESH_PATH = "/internal/secrets/refresh";
export const MAX_BODY_BYTES = 16 * 1024;

export interface FanoutResult {
  live: number;
  confirmed: number;
}

export interface Fanout {
  broadcast(secretName: string, version: string, rotationId: string): Promise<FanoutResult>;
}

export interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, string>;
}

export interface RefreshOptions {
  /** Secret names this service uses (case-insensitive); others get 404. */
  allowedSecrets: string[];
  /** Name of the Key Vault secret holding the `whsec_` key, read through the cached client. */
  webhookKeySecret?: string;
  /** The `whsec_` key itself (tests). */
  webhookKey?: string;
  bearer?: EntraBearerValidator;
  fanout?: Fanout;
  onRefreshed?: (secret: SecretValue) => Promise<void> | void;
  maxBodyBytes?: number;
  dedupSize?: number;
  keyRereadIntervalMs?: number;
}

const retry = { "Retry-After": "1" };

export class RefreshEndpoint {
  private readonly allowed: Set<string>;
  private readonly seen = new Map<string, string>();
  private keyRereadAt = -Infinity;
  readonly maxBodyBytes: number;

  constructor(private readonly secrets: CachedSecretClient, private readonly options: RefreshOptions) {
    if (!options.webhookKeySecret && !options.webhookKey && !options.bearer) {
      throw new Error("configure webhookKeySecret, webhookKey or bearer: the endpoint must authenticate");
    }
    this.allowed = new Set(options.allowedSecrets.map((n) => n.toLowerCase()));
    this.maxBodyBytes = options.maxBodyBytes ?? MAX_BODY_BYTES;
  }

  /** Read the ping signing key now (at start-up), so the first ping does not wait for that read. */
  async warm(): Promise<void> {
    if (this.options.webhookKeySecret) await this.secrets.get(this.options.webhookKeySecret);
  }

  /** One refresh request; never throws, never echoes a value. */
  async handle(rawHeaders: Record<string, string | string[] | undefined>, body: Buffer): Promise<Answer> {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(rawHeaders)) if (typeof v === "string") headers[k.toLowerCase()] = v;
    if (body.length > this.maxBodyBytes) return answer(413, { error: "body too large" });
    let confirming: Promise<void> | undefined;
    try {
      // An object, not the promise itself: an async function's promise would adopt (wait for) it.
      ({ confirming } = await this.authenticate(headers, body));
    } catch (err) {
      return refused(err);
    }
    // Signed with the key held, which may be past its TTL: the (idempotent) re-read starts now, the
    // answer waits until a fresh read of the key confirms it is still the current one.
    confirming?.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
    const [result, done] = await this.refresh(body);
    if (confirming) {
      try {
        await confirming;
      } catch (err) {
        return refused(err);
      }
    }
    if (done) this.remember(...done);
    return result;
  }

  /** The answer to an authenticated notice, and the [rotation id, version] it settles, if any. */
  private async refresh(body: Buffer): Promise<[Answer, [string, string] | undefined]> {
    let notice: unknown;
    try {
      notice = JSON.parse(body.toString("utf8"));
    } catch {
      return [answer(400, { error: "body is not JSON" }), undefined];
    }
    const { secretName: name, version, rotationId, previousVersion } = (notice ?? {}) as Record<string, unknown>;
    if (typeof name !== "string" || typeof version !== "string" || typeof rotationId !== "string") {
      return [answer(400, { error: "secretName, version and rotationId are required" }), undefined];
    }
    if (!this.allowed.has(name.toLowerCase())) return [answer(404, { error: "secret not used here" }), undefined];
    const coverage = this.options.fanout ? "service" : "instance";
    if (this.seen.get(rotationId) === version) {
      return [answer(200, { version, coverage, duplicate: true }), [rotationId, version]];
    }
    const reread = async (): Promise<SecretValue> => {
      const fresh = await this.secrets.refresh(name);
      await this.options.onRefreshed?.(fresh);
      return fresh;
    };
    // With a fan-out, the siblings refresh while this instance does: one refresh's time, not two. The
    // broadcast is started first, so the notice is on its way before this instance's read begins.
    const broadcasting = this.options.fanout
      ? this.options.fanout.broadcast(name, version, rotationId)
      : Promise.resolve(undefined);
    const [remote, local] = await Promise.allSettled([broadcasting, reread()]);
    if (local.status === "rejected") return [answer(503, { error: "could not re-read the secret" }, retry), undefined];
    const secret = local.value;
    if (secret.version !== version && secret.version === previousVersion) {
      // The ping left as the version was committed; this read still got the one it replaces: try again.
      return [answer(503, { error: "Key Vault does not serve the announced version yet" }, retry), undefined];
    }
    if (secret.version !== version) return [answer(200, { version: secret.version, coverage: "instance" }), undefined];
    const extra: Record<string, unknown> = {};
    if (this.options.fanout) {
      if (remote.status === "rejected" || remote.value === undefined) {
        return [answer(503, { error: "sibling instances did not answer" }, retry), undefined];
      }
      const result = remote.value;
      if (result.confirmed < result.live) {
        return [answer(503, { error: "not every instance confirmed", ...result }, retry), undefined];
      }
      extra.instances = result.live;
    }
    return [answer(200, { version: secret.version, coverage, ...extra }), [rotationId, version]];
  }

  /** Throws when the request is not authenticated; may return a confirmation the answer must await. */
  private async authenticate(headers: Record<string, string>, body: Buffer): Promise<{ confirming?: Promise<void> }> {
    const { webhookKey, webhookKeySecret, bearer } = this.options;
    if (headers["webhook-signature"] !== undefined && (webhookKey || webhookKeySecret)) {
      if (webhookKey) {
        if (!verifies(webhookKey, headers, body)) throw new TokenInvalid("bad signature");
        return {};
      }
      const held = this.secrets.cached(webhookKeySecret!);
      if (held && verifies(held.value, headers, body)) {
        // Pings are rare, so the key held is usually past its TTL: reading it again before anything else
        // would put a second Key Vault read on the path to the new version. The work may start (it only
        // re-reads); the answer waits for this confirmation (a cache hit while fresh).
        return { confirming: this.confirmKey(held, headers, body) };
      }
      const key = await this.secrets.get(webhookKeySecret!);
      if (verifies(key.value, headers, body)) return {};
      // The signing key may have rotated: re-read it, at most once per interval.
      const now = performance.now();
      if (now - this.keyRereadAt < (this.options.keyRereadIntervalMs ?? 30_000)) throw new TokenInvalid("bad signature");
      this.keyRereadAt = now;
      const fresh = await this.secrets.rereadAfterFailure(webhookKeySecret!, key.version);
      if (fresh.version === key.version || !verifies(fresh.value, headers, body)) throw new TokenInvalid("bad signature");
      return {};
    }
    if (headers.authorization !== undefined && bearer) {
      await bearer.validate(headers.authorization);
      return {};
    }
    throw new TokenInvalid("no accepted authentication");
  }

  /** The key that verified the request is still the current one (or the current one verifies it too). */
  private async confirmKey(held: SecretValue, headers: Record<string, string>, body: Buffer): Promise<void> {
    const current = await this.secrets.get(this.options.webhookKeySecret!);
    if (current.version !== held.version && !verifies(current.value, headers, body)) {
      throw new TokenInvalid("signed with a key that is no longer current");
    }
  }

  private remember(rotationId: string, version: string): void {
    this.seen.delete(rotationId);
    this.seen.set(rotationId, version);
    while (this.seen.size > (this.options.dedupSize ?? 1024)) {
      this.seen.delete(this.seen.keys().next().value as string);
    }
  }
}

function verifies(key: string, headers: Record<string, string>, body: Buffer): boolean {
  try {
    new Webhook(key.trim()).verify(body, headers, { jsonParse: false });
    return true;
  } catch (err) {
    if (err instanceof KitError) throw err;
    return false; // forged, stale, malformed headers or a key that is not whsec_
  }
}

function refused(err: unknown): Answer {
  if (err instanceof TokenInvalid) return answer(401, { error: "unauthorized" });
  if (err instanceof CallerNotAllowed) return answer(403, { error: "forbidden" });
  return answer(503, { error: "cannot authenticate now" }, retry);
}

function answer(status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): Answer {
  return { status, body, headers };
}

/** An Express router with `POST path`: `app.use(refreshRouter(endpoint))`. */
export function refreshRouter(endpoint: RefreshEndpoint, path = REFRESH_PATH): Router {
  const router = express.Router();
  // Raw body whatever the content type: the signature covers the bytes exactly as sent.
  router.post(path, express.raw({ type: () => true, limit: endpoint.maxBodyBytes }), async (req, res) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const result = await endpoint.handle(req.headers, body);
    res.status(result.status).set(result.headers).json(result.body);
  });
  router.use(path, ((err, _req, res, next) => {
    if ((err as { type?: string })?.type === "entity.too.large") {
      res.status(413).json({ error: "body too large" });
      return;
    }
    next(err);
  }) as express.ErrorRequestHandler);
  return router;
}
