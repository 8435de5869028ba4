// A real OpenID Provider for the portal tests: `oidc-provider` (panva) in this process, on
// 127.0.0.1 and a free port, with one confidential client (`understudy-portal`, secret
// `portal-secret`, authorization code + PKCE, id_token RS256) and the provider's development
// interactions, whose login form takes any login name.
//
//   login/consent  devInteractions render the login form (any login, any password); consent is
//                  never asked: `loadExistingGrant` grants the client every OIDC scope and claim
//                  it requested, once the user has logged in.
//   accounts       `sub` = the login name, `name`, `email`, and `role` = admin | editor when the
//                  login starts with that word (none otherwise, so the gateway must default to
//                  viewer). The role claim belongs to the `openid` scope, so it is in every
//                  id_token (conformIdTokenClaims is off: scope claims go in the id_token too).
//   keys           RSA keys made here with jose and given to the provider as `jwks`. A
//                  Provider reads its keys once, when constructed, so rotateKeys() builds a new
//                  Provider with the new key set and swaps it in behind the same HTTP server:
//                  same port, same issuer, and the jwks_uri serves the new set at once.
//
// loginViaHttp() plays the browser: the gateway's /portal/auth/login, the IdP's redirects and
// login form, back to the gateway's callback, with a cookie jar of its own.
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import Provider from "oidc-provider";
import { SignJWT, base64url, exportJWK, generateKeyPair } from "jose";

export const CLIENT_ID = "understudy-portal";
export const CLIENT_SECRET = "portal-secret";

/** A fresh RS256 key pair: the private JWK (kid, alg, use set) and the private CryptoKey. */
export async function newRsaKey(kid = `k-${randomBytes(6).toString("hex")}`) {
  const { privateKey } = await generateKeyPair("RS256", { extractable: true, modulusLength: 2048 });
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: "RS256", use: "sig" };
  return { kid, jwk, privateKey };
}

/** The claims of an account: sub = login, name, email, role by the login's first word. */
export function claimsFor(login) {
  const claims = { sub: login, name: `User ${login}`, email: `${login}@example.test`, email_verified: true };
  if (login.startsWith("admin")) claims.role = "admin";
  else if (login.startsWith("editor")) claims.role = "editor";
  return claims;
}

function configuration({ redirectUris, keys, cookieKeys }) {
  return {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "RS256",
    }],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    claims: {
      openid: ["sub", "role"],
      profile: ["name"],
      email: ["email", "email_verified"],
    },
    conformIdTokenClaims: false,
    async findAccount(_ctx, id) {
      return { accountId: id, async claims() { return claimsFor(id); } };
    },
    // Automatic consent: a grant with every requested scope and claim, made as soon as the
    // user has logged in, so the interaction policy's consent prompt finds nothing missing.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const existing = await ctx.oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(" "));
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length > 0) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    jwks: { keys },
    cookies: { keys: cookieKeys },
    ttl: {
      AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600,
    },
    // The test's own log stays readable: errors the provider renders are logged by the tests.
    renderError(ctx, out) {
      ctx.type = "json";
      ctx.body = out;
    },
  };
}

/**
 * Starts the IdP. `redirectUris`: the gateway callback URLs the client may use (each gateway's
 * `{public-url}/portal/auth/callback`).
 */
