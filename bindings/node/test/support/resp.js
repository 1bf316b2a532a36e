// A minimal Redis client for the tests (RESP2 over node:net): enough to count
// executions, read keys and ask PUBSUB NUMSUB, so the tests check what Redis
// holds without trusting the library under test. Replies: integers as
// numbers, bulk strings as Buffers (null for nil), arrays as arrays; an error
// reply rejects.
'use strict';
const net = require('node:net');

class RespClient {
  constructor(socket) {
    this._socket = socket;
    this._buffer = Buffer.alloc(0);
    this._pending = []; // FIFO of { resolve, reject }: Redis answers in order
    socket.on('data', (chunk) => {
      this._buffer = Buffer.concat([this._buffer, chunk]);
      this._drain();
    });
    const fail = (error) => {
      for (const { reject } of this._pending.splice(0)) reject(error);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('resp: connection closed')));
  }

  // `to`: a TCP port on `host`, or net.connect's options ({ path } for a
  // unix socket: a TLS-only server's plaintext side).
  static connect(to, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      const socket = net.connect(typeof to === 'object' ? to : { port: to, host });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RespClient(socket));
      });
    });
  }

  command(...args) {
    const parts = [`*${args.length}\r\n`];
    for (const arg of args) {
      const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg));
      parts.push(`$${bytes.length}\r\n`, bytes, '\r\n');
    }
    return new Promise((resolve, reject) => {
      this._pending.push({ resolve, reject });
      for (const part of parts) this._socket.write(part);
    });
  }

  async text(...args) {
    const reply = await this.command(...args);
    return reply === null ? null : reply.toString();
  }

  close() {
    this._socket.end();
  }

  _drain() {
    for (;;) {
      const parsed = parse(this._buffer, 0);
      if (parsed === undefined) return;
      this._buffer = this._buffer.subarray(parsed.end);
      const { resolve, reject } = this._pending.shift();
      if (parsed.value instanceof Error) reject(parsed.value);
      else resolve(parsed.value);
    }
  }
}

// One reply at `at`: { value, end }, or undefined until all of it arrived.
function parse(buffer, at) {
  const eol = buffer.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const line = buffer.toString('utf8', at + 1, eol);
  const next = eol + 2;
  switch (String.fromCharCode(buffer[at])) {
    case '+':
      return { value: Buffer.from(line), end: next };
    case '-':
      return { value: new Error(line), end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, end: next };
      if (buffer.length < next + length + 2) return undefined;
      return { value: buffer.subarray(next, next + length), end: next + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, end: next };
      const items = [];
      let end = next;
      for (let i = 0; i < count; i++) {
        const item = parse(buffer, end);
        if (item === undefined) return undefined;
        items.push(item.value);
        end = item.end;
      }
      return { value: items, end };
    }
    default:
      throw new Error(`resp: unexpected reply byte ${buffer[at]}`);
  }
}

module.exports = { RespClient };
