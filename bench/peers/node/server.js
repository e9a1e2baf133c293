// The Node peer: `ws` and `jsonwebtoken` on one thread, speaking the subset of authchat's
// protocol the load tool uses (docs/benchmarks.md, "The peers"):
//
// - the token at the upgrade, `?token=` or `Authorization: Bearer` (HS256, iss and aud
//   "authchat", exp enforced exactly), else 401;
// - `welcome` on open; `join` answered with `joined`; `send` answered with `ack` and fanned out
//   as `message` to every member of the room, the sender included;
// - close 4001 at the token's exp, from a timer per socket.
//
// No heartbeat, presence, history, limits, metrics or logging. Configured from the environment:
// PEER_HOST, PEER_PORT, PEER_SECRET (at least 32 bytes).
'use strict';

const http = require('node:http');
const { WebSocketServer } = require('ws');
const jwt = require('jsonwebtoken');

const host = process.env.PEER_HOST || '127.0.0.1';
const port = Number(process.env.PEER_PORT);
const secret = process.env.PEER_SECRET || '';
if (!Number.isInteger(port) || port <= 0 || secret.length < 32) {
  console.error('set PEER_PORT and PEER_SECRET (at least 32 bytes)');
  process.exit(2);
}
const verifyOptions = { algorithms: ['HS256'], issuer: 'authchat', audience: 'authchat', clockTolerance: 0 };

/** room name -> { members: Set<WebSocket>, lastId } */
const rooms = new Map();
let nextConn = 0;

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
    return;
  }
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });

/** The token and how it came: `Authorization: Bearer` first, then `?token=`. */
function presented(req) {
  const auth = req.headers.authorization;
  if (auth && auth.startsWith('Bearer ')) return [auth.slice(7), 'header'];
  const url = new URL(req.url, 'http://peer');
  if (url.pathname !== '/ws') return [null, null];
  return [url.searchParams.get('token'), 'query'];
}

function refuse(socket, code) {
  const body = JSON.stringify({ error: code, message: 'a valid token is required' });
  socket.end(
    `HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
}

server.on('upgrade', (req, socket, head) => {
  const [token, carrier] = presented(req);
  if (!token) return refuse(socket, 'missing_credentials');
  let claims;
  try {
    claims = jwt.verify(token, secret, verifyOptions);
  } catch {
    return refuse(socket, 'invalid_token');
  }
  if (typeof claims.sub !== 'string' || typeof claims.exp !== 'number') return refuse(socket, 'invalid_token');
  wss.handleUpgrade(req, socket, head, (ws) => open(ws, claims, carrier));
});

function open(ws, claims, carrier) {
  const conn = ++nextConn;
  const joined = new Set();
  ws.send(
    JSON.stringify({
      type: 'welcome', conn_id: conn, user: claims.sub, auth: carrier, expires_at: claims.exp, node: 'node-peer', boot: 'peer',
    }),
  );
  const expiry = setTimeout(() => ws.close(4001, 'token expired'), Math.max(0, claims.exp * 1000 - Date.now()));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let request;
    try {
      request = JSON.parse(data);
    } catch (e) {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_json', message: String(e) }));
      return;
    }
    if (request.type === 'join' && typeof request.room === 'string') {
      let room = rooms.get(request.room);
      if (!room) rooms.set(request.room, (room = { members: new Set(), lastId: 0 }));
      ws.send(JSON.stringify({ type: 'joined', room: request.room, offset: room.lastId }));
      room.members.add(ws);
      joined.add(request.room);
    } else if (request.type === 'send' && typeof request.room === 'string' && typeof request.text === 'string') {
      const room = rooms.get(request.room);
      if (!room || !room.members.has(ws)) {
        ws.send(JSON.stringify({ type: 'error', code: 'not_member', request: 'send', room: request.room }));
        return;
      }
      const id = ++room.lastId;
      ws.send(JSON.stringify({ type: 'ack', ref: request.ref ?? null, room: request.room, id }));
      // Serialised once, sent to every member.
      const frame = JSON.stringify({
        type: 'message', room: request.room, id, from: claims.sub, text: request.text, ts: Date.now(),
      });
      for (const member of room.members) member.send(frame);
    } else {
      ws.send(JSON.stringify({ type: 'error', code: 'unknown_type' }));
    }
  });
  ws.on('close', () => {
    clearTimeout(expiry);
    for (const name of joined) {
      const room = rooms.get(name);
      if (!room) continue;
      room.members.delete(ws);
      if (room.members.size === 0) rooms.delete(name);
    }
  });
  ws.on('error', () => {});
}

server.listen(port, host);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    for (const ws of wss.clients) ws.terminate();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
