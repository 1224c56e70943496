/**
 * Self-healing connections: on an authentication failure, re-read the secret
 * bypassing the cache and retry once. A missed refresh ping then costs at most
 * one failed attempt, never an outage. Other errors propagate unchanged.
 */
import pg from "pg";
import { createClient } from "redis";
import type { CachedSecretClient, SecretValue } from "./secrets";

/** PostgreSQL: invalid_password, invalid_authorization_specification. */
const PG_AUTH_CODES = new Set(["28P01", "28000"]);

export function isPostgresAuthFailure(err: unknown): boolean {
  return PG_AUTH_CODES.has((err as { code?: string })?.code ?? "");
}

const CLOSED_ERRORS = new Set(["SocketClosedUnexpectedlyError", "ClientClosedError", "ClientOfflineError"]);

/** node-redis's "the connection went away" errors (their `name` is plain "Error"; the class name is not). */
function isConnectionClosed(err: unknown): boolean {
  return CLOSED_ERRORS.has((err as object)?.constructor?.name ?? "");
}

export function isRedisAuthFailure(err: unknown): boolean {
  const message = String((err as Error)?.message ?? "");
  return /^(WRONGPASS|NOAUTH)/.test(message) || (err as Error)?.name === "AuthError";
}

/** Run `attempt` with the cached secret; on an auth failure, once more with a re-read one. */
export async function withFreshSecret<T>(
  secrets: CachedSecretClient,
  secretName: string,
  attempt: (secret: SecretValue) => Promise<T>,
  isAuthFailure: (err: unknown) => boolean,
): Promise<T> {
  const secret = await secrets.get(secretName);
  try {
    return await attempt(secret);
  } catch (err) {
    if (!isAuthFailure(err)) throw err;
  }
  return attempt(await secrets.rereadAfterFailure(secretName, secret.version));
}

/** A connected `pg.Client` from the connection string in `secretName`, healing once on auth failure. */
export function connectPostgres(
  secrets: CachedSecretClient,
  secretName: string,
  config: Omit<pg.ClientConfig, "connectionString"> = {},
): Promise<pg.Client> {
  return withFreshSecret(
    secrets,
    secretName,
    async (secret) => {
      const client = new pg.Client({ ...config, connectionString: toUri(secret.value) });
      client.on("error", () => undefined); // a dropped idle connection must not crash the process
      try {
        await client.connect();
      } catch (err) {
        await client.end().catch(() => undefined);
        throw err;
      }
      return client;
    },
    isPostgresAuthFailure,
  );
}

/** libpq `key=value` conninfo (what the rotator writes by default) as a URI node-postgres understands. */
export function toUri(conninfo: string): string {
  const text = conninfo.trim();
  if (/^postgres(ql)?:\/\//i.test(text)) return text;
  const params = new Map<string, string>();
  const re = /(\w+)\s*=\s*('((?:\\.|[^'\\])*)'|\S+)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    params.set(m[1], m[3] !== undefined ? m[3].replace(/\\(.)/g, "$1") : m[2]);
  }
  const enc = encodeURIComponent;
  const host = params.get("host") ?? "localhost";
  const auth = params.has("user")
    ? enc(params.get("user")!) + (params.has("password") ? ":" + enc(params.get("password")!) : "") + "@"
    : "";
  const port = params.has("port") ? ":" + params.get("port") : "";
  const query = new URLSearchParams();
  if (params.has("sslmode")) query.set("sslmode", params.get("sslmode")!);
  if (params.has("connect_timeout")) query.set("connect_timeout", params.get("connect_timeout")!);
  const q = query.toString();
  return `postgresql://${auth}${host.includes(":") ? `[${host}]` : host}${port}/${enc(params.get("dbname") ?? "postgres")}${q ? "?" + q : ""}`;
}

type Redis = ReturnType<typeof createClient>;

export interface SelfHealingRedisOptions {
  /** Builds an unconnected client from the secret value; default: URL, or a bare password with `socket`/`username`. */
  factory?: (value: string) => Redis;
  username?: string;
  socket?: { host: string; port: number };
}

/** A node-redis client built from a secret, rebuilt once when authentication fails. */
export class SelfHealingRedis {
  private client: Redis | undefined;
  /** The secret version the current client was built from. */
  version: string | undefined;
  private lastTried: string | undefined;
  private next: SecretValue | undefined;
  private swapping: { version: string; done: Promise<void> } | undefined;
  private revalidating: Promise<void> | undefined;
  heals = 0;

  constructor(
    private readonly secrets: CachedSecretClient,
    private readonly secretName: string,
    private readonly options: SelfHealingRedisOptions = {},
  ) {}

