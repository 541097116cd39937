// A strict OpenID Provider for the test suite: node-oidc-provider in its default,
// specification-conformant configuration, configured from one JSON document.
//
//   NODE_IDP_CONFIG='{"accounts": {...}, "clients": [...]}' node server.mjs
//   node server.mjs '{"accounts": {...}, "clients": [...]}'
//
// It listens on 127.0.0.1 (port 0 = a free one, chosen by the kernel, so there is no race), and
// then prints one line `NODE_IDP_READY {"issuer": ..., "port": ...}` to stdout. See README.md.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

const raw = process.argv[2] ?? process.env.NODE_IDP_CONFIG;
if (!raw) {
  console.error('usage: node server.mjs CONFIG_JSON (or set NODE_IDP_CONFIG)');
  process.exit(2);
}
const config = JSON.parse(raw);

const KNOWN_OPTIONS = new Set([
  'host', 'port', 'accounts', 'clients', 'consent', 'userinfo_sub_override', 'ttl', 'extra_scopes',
]);
for (const key of Object.keys(config)) {
  if (!KNOWN_OPTIONS.has(key)) {
    console.error(`unknown option ${JSON.stringify(key)}; known: ${[...KNOWN_OPTIONS].join(', ')}`);
    process.exit(2);
  }
}

const host = config.host ?? '127.0.0.1';
const accounts = config.accounts ?? {};
const clients = config.clients ?? [];
// "always": the consent page is shown on every authorization request that reaches the provider's
//           interaction (no grant is ever reused), "once": node-oidc-provider's default (a grant
//           is remembered per provider session and client), "skip": never shown (a grant for
//           exactly the requested scopes is made on the fly).
const consent = config.consent ?? 'always';
if (!['always', 'once', 'skip'].includes(consent)) {
  console.error(`consent must be "always", "once" or "skip", not ${JSON.stringify(consent)}`);
  process.exit(2);
}
// sub -> the different `sub` that UserInfo (JSON responses only) answers with for that account.
const userinfoSubOverride = config.userinfo_sub_override ?? {};

function signingKey(type, options, alg) {
  const jwk = generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${randomBytes(4).toString('hex')}` };
}

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, host, resolve);
});
const { port } = server.address();
const issuer = `http://${host}:${port}`;

const provider = new Provider(issuer, {
  clients,
  findAccount(_ctx, sub) {
    const claims = accounts[sub];
    if (!claims) return undefined;
    return {
      accountId: sub,
      // node-oidc-provider picks from these what the scopes allow, and sets `sub` itself.
      async claims() { return { ...claims, sub }; },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name'],
    eduperson: ['eduperson_scoped_affiliation'],
  },
  scopes: ['openid', 'offline_access', ...(config.extra_scopes ?? [])],
  // The specification's default, spelled out: with a code flow the ID token carries only
  // sub/iss/aud/exp/iat/auth_time/nonce/acr/amr/azp/sid/at_hash; email and profile come from UserInfo.
  conformIdTokenClaims: true,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    userinfo: { enabled: true },
    jwtUserinfo: { enabled: true },
    // Off: with resource indicators on, an access token may be a JWT for another audience that
    // UserInfo then refuses; the portal asks for none.
    resourceIndicators: { enabled: false },
    // Off, so that an access token is a plain bearer token (DPoP would otherwise be accepted).
    dPoP: { enabled: false },
  },
  jwks: {
    keys: [
      signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
      signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
    ],
  },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  // node-oidc-provider refuses outgoing requests (jwks_uri, backchannel_logout_uri, sector
  // identifiers) to special-use addresses, as protection against SSRF. The test clients all live on
  // 127.0.0.1, so requests to the loopback host bypass that check; any other host keeps it.
  fetch(url, options) {
    const { hostname } = new URL(url);
    if (hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]') {
      const { dispatcher: _ssrfGuard, ...rest } = options;
      return globalThis.fetch(url, rest);
    }
    return globalThis.fetch(url, options);
  },
  ...(config.ttl ? { ttl: config.ttl } : {}),
  ...(consent === 'once' ? {} : {
    async loadExistingGrant(ctx) {
      const justGiven = ctx.oidc.result?.consent?.grantId;
      if (justGiven) return ctx.oidc.provider.Grant.find(justGiven);
      if (consent === 'always') return undefined;
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
      grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
      await grant.save();
      return grant;
    },
  }),
});

// UserInfo with a `sub` other than the ID token's, for flagged accounts (node-oidc-provider
// always answers with the access token's account id). Only plain-JSON UserInfo responses are
// rewritten; a signed (application/jwt) response keeps the true `sub`.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route !== 'userinfo' || ctx.status !== 200) return;
  const accountId = ctx.oidc.accessToken?.accountId;
  if (Object.hasOwn(userinfoSubOverride, accountId ?? '') && ctx.body && typeof ctx.body === 'object') {
    ctx.body = { ...ctx.body, sub: userinfoSubOverride[accountId] };
  }
});

// devInteractions' login form takes any login. A login that is not in `accounts` ends the
// authorization with error=access_denied at the client (instead of a 500 at the provider).
const interactionFinished = provider.interactionFinished.bind(provider);
provider.interactionFinished = (req, res, result, options) => {
  if (result?.login && !Object.hasOwn(accounts, result.login.accountId)) {
    return interactionFinished(req, res, {
      error: 'access_denied',
      error_description: `no such account: ${result.login.accountId}`,
    }, { ...options, mergeWithLastSubmission: false });
  }
  return interactionFinished(req, res, result, options);
};

// What went wrong inside the provider goes to the log (NodeIdP.log() in Python).
provider.on('server_error', (_ctx, error) => console.error('server_error', error));
provider.on('backchannel.error', (_ctx, error, client) => {
  console.error('backchannel.error', client.clientId, error);
});

server.on('request', provider.callback());

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

console.log(`NODE_IDP_READY ${JSON.stringify({ issuer, port })}`);