export async function startIdp({ redirectUris }) {
  let handler = (_req, res) => { res.writeHead(503); res.end(); };
  const server = createServer((req, res) => handler(req, res));
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const cookieKeys = [randomBytes(32).toString("hex")];
  let current = [await newRsaKey()];

  const install = () => {
    // The provider warns on every construction that its development features are on: they are
    // on on purpose here.
    const warn = console.warn;
    console.warn = (...a) => {
      if (!String(a[0]).includes("oidc-provider WARNING: a quick start development-only")) warn(...a);
    };
    let provider;
    try {
      provider = new Provider(issuer, configuration({
        redirectUris, keys: current.map((k) => k.jwk), cookieKeys,
      }));
    } finally {
      console.warn = warn;
    }
    provider.on("server_error", (_ctx, err) => console.error(`idp server_error: ${err?.stack ?? err}`));
    handler = provider.callback();
  };
  install();

  return {
    issuer,
    port,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    /** The kid of the key that signs now. */
    get kid() { return current[0].kid; },
    /** The public keys served at jwks_uri now. */
    get publicJwks() { return current.map(({ jwk: { kty, n, e, kid, alg, use } }) => ({ kty, n, e, kid, alg, use })); },
    /**
     * A JWT for the bearer-token tests, signed with the provider's current key (kid in the
     * header): iss = issuer, aud = understudy-portal, iat = now, exp = now + 5 min, then
     * `claims` over them. opts: kid (header kid; default the current key's), key (another
     * private key to sign with), alg ("none" makes an unsecured JWT), expiresIn (seconds from
     * now, may be negative).
     */
    async mintJwt(claims = {}, { kid, key, alg = "RS256", expiresIn } = {}) {
      const now = Math.floor(Date.now() / 1000);
      const payload = { iss: issuer, aud: CLIENT_ID, iat: now, exp: now + 300, ...claims };
      if (expiresIn !== undefined) payload.exp = now + expiresIn;
      const header = { alg, typ: "JWT", kid: kid ?? current[0].kid };
      if (alg === "none") {
        const enc = (o) => base64url.encode(JSON.stringify(o));
        return `${enc(header)}.${enc(payload)}.`;
      }
      return new SignJWT(payload).setProtectedHeader(header).sign(key ?? current[0].privateKey);
    },
    /**
     * Replaces the key set: a new key signs from now on; keepOld keeps serving (and accepting)
     * the previous current key after it, else only the new key is served. Returns
     * { kid, previous: { kid, privateKey } } so a test can sign with the removed key.
     */
    async rotateKeys({ keepOld = false } = {}) {
      const previous = current[0];
      const fresh = await newRsaKey();
      current = keepOld ? [fresh, ...current] : [fresh];
      install();
      return { kid: fresh.kid, previous: { kid: previous.kid, privateKey: previous.privateKey } };
    },
    async stop() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// ---- a browser without a browser -------------------------------------------------------------

/** A cookie jar for plain fetch: cookies by host and path (ports are not kept apart, as in browsers). */
export class CookieJar {
  constructor() { this.cookies = []; }

  /** Takes the Set-Cookie headers of a response to `url`. */
  take(url, res) {
    const u = new URL(url);
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(";");
      const eq = pair.indexOf("=");
      if (eq < 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const c = { name, value, host: u.hostname, path: "/" };
      let expired = false;
      for (const a of attrs) {
        const [k, ...v] = a.split("=");
        const key = k.trim().toLowerCase();
        const val = v.join("=").trim();
        if (key === "path" && val.startsWith("/")) c.path = val;
        if (key === "max-age" && Number(val) <= 0) expired = true;
        if (key === "expires" && Date.parse(val) <= Date.now()) expired = true;
      }
      this.cookies = this.cookies.filter((o) => !(o.name === name && o.host === c.host && o.path === c.path));
      if (!expired) this.cookies.push(c);
    }
  }

  /** The Cookie header for a request to `url` (undefined when none applies). */
  header(url) {
    const u = new URL(url);
    const match = this.cookies.filter((c) => c.host === u.hostname
      && (u.pathname === c.path || u.pathname.startsWith(c.path.endsWith("/") ? c.path : `${c.path}/`)));
    return match.length ? match.map((c) => `${c.name}=${c.value}`).join("; ") : undefined;
  }

  get(name) { return this.cookies.find((c) => c.name === name)?.value; }
}

async function send(jar, url, init = {}) {
  const headers = new Headers(init.headers ?? {});
  const cookie = jar.header(url);
  if (cookie) headers.set("cookie", cookie);
  const res = await fetch(url, { ...init, headers, redirect: "manual" });
  jar.take(url, res);
  return res;
}

const unescapeHtml = (s) => s.replace(/&amp;/g, "&").replace(/&quot;/g, "\"").replace(/&#x27;|&#39;/g, "'")
  .replace(/&lt;/g, "<").replace(/&gt;/g, ">");

/** The first form of an HTML page: its action and its fields (hidden inputs, login, password). */
function parseForm(html, login) {
  const form = /<form\b[^>]*\baction="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) return null;
  const fields = new URLSearchParams();
  for (const input of form[2].matchAll(/<input\b[^>]*>/gi)) {
    const tag = input[0];
    const name = /\bname="([^"]*)"/i.exec(tag)?.[1];
    if (!name) continue;
    const type = (/\btype="([^"]*)"/i.exec(tag)?.[1] ?? "text").toLowerCase();
    const value = unescapeHtml(/\bvalue="([^"]*)"/i.exec(tag)?.[1] ?? "");
    if (name === "login") fields.set(name, login);
    else if (type === "password") fields.set(name, "any-password");
    else fields.set(name, value);
  }
  return { action: unescapeHtml(form[1]), fields };
}

