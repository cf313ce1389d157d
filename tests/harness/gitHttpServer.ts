import { spawn, type ChildProcess } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { git } from './gitRepo.js';

export interface GitHttpServerOptions {
  /** The directory holding the bare repositories; `url('x.git')` serves `<root>/x.git`. */
  root: string;
  /** Basic auth every request must carry; without it the server is open. */
  auth?: { username: string; password: string };
}

/** One request as the server answered it, for a test to see what a client did. */
export interface GitHttpRequest {
  method: string;
  path: string;
  query: string;
  status: number;
  authorized: boolean;
}

/**
 * Git's smart HTTP protocol, served the way a forge does it: a node:http server runs
 * `git http-backend` (which ships with git) as a CGI program per request. The real backend
 * rather than a fake keeps the tests honest about what a Git server accepts: fast-forward
 * checks, ref locking and protocol details are git's own. Listens on 127.0.0.1 only.
 */
export class GitHttpServer {
  /** Every request answered so far, in order. */
  readonly requests: GitHttpRequest[] = [];
  private readonly children = new Set<ChildProcess>();

  private constructor(
    private readonly server: Server,
    private readonly backend: string,
    private readonly options: GitHttpServerOptions,
  ) {}

  static async start(options: GitHttpServerOptions): Promise<GitHttpServer> {
    const execPath = (await git(options.root, '--exec-path')).trim();
    const server = createServer();
    const s = new GitHttpServer(server, join(execPath, 'git-http-backend'), options);
    server.on('request', (req, res) => s.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return s;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** The clone URL of `<root>/<repoName>`. */
  url(repoName: string): string {
    return `http://127.0.0.1:${this.port}/${repoName}`;
  }

  /** The URL with the credentials in it, as the git CLI takes them. */
  urlWithAuth(repoName: string, username: string, password: string): string {
    return `http://${encodeURIComponent(username)}:${encodeURIComponent(password)}@127.0.0.1:${this.port}/${repoName}`;
  }

  /** Stops listening, drops open connections and waits for every backend process to exit. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    const exits = [...this.children].map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve();
      c.once('close', () => resolve());
      killGroup(c);
    }));
    await Promise.all([closed, ...exits]);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const u = new URL(req.url ?? '/', 'http://localhost');
    const record: GitHttpRequest = { method: req.method ?? 'GET', path: u.pathname, query: u.search.slice(1), status: 0, authorized: true };
    this.requests.push(record);
    res.on('finish', () => { record.status = res.statusCode; });
    const { auth } = this.options;
    if (auth !== undefined && !this.authorized(req.headers.authorization, auth)) {
      record.authorized = false;
      req.resume();
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="caravan-test"', 'Content-Type': 'text/plain' });
      res.end('authentication required\n');
      return;
    }
    const env: NodeJS.ProcessEnv = {};
    // The test process's own GIT_* settings (a hook's GIT_DIR) must not leak into the backend.
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GIT_')) env[k] = v;
    Object.assign(env, {
      GIT_PROJECT_ROOT: this.options.root,
      GIT_HTTP_EXPORT_ALL: '1',
      GATEWAY_INTERFACE: 'CGI/1.1',
      PATH_INFO: decodeURIComponent(u.pathname),
      REQUEST_METHOD: record.method,
      QUERY_STRING: record.query,
      REMOTE_USER: auth?.username ?? 'anonymous',
      REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
      // Pushes are served to anyone who got past the auth check, as on a forge; no `gc --auto`
      // after a push, which could go on in the background after close().
      GIT_CONFIG_COUNT: '2',
      GIT_CONFIG_KEY_0: 'http.receivepack',
      GIT_CONFIG_VALUE_0: 'true',
      GIT_CONFIG_KEY_1: 'receive.autogc',
      GIT_CONFIG_VALUE_1: 'false',
    });
    if (req.headers['content-type'] !== undefined) env.CONTENT_TYPE = req.headers['content-type'];
    // Without CONTENT_LENGTH the backend reads the body to EOF, which is what a chunked request needs.
    if (req.headers['content-length'] !== undefined) env.CONTENT_LENGTH = req.headers['content-length'];
    // git sends large request bodies gzipped, and protocol v2 in a header.
    const encoding = req.headers['content-encoding'];
    if (typeof encoding === 'string') env.HTTP_CONTENT_ENCODING = encoding;
    const protocol = req.headers['git-protocol'];
    if (typeof protocol === 'string') env.HTTP_GIT_PROTOCOL = protocol;

    // Its own process group: the backend runs upload-pack or receive-pack, which run
    // pack-objects or index-pack, and stopping it must stop them too.
    const child = spawn(this.backend, [], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.children.add(child);
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => { stderr += d; });
    child.on('close', () => this.children.delete(child));
    child.on('error', (e) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`git http-backend failed: ${e.message}\n`);
    });
    // A client that hung up leaves the backend writing to a closed pipe: stop it.
    res.on('close', () => { if (!res.writableFinished) killGroup(child); });
    child.stdin.on('error', () => undefined);
    req.pipe(child.stdin);

    let head = Buffer.alloc(0);
    let headersDone = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = headerEnd(head);
      if (end === undefined) return;
      headersDone = true;
      const { status, headers } = parseCgiHeaders(head.subarray(0, end.at).toString('latin1'));
      res.writeHead(status, headers);
      const body = head.subarray(end.at + end.length);
      if (body.length > 0) res.write(body);
    });
    child.stdout.on('end', () => {
      if (!headersDone) {
        if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(`git http-backend gave no response: ${stderr}`);
        return;
      }
      res.end();
    });
  }

  private authorized(header: string | undefined, auth: { username: string; password: string }): boolean {
    const m = /^Basic\s+(\S+)$/i.exec(header ?? '');
    if (m === null) return false;
    const given = Buffer.from(m[1]!, 'base64');
    const expected = Buffer.from(`${auth.username}:${auth.password}`);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // ESRCH: the group ended meanwhile, which is what was wanted.
  }
}

/** Where the CGI header block ends: the first blank line (CRLF or LF line ends). */
function headerEnd(buf: Buffer): { at: number; length: number } | undefined {
  const crlf = buf.indexOf('\r\n\r\n');
  const lf = buf.indexOf('\n\n');
  if (crlf === -1 && lf === -1) return undefined;
  if (lf === -1 || (crlf !== -1 && crlf < lf)) return { at: crlf, length: 4 };
  return { at: lf, length: 2 };
}

/** A CGI response's headers: `Status: 404 Not Found` becomes the status, the rest pass through. */
function parseCgiHeaders(text: string): { status: number; headers: Record<string, string> } {
  let status = 200;
  const headers: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim();
    const value = line.slice(i + 1).trim();
    if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]) || 500;
    else headers[name] = value;
  }
  return { status, headers };
}

/**
 * A bare copy of the working repository `from` as `<root>/<name>` (all its branches), ready
 * to serve and to push to. Returns the bare repository's path.
 */
export async function bareRepoFrom(from: string, root: string, name: string): Promise<string> {
  const bare = join(root, name);
  await git(root, 'clone', '-q', '--bare', from, bare);
  return bare;
}
