// The test IdMS: oidc-provider 8.x configured like an MCX IdMS (TS 33.180
// Annex B), for mcgw's CSC-1 integration tests. Loopback only.
//
//   node idms.mjs CONFIG.json
//
// CONFIG: {cert, key, jwks (optional file of private JWKs; default: a new
//          ES256 key), access_ttl, device_ttl, clients,
//          authz_host ("127.0.0.2"), token_host ("127.0.0.3"),
//          authz_name, token_name (optional: DNS names of those addresses,
//          used in the issuer and the endpoint URLs instead of the addresses),
//          token_cert, token_key (optional: another certificate for the token
//          host only, e.g. one for the wrong name),
//          client_ca (optional: mutual TLS - both listeners then require a
//          client certificate issued by this CA and refuse the handshake
//          without one), tls_max ("TLSv1.3"; e.g. "TLSv1.2"),
//          clock_offset (seconds, default 0: off): the IdMS's clock runs that
//          far ahead (> 0) or behind (< 0) the machine's - the Date header of
//          every response and the times in what it issues (iat, exp), as if
//          the gateway's clock were off by -clock_offset},
//          grant_scopes (the 3gpp:mc:* scopes it grants, default all three
//          below: fewer for an IdMS that grants less than asked),
//          mc_ids (default true; false: ID tokens carry no MC service ID)}
//
// The authorization endpoint (with discovery, JWKS, interactions, the device
// verification page) answers on https://authz_host:P1 - the issuer - and the
// token and device authorization endpoints on https://token_host:P2 only:
// separately addressed, as TS 33.180 5.1.2.1 requires. Both ports are picked
// by the kernel (port 0) and reported on stdout.
//
// Login and consent use oidc-provider's devInteractions: any login name and
// any password sign in; the account's mcptt_id/mcdata_id derive from it.
//
// stdout, one JSON object per line:
//   {"event":"listening","issuer":...,"authz_port":P1,"token_port":P2}
//   {"event":"secret","kind":"access_token|refresh_token|id_token|code|device_code|user_code|
//     code_verifier|state|nonce|client_assertion|client_secret","value":...}
//     every secret it hands out or receives, so that the tests can grep mcgw's logs for them
//   {"event":"ack","command":...}
// stdin commands, one per line: "sync" (nothing; its ack comes after every
//   line printed before it), "stop" (close both listeners: unreachable),
//   "start" (listen again on the same ports), "rotate" (new signing key with
//   a new kid first; the old one stays published), "clock N" (clock_offset
//   becomes N seconds), "grant S1 S2..." (grant_scopes from now on; "grant"
//   alone grants none), "mcids on|off" (mc_ids from now on), "quit".
// Revocation (RFC 7009, /token/revocation) and RP-initiated logout
// (end_session_endpoint /session/end) are on, both in discovery.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import readline from 'node:readline';

import Provider from 'oidc-provider';

const conf = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const tls = { cert: fs.readFileSync(conf.cert), key: fs.readFileSync(conf.key) };
const tokenTls = conf.token_cert
  ? { cert: fs.readFileSync(conf.token_cert), key: fs.readFileSync(conf.token_key) } : tls;
if (conf.client_ca || conf.tls_max) {
  const extra = conf.tls_max ? { maxVersion: conf.tls_max } : {};
  if (conf.client_ca) {
    Object.assign(extra, { ca: fs.readFileSync(conf.client_ca), requestCert: true,
      rejectUnauthorized: true });
  }
  Object.assign(tls, extra);
  if (tokenTls !== tls) Object.assign(tokenTls, extra);
}
const authzHost = conf.authz_host || '127.0.0.2';
const tokenHost = conf.token_host || '127.0.0.3';
const authzName = conf.authz_name || authzHost;
const tokenName = conf.token_name || tokenHost;

// clock_offset: oidc-provider takes every time from Date.now(); node's own
// Date header does not (it is replaced in the middleware below).
let clockOffsetMs = (conf.clock_offset || 0) * 1000;
const realNow = Date.now;
Date.now = () => realNow() + clockOffsetMs;

function emit(obj) { process.stdout.write(`${JSON.stringify(obj)}\n`); }
function secret(kind, value) { if (typeof value === 'string' && value) emit({ event: 'secret', kind, value }); }

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `es256-${crypto.randomBytes(6).toString('hex')}`, alg: 'ES256', use: 'sig' };
}

let keys = conf.jwks ? JSON.parse(fs.readFileSync(conf.jwks, 'utf8')).keys : [newKey()];

const MC_SCOPES = ['3gpp:mc:ptt_service', '3gpp:mc:data_service', '3gpp:mc:video_service'];
let grantScopes = conf.grant_scopes || MC_SCOPES;
let mcIds = conf.mc_ids !== false;
const RESOURCE = 'urn:mc:services';

function mcClaims(sub) {
  const user = String(sub).toLowerCase().replace(/[^a-z0-9.-]/g, '');
  return {
    mcptt_id: `sip:${user}@mcptt.mc.test`,
    mcdata_id: `sip:${user}@mcdata.mc.test`,
  };
}

// A client may name its public key as a PEM file (key_pem) for
// private_key_jwt; oidc-provider wants it as a JWKS.
function clients() {
  return conf.clients.map(({ key_pem: pem, ...c }) => {
    if (!pem) return c;
    const jwk = crypto.createPublicKey(fs.readFileSync(pem)).export({ format: 'jwk' });
    return { ...c, jwks: { keys: [jwk] } };
  });
}