/**
 * The whole authorization-code flow without a browser: GET {gateway}/portal/auth/login (with
 * `returnTo` as return_to when given), the IdP's redirects and forms (login; consent too, if the
 * IdP ever asks), then the gateway's callback. Returns everything a test may check:
 *   cookie          the understudy_session value (undefined if none was set)
 *   setCookie       the callback's Set-Cookie header lines
 *   loginLocation   where /portal/auth/login redirected (the IdP's authorization request)
 *   callbackUrl     the callback URL the IdP redirected to (to replay it)
 *   callback        the callback's Response (status, headers; body not read)
 *   steps           [{method, url, status}] for failure messages
 * With `stopAtCallback`, it stops before the callback: { callbackUrl, loginLocation, steps, jar }.
 */
export async function loginFlow(gatewayBase, login, { returnTo, stopAtCallback = false } = {}) {
  const jar = new CookieJar();
  const steps = [];
  const gw = new URL(gatewayBase).origin;
  const fail = (why) => new Error(`${why}\nsteps:\n${steps.map((s) => `  ${s.method} ${s.url} → ${s.status}`).join("\n")}`);
  const start = new URL("/portal/auth/login", gatewayBase);
  if (returnTo !== undefined) start.searchParams.set("return_to", returnTo);
  let res = await send(jar, start.href);
  steps.push({ method: "GET", url: start.href, status: res.status });
  if (res.status !== 302 && res.status !== 303) throw fail(`/portal/auth/login answered ${res.status}: ${await res.text()}`);
  const loginLocation = new URL(res.headers.get("location"), start).href;
  let url = loginLocation;
  for (let hop = 0; hop < 20; hop++) {
    if (new URL(url).origin === gw) {
      if (stopAtCallback) return { callbackUrl: url, loginLocation, steps, jar };
      const callback = await send(jar, url);
      steps.push({ method: "GET", url, status: callback.status });
      return {
        cookie: jar.get("understudy_session"),
        setCookie: callback.headers.getSetCookie(),
        loginLocation,
        callbackUrl: url,
        callback,
        steps,
      };
    }
    res = await send(jar, url);
    steps.push({ method: "GET", url, status: res.status });
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get("location"), url).href;
      continue;
    }
    const body = await res.text();
    if (res.status !== 200) throw fail(`the IdP answered ${res.status}: ${body.slice(0, 500)}`);
    const form = parseForm(body, login);
    if (!form) throw fail(`no form on the IdP's page: ${body.slice(0, 500)}`);
    const action = new URL(form.action, url).href;
    res = await send(jar, action, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form.fields.toString(),
    });
    steps.push({ method: "POST", url: action, status: res.status });
    if (res.status < 300 || res.status >= 400) throw fail(`the IdP's form answered ${res.status}: ${(await res.text()).slice(0, 500)}`);
    url = new URL(res.headers.get("location"), action).href;
  }
  throw fail("too many redirects");
}

/** loginFlow, asserting the callback set the session cookie; returns the cookie's value. */
export async function loginViaHttp(gatewayBase, login, opts) {
  const r = await loginFlow(gatewayBase, login, opts);
  if (!r.cookie) {
    const body = await r.callback.text().catch(() => "");
    throw new Error(`the callback (${r.callback.status}) set no understudy_session cookie: ` +
      `Set-Cookie ${JSON.stringify(r.setCookie)}; body ${body.slice(0, 500)}`);
  }
  return r.cookie;
}