  /**
   * Run one unit of work: `await redis.run((r) => r.get(key))`. A refused
   * password re-reads the secret and retries once; a connection that was
   * closed under us (server restart, CLIENT KILL) is rebuilt once.
   */
  async run<T>(work: (client: Redis) => Promise<T>): Promise<T> {
    let healed = false;
    let reconnected = false;
    for (;;) {
      try {
        return await work(await this.ensure());
      } catch (err) {
        if (isRedisAuthFailure(err) && !healed) {
          healed = true;
          this.heals += 1;
          this.next = await this.secrets.rereadAfterFailure(this.secretName, this.lastTried!);
          await this.drop();
          continue;
        }
        if (isConnectionClosed(err) && !reconnected) {
          reconnected = true;
          await this.drop();
          continue;
        }
        throw err;
      }
    }
  }

  /** Rebuild from the secret now (call from the refresh endpoint's `onRefreshed`). */
  async refresh(): Promise<void> {
    await this.swap(await this.secrets.get(this.secretName));
  }

  async close(): Promise<void> {
    const old = this.client;
    this.client = undefined;
    if (old?.isOpen) await old.quit().catch(() => undefined);
  }

  /**
   * The client for the version the cache holds: built when missing, rebuilt when the cache moves on, so an
   * instance that missed a ping uses the new value within its cache age, not only once its connections
   * break. Past the TTL the secret is re-read in the background while this call keeps the client it has:
   * a command never waits for Key Vault (nor fails when it cannot be read). Concurrent callers share one
   * rebuild.
   */
  private async ensure(): Promise<Redis> {
    let secret: SecretValue | undefined = this.next;
    this.next = undefined;
    if (!secret && !this.client?.isReady) secret = await this.secrets.get(this.secretName);
    if (!secret) {
      const held = this.secrets.cached(this.secretName);
      if (held && held.version !== this.version) secret = held;
      else if (!this.secrets.fresh(this.secretName)) this.revalidate();
    }
    if (secret && (!this.client?.isReady || secret.version !== this.version)) {
      let swapping = this.swapping;
      if (swapping?.version !== secret.version) {
        const done: Promise<void> = this.swap(secret).finally(() => {
          if (this.swapping?.done === done) this.swapping = undefined;
        });
        swapping = { version: secret.version, done };
        this.swapping = swapping;
      }
      await swapping!.done;
    }
    return this.client!;
  }

  private revalidate(): void {
    if (this.revalidating) return;
    // A failed re-read only means the client stays as it is; the next command after the TTL tries again.
    this.revalidating = this.secrets
      .get(this.secretName)
      .then(() => undefined, () => undefined)
      .finally(() => {
        this.revalidating = undefined;
      });
  }

  private async drop(): Promise<void> {
    const old = this.client;
    this.client = undefined;
    if (old?.isOpen) await old.disconnect().catch(() => undefined);
  }

  private async swap(secret: SecretValue): Promise<void> {
    this.lastTried = secret.version;
    const next = this.build(secret.value);
    next.on("error", () => undefined); // errors surface through commands
    try {
      await next.connect(); // authenticates: a refused password rejects here
    } catch (err) {
      if (next.isOpen) await next.disconnect().catch(() => undefined);
      throw err;
    }
    const old = this.client;
    this.client = next;
    this.version = secret.version;
    if (old?.isOpen) await old.quit().catch(() => undefined);
  }

  private build(value: string): Redis {
    if (this.options.factory) return this.options.factory(value);
    // The credentials go through a provider, never into the options: node-redis builds a client class
    // (hundreds of command methods, tens of milliseconds of CPU) per distinct options, compared as JSON,
    // so a password (or a URL holding one) in them would rebuild it on every rotation, on every replica,
    // at the moment they all refresh.
    if (/^rediss?:\/\//.test(value)) {
      const url = new URL(value);
      const username = url.username ? decodeURIComponent(url.username) : undefined;
      const password = url.password ? decodeURIComponent(url.password) : undefined;
      url.username = "";
      url.password = "";
      return createClient({
        url: url.toString(),
        credentialsProvider: credentials(username, password),
        socket: { reconnectStrategy: false },
      });
    }
    return createClient({
      credentialsProvider: credentials(this.options.username, value),
      socket: { ...(this.options.socket ?? { host: "127.0.0.1", port: 6379 }), reconnectStrategy: false },
    });
  }
}

function credentials(username: string | undefined, password: string | undefined) {
  return { type: "async-credentials-provider" as const, credentials: async () => ({ username, password }) };
}