function configuration() {
  return {
    clients: clients(),
    jwks: { keys },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: grantScopes.join(' '),
          audience: RESOURCE,
          accessTokenTTL: conf.access_ttl || 5,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    // 3gpp:mc:* are resource-server scopes (granted to RESOURCE); the MC
    // service IDs are claims of the openid scope, put into the ID token.
    scopes: ['openid', 'offline_access'],
    claims: { openid: ['sub', 'mcptt_id', 'mcdata_id'] },
    conformIdTokenClaims: false,
    acrValues: ['3gpp:acr:password'],
    findAccount: async (ctx, sub) => ({
      accountId: sub,
      claims: async () => (mcIds ? { sub, ...mcClaims(sub) } : { sub }),
    }),
    extraTokenClaims: async (ctx, token) => (token.accountId ? mcClaims(token.accountId) : undefined),
    pkce: { required: () => true, methods: ['S256'] },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    enabledJWA: { idTokenSigningAlgValues: ['ES256', 'RS256', 'PS256'] },
    ttl: {
      AccessToken: conf.access_ttl || 5,
      IdToken: 300,
      RefreshToken: 3600,
      AuthorizationCode: 60,
      DeviceCode: conf.device_ttl || 120,
      Interaction: 300,
      Session: 3600,
      Grant: 3600,
    },
    cookies: { keys: ['mcgw-test-idms-cookie-key'] },
  };
}

let authzPort = 0;
let tokenPort = 0;
let issuer = '';
let provider;
let handler;

function buildProvider() {
  const p = new Provider(issuer, configuration());
  p.proxy = false;
  const tokenBase = `https://${tokenName}:${tokenPort}`;
  p.use(async (ctx, next) => {
    await next();
    // The Date header from the (offset) clock, when the response is made.
    if (clockOffsetMs && !ctx.headerSent) ctx.set('Date', new Date(Date.now()).toUTCString());
    // What the client sent that only it and the IdMS may know.
    const params = ctx.oidc?.params;
    if (params) {
      for (const k of ['code_verifier', 'state', 'nonce', 'client_assertion', 'client_secret']) {
        secret(k, params[k]);
      }
    }
    // Discovery names the token host for the back-channel endpoints.
    if (ctx.path === '/.well-known/openid-configuration' && ctx.body) {
      ctx.body.token_endpoint = `${tokenBase}/token`;
      ctx.body.device_authorization_endpoint = `${tokenBase}/device/auth`;
    }
    if (ctx.path === '/token' && ctx.body && typeof ctx.body === 'object') {
      for (const k of ['access_token', 'refresh_token', 'id_token']) secret(k, ctx.body[k]);
    }
    if (ctx.path === '/device/auth' && ctx.body && typeof ctx.body === 'object') {
      // The user-facing verification page lives on the authorization host.
      for (const k of ['verification_uri', 'verification_uri_complete']) {
        if (ctx.body[k]) ctx.body[k] = ctx.body[k].replace(tokenBase, issuer);
      }
      secret('device_code', ctx.body.device_code);
      secret('user_code', ctx.body.user_code);
    }
    const loc = ctx.response.get('location');
    if (loc && loc.includes('code=')) {
      try { secret('code', new URL(loc).searchParams.get('code')); } catch { /* not a URL */ }
    }
  });
  return p;
}

// Paths each listener serves: the token host only the back channel.
const TOKEN_PATHS = new Set(['/token', '/device/auth']);
function route(isTokenHost) {
  return (req, res) => {
    const path = req.url.split('?')[0];
    if (isTokenHost !== TOKEN_PATHS.has(path)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(`not served on this address: ${path}\n`);
      return;
    }
    handler(req, res);
  };
}

const authzServer = https.createServer(tls, route(false));
const tokenServer = https.createServer(tokenTls, route(true));
const sockets = new Set();
for (const s of [authzServer, tokenServer]) {
  s.on('connection', (sock) => { sockets.add(sock); sock.on('close', () => sockets.delete(sock)); });
}

function listen(server, host, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(server.address().port); });
  });
}

async function start() {
  authzPort = await listen(authzServer, authzHost, authzPort);
  tokenPort = await listen(tokenServer, tokenHost, tokenPort);
}

function stop() {
  return new Promise((resolve) => {
    let open = 2;
    const done = () => { open -= 1; if (open === 0) resolve(); };
    authzServer.close(done);
    tokenServer.close(done);
    for (const sock of sockets) sock.destroy();
  });
}

await start();
issuer = `https://${authzName}:${authzPort}`;
provider = buildProvider();
handler = provider.callback();
emit({ event: 'listening', issuer, authz_port: authzPort, token_port: tokenPort });

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const command = line.trim();
  try {
    if (command === 'stop') await stop();
    else if (command === 'start') await start();
    else if (/^clock -?\d+$/.test(command)) clockOffsetMs = Number(command.split(' ')[1]) * 1000;
    else if (/^grant( |$)/.test(command)) grantScopes = command.split(' ').slice(1).filter(Boolean);
    else if (command === 'mcids on' || command === 'mcids off') mcIds = command === 'mcids on';
    else if (command === 'sync') { /* nothing: the ack orders what was printed before it */ }
    else if (command === 'rotate') {
      keys = [newKey(), ...keys];
      provider = buildProvider();
      handler = provider.callback();
    } else if (command === 'quit') {
      await stop();
      process.exit(0);
    } else throw new Error(`unknown command ${command}`);
    emit({ event: 'ack', command, kid: keys[0].kid });
  } catch (e) {
    emit({ event: 'error', command, error: String(e) });
  }
});
rl.on('close', () => process.exit(0));
